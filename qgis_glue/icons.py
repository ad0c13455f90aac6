"""The plugin's icons: from the compiled resources (``resources_rc``), else the icons/ folder."""
from __future__ import annotations

import os

from qgis.PyQt.QtGui import QIcon

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def icon(name: str = "icon.svg") -> QIcon:
    try:
        from .. import resources_rc  # noqa: F401  registers :/plugins/tailings_mapper
    except ImportError:  # the zip was built without compiled resources: the files are there
        pass
    ic = QIcon(":/plugins/tailings_mapper/icons/%s" % name)
    if not ic.isNull():
        return ic
    return QIcon(os.path.join(PLUGIN_DIR, "icons", name))
