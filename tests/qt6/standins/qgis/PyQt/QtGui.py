"""qgis.PyQt.QtGui on QGIS 4: PyQt6.QtGui."""
from PyQt6.QtGui import *  # noqa: F401,F403
