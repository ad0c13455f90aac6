"""Stand-in for QGIS 4's ``qgis.gui``: the widgets the plugin builds, as Qt widgets with QGIS's signals
and setters, and QGIS 4's scoped enums only (``QgsFileWidget.StorageMode.GetDirectory``)."""
from enum import IntEnum

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import QComboBox, QGroupBox, QHBoxLayout, QLineEdit, QWidget

from .core import Qgis, QgsMapLayer, QgsProject, QgsRasterLayer, QgsVectorLayer
from ._qgis import need


class QgsCollapsibleGroupBox(QGroupBox):
    collapsedStateChanged = pyqtSignal(bool)

    def __init__(self, title="", parent=None):
        super().__init__(title, parent)
        self._collapsed = False

    def setCollapsed(self, collapsed):  # noqa: N802
        self._collapsed = bool(collapsed)
        self.collapsedStateChanged.emit(self._collapsed)

    def isCollapsed(self):  # noqa: N802
        return self._collapsed


class QgsFileWidget(QWidget):
    class StorageMode(IntEnum):
        GetFile = 0
        GetDirectory = 1
        GetMultipleFiles = 2
        SaveFile = 3

    class RelativeStorage(IntEnum):
        Absolute = 0
        RelativeProject = 1
        RelativeDefaultPath = 2

    fileChanged = pyqtSignal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._edit = QLineEdit(self)
        QHBoxLayout(self).addWidget(self._edit)
        self._edit.textChanged.connect(self.fileChanged)
        self._mode = QgsFileWidget.StorageMode.GetFile

    def setStorageMode(self, mode):  # noqa: N802
        self._mode = need(mode, QgsFileWidget.StorageMode, "QgsFileWidget.setStorageMode")

    def storageMode(self):  # noqa: N802
        return self._mode

    def setDialogTitle(self, title):  # noqa: N802
        self._title = str(title)

    def setFilter(self, text):  # noqa: N802
        self._filter = str(text)

    def setFilePath(self, path):  # noqa: N802
        self._edit.setText(path or "")

    def filePath(self):  # noqa: N802
        return self._edit.text()


class QgsMapLayerComboBox(QComboBox):
    layerChanged = pyqtSignal(QgsMapLayer)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._filters = Qgis.LayerFilter.All
        self._allow_empty = False
        self._fill()
        self.currentIndexChanged.connect(lambda *_: self.layerChanged.emit(self.currentLayer()))

    def _accepts(self, layer):
        f = self._filters
        if isinstance(layer, QgsRasterLayer):
            return bool(f & Qgis.LayerFilter.RasterLayer)
        if isinstance(layer, QgsVectorLayer):
            return bool(f & {Qgis.GeometryType.Point: Qgis.LayerFilter.PointLayer,
                             Qgis.GeometryType.Line: Qgis.LayerFilter.LineLayer,
                             Qgis.GeometryType.Polygon: Qgis.LayerFilter.PolygonLayer}.get(layer.geometryType(), 0))
        return False

    def _fill(self):
        self.blockSignals(True)
        self.clear()
        if self._allow_empty:
            self.addItem("", None)
        for lyr in QgsProject.instance().mapLayers().values():
            if self._accepts(lyr):
                self.addItem(lyr.name(), lyr.id())
        self.blockSignals(False)

    def setFilters(self, filters):  # noqa: N802
        self._filters = need(filters, Qgis.LayerFilter, "QgsMapLayerComboBox.setFilters")
        self._fill()

    def setAllowEmptyLayer(self, allowEmpty, text="", icon=None):  # noqa: N802,N803
        self._allow_empty = bool(allowEmpty)
        self._fill()

    def setLayer(self, layer):  # noqa: N802
        if layer is not None and not isinstance(layer, QgsMapLayer):
            raise TypeError("setLayer(): a QgsMapLayer or None expected")
        idx = self.findData(layer.id()) if layer is not None else self.findData(None)
        self.setCurrentIndex(idx)

    def currentLayer(self):  # noqa: N802
        data = self.currentData()
        return QgsProject.instance().mapLayer(data) if data else None


class QgsFieldComboBox(QComboBox):
    fieldChanged = pyqtSignal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._layer = None
        self.currentTextChanged.connect(self.fieldChanged)

    def setFilters(self, filters):  # noqa: N802
        from .core import QgsFieldProxyModel
        self._filters = need(filters, QgsFieldProxyModel.Filter, "QgsFieldComboBox.setFilters")

    def setAllowEmptyFieldName(self, allowEmpty):  # noqa: N802,N803
        self._allow_empty = bool(allowEmpty)

    def setLayer(self, layer):  # noqa: N802
        if layer is not None and not isinstance(layer, QgsMapLayer):
            raise TypeError("setLayer(): a QgsMapLayer or None expected")
        self._layer = layer

    def layer(self):
        return self._layer

    def currentField(self):  # noqa: N802
        return self.currentText()


class QgsRasterBandComboBox(QComboBox):
    bandChanged = pyqtSignal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._show_not_set = False
        self.currentIndexChanged.connect(lambda *_: self.bandChanged.emit(self.currentBand()))

    def setShowNotSetOption(self, show, string=""):  # noqa: N802
        self._show_not_set = bool(show)

    def setLayer(self, layer):  # noqa: N802
        if layer is not None and not isinstance(layer, QgsRasterLayer):
            raise TypeError("setLayer(): a raster layer or None expected")
        self.blockSignals(True)
        self.clear()
        if self._show_not_set:
            self.addItem("Not set", -1)
        for b in range(1, (layer.bandCount() if layer is not None else 0) + 1):
            self.addItem("Band %d" % b, b)
        self.blockSignals(False)

    def setBand(self, band):  # noqa: N802
        if not isinstance(band, int):
            raise TypeError("setBand(): an int expected")
        self.setCurrentIndex(max(0, self.findData(band)))

    def currentBand(self):  # noqa: N802
        data = self.currentData()
        return -1 if data is None else int(data)


class QgsMessageBar(QWidget):
    """Records what is pushed; a level must be a ``Qgis.MessageLevel`` (as on QGIS 4)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.pushed = []
        self._items = []

    def createMessage(self, title, text="", parent=None):  # noqa: N802
        w = QWidget(parent or self)
        QHBoxLayout(w)
        return w

    def pushWidget(self, widget, level=Qgis.MessageLevel.Info, duration=0):  # noqa: N802
        need(level, Qgis.MessageLevel, "QgsMessageBar.pushWidget level")
        self._items.append(widget)
        self.pushed.append(("widget", level))
        return widget

    def pushMessage(self, title, text=None, level=Qgis.MessageLevel.Info, duration=-1):  # noqa: N802
        need(level, Qgis.MessageLevel, "QgsMessageBar.pushMessage level")
        if not isinstance(duration, int):
            raise TypeError("pushMessage(): duration must be an int")
        self.pushed.append((str(title), str(text), level))

    def popWidget(self, item=None):  # noqa: N802
        if item in self._items:
            self._items.remove(item)
            return True
        return False

    def items(self):
        return list(self._items)
