"""Stand-in for qgis.utils: ``iface`` is set by the suite (tests/qt6/conftest.py)."""
iface = None
