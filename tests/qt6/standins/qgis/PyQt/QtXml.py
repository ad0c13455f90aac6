"""qgis.PyQt.QtXml on QGIS 4: PyQt6.QtXml."""
from PyQt6.QtXml import *  # noqa: F401,F403
