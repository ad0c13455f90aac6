"""The plugin's QGIS glue that is not a widget: the background task, results in the project,
settings, layer and extent adapters, the dependency manager, icons, the enums QGIS 4 names
differently from 3.22 (``compat``).  It stands below the panel (``ui/``), the Processing provider
and ``plugin.py``, which all import from it, and above the engine (``inference/``), which knows
nothing of QGIS."""
