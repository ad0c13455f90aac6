"""Stand-in map layers, project and layer tree: enough for the plugin's panel and dialogs to list and
read layers.  A raster layer is a real file (GDAL reads its bands); a vector layer only says what it is."""
import itertools
import os

from PyQt6.QtCore import QObject, pyqtSignal

from ._qgis import Qgis, need

_ids = itertools.count(1)


class QgsCoordinateReferenceSystem:
    def __init__(self, definition: str = ""):
        self._def = definition

    def isValid(self):  # noqa: N802
        return bool(self._def)

    def authid(self):
        return self._def

    def __eq__(self, other):
        return isinstance(other, QgsCoordinateReferenceSystem) and other._def == self._def


class QgsRectangle:
    def __init__(self, xmin=0.0, ymin=0.0, xmax=0.0, ymax=0.0):
        self._r = [xmin, ymin, xmax, ymax]

    def xMinimum(self):  # noqa: N802
        return self._r[0]

    def yMinimum(self):  # noqa: N802
        return self._r[1]

    def xMaximum(self):  # noqa: N802
        return self._r[2]

    def yMaximum(self):  # noqa: N802
        return self._r[3]

    def isEmpty(self):  # noqa: N802
        return self._r[2] <= self._r[0] or self._r[3] <= self._r[1]

    def isNull(self):  # noqa: N802
        return self._r == [0.0, 0.0, 0.0, 0.0]


class QgsMapLayer(QObject):
    nameChanged = pyqtSignal()
    willBeDeleted = pyqtSignal()

    def __init__(self, kind, source="", name="", provider=""):
        super().__init__()
        self._type = need(kind, Qgis.LayerType, "QgsMapLayer type")
        self._source, self._name, self._provider = source, name, provider
        self._id = "%s_%d" % (name or "layer", next(_ids))
        self._props = {}
        self._crs = QgsCoordinateReferenceSystem("EPSG:32650")

    def type(self):
        return self._type

    def id(self):
        return self._id

    def name(self):
        return self._name

    def setName(self, name):  # noqa: N802
        self._name = name

    def source(self):
        return self._source

    def providerType(self):  # noqa: N802
        return self._provider

    def isValid(self):  # noqa: N802
        return True

    def crs(self):
        return self._crs

    def extent(self):
        return QgsRectangle(0, 0, 1000, 1000)

    def customProperty(self, key, defaultValue=None):  # noqa: N802,N803
        return self._props.get(key, defaultValue)

    def setCustomProperty(self, key, value):  # noqa: N802
        self._props[key] = value


class QgsRasterLayer(QgsMapLayer):
    def __init__(self, uri="", baseName="", providerType="gdal", options=None):  # noqa: N803
        super().__init__(Qgis.LayerType.Raster, uri, baseName, providerType)

    def isValid(self):  # noqa: N802
        return os.path.isfile(self._source)

    def bandCount(self):  # noqa: N802
        from osgeo import gdal
        ds = gdal.Open(self._source)
        return ds.RasterCount if ds is not None else 0


class QgsVectorLayer(QgsMapLayer):
    def __init__(self, path="", baseName="", providerLib="ogr", options=None, geometry=Qgis.GeometryType.Polygon):  # noqa: N803
        super().__init__(Qgis.LayerType.Vector, path, baseName, providerLib)
        self._geometry = need(geometry, Qgis.GeometryType, "QgsVectorLayer geometry")

    def geometryType(self):  # noqa: N802
        return self._geometry

    def isModified(self):  # noqa: N802
        return False

    def selectedFeatureCount(self):  # noqa: N802
        return 0

    def fields(self):
        return []


class QgsLayerTreeNode(QObject):
    def __init__(self, name=""):
        super().__init__()
        self._name, self._children, self._parent, self._expanded = name, [], None, True

    def children(self):
        return list(self._children)

    def parent(self):
        return self._parent

    def setExpanded(self, expanded):  # noqa: N802
        self._expanded = bool(expanded)

    def isExpanded(self):  # noqa: N802
        return self._expanded

    def insertChildNode(self, index, node):  # noqa: N802
        node._parent = self
        self._children.insert(index, node)

    def removeChildNode(self, node):  # noqa: N802
        self._children.remove(node)


class QgsLayerTreeLayer(QgsLayerTreeNode):
    def __init__(self, layer):
        super().__init__(layer.name())
        self._layer, self._visible = layer, True

    def layer(self):
        return self._layer

    def setItemVisibilityChecked(self, checked):  # noqa: N802
        self._visible = bool(checked)


class QgsLayerTreeGroup(QgsLayerTreeNode):
    def addLayer(self, layer):  # noqa: N802
        return self.insertLayer(len(self._children), layer)

    def insertLayer(self, index, layer):  # noqa: N802
        node = QgsLayerTreeLayer(layer)
        self.insertChildNode(index, node)
        return node

    def insertGroup(self, index, name):  # noqa: N802
        grp = QgsLayerTreeGroup(name)
        self.insertChildNode(index, grp)
        return grp

    def findGroup(self, name):  # noqa: N802
        return next((c for c in self._children if isinstance(c, QgsLayerTreeGroup) and c._name == name), None)

    def findLayer(self, layer_id):  # noqa: N802
        for c in self._children:
            if isinstance(c, QgsLayerTreeLayer) and c.layer().id() == layer_id:
                return c
            if isinstance(c, QgsLayerTreeGroup) and c.findLayer(layer_id) is not None:
                return c.findLayer(layer_id)
        return None


class QgsProject(QObject):
    layersAdded = pyqtSignal(list)
    fileNameChanged = pyqtSignal(str)
    _instance = None

    def __init__(self):
        super().__init__()
        self._layers = {}
        self._root = QgsLayerTreeGroup()
        self._entries = {}

    def readEntry(self, scope, key, default=""):  # noqa: N802
        """QGIS 4 returns ``(value, ok)``, as QGIS 3's Python bindings do."""
        v = self._entries.get((scope, key))
        return (default, False) if v is None else (v, True)

    def writeEntry(self, scope, key, value):  # noqa: N802
        self._entries[(scope, key)] = value
        return True

    @staticmethod
    def instance():
        if QgsProject._instance is None:
            QgsProject._instance = QgsProject()
        return QgsProject._instance

    def addMapLayer(self, layer, addToLegend=True):  # noqa: N802,N803
        if not isinstance(layer, QgsMapLayer):
            raise TypeError("addMapLayer(): a QgsMapLayer expected")
        self._layers[layer.id()] = layer
        if addToLegend:
            self._root.addLayer(layer)
        return layer

    def mapLayers(self):  # noqa: N802
        return dict(self._layers)

    def mapLayer(self, layer_id):  # noqa: N802
        return self._layers.get(layer_id)

    def fileName(self):  # noqa: N802
        return ""

    def homePath(self):  # noqa: N802
        return ""

    def layerTreeRoot(self):  # noqa: N802
        return self._root

    def transformContext(self):  # noqa: N802
        return object()
