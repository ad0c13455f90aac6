"""Stand-in for QGIS 4's ``qgis`` package (the PyQt6 suite, tests/qt6): ``qgis.PyQt`` is PyQt6 as QGIS 4
exposes it, ``qgis.core``/``qgis.gui``/``qgis.utils`` are written for the suite.  Nothing here is the
plugin's code; every QGIS enum exists only in its QGIS 4 (scoped) form."""
