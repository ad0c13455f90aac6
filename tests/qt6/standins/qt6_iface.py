"""A stand-in QGIS 4 ``iface`` (QgisInterface, of qgis.gui) for the suite: a real QMainWindow, a message bar, the
raster menu, a map canvas that reports an extent; what the plugin adds is kept for the tests to check."""
from PyQt6.QtCore import QObject, Qt, pyqtSignal
from PyQt6.QtWidgets import QMainWindow

from qgis.core import QgsCoordinateReferenceSystem, QgsMapLayer, QgsRectangle
from qgis.gui import QgsMessageBar


class _MapSettings:
    def destinationCrs(self):  # noqa: N802
        return QgsCoordinateReferenceSystem("EPSG:32650")


class _Canvas(QObject):
    def extent(self):
        return QgsRectangle(0, 0, 1000, 1000)

    def mapSettings(self):  # noqa: N802
        return _MapSettings()

    def setExtent(self, rect):  # noqa: N802
        self._extent = rect

    def refresh(self):
        pass


class QgisInterface(QObject):
    currentLayerChanged = pyqtSignal(QgsMapLayer)

    def __init__(self):
        super().__init__()
        self._window = QMainWindow()
        self._bar = QgsMessageBar(self._window)
        self._canvas = _Canvas()
        self.raster_menu = []      # (menu, action)
        self.docks = []
        self.active = None

    def mainWindow(self):  # noqa: N802
        return self._window

    def messageBar(self):  # noqa: N802
        return self._bar

    def mapCanvas(self):  # noqa: N802
        return self._canvas

    def activeLayer(self):  # noqa: N802
        return self.active

    def addToolBar(self, name):  # noqa: N802
        return self._window.addToolBar(name)

    def addPluginToRasterMenu(self, name, action):  # noqa: N802
        self.raster_menu.append((name, action))

    def removePluginRasterMenu(self, name, action):  # noqa: N802
        self.raster_menu.remove((name, action))

    def addDockWidget(self, area, dock):  # noqa: N802
        if not isinstance(area, Qt.DockWidgetArea):
            raise TypeError("addDockWidget(): a Qt.DockWidgetArea expected, got %r" % (area,))
        self._window.addDockWidget(area, dock)
        self.docks.append(dock)

    def removeDockWidget(self, dock):  # noqa: N802
        self._window.removeDockWidget(dock)
        self.docks.remove(dock)
