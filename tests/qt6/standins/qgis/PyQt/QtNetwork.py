"""qgis.PyQt.QtNetwork on QGIS 4: PyQt6.QtNetwork."""
from PyQt6.QtNetwork import *  # noqa: F401,F403
