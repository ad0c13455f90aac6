"""qgis.PyQt.QtWidgets on QGIS 4: PyQt6.QtWidgets, plus the classes Qt 6 moved to QtGui that QGIS keeps
importable from QtWidgets (so that ``from qgis.PyQt.QtWidgets import QAction`` works on 3.x and 4.x)."""
from PyQt6.QtWidgets import *  # noqa: F401,F403
from PyQt6.QtGui import QAction, QActionGroup, QShortcut  # noqa: F401
