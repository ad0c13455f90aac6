"""qgis.PyQt.QtSvg on QGIS 4: PyQt6.QtSvg."""
from PyQt6.QtSvg import *  # noqa: F401,F403
