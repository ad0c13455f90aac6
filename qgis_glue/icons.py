"""The plugin's icons, loaded by file path from icons/ (Qt 6 has no compiled resources, so neither do we)."""
from __future__ import annotations

import os

from qgis.PyQt.QtGui import QIcon

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def icon(name: str = "icon.svg") -> QIcon:
    return QIcon(os.path.join(PLUGIN_DIR, "icons", name))
