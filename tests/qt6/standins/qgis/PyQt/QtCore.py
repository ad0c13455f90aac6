"""qgis.PyQt.QtCore on QGIS 4: PyQt6.QtCore."""
from PyQt6.QtCore import *  # noqa: F401,F403
