"""The ``Qgis`` namespace of QGIS 4 as far as the plugin may use it: scoped enums only (``Qgis.Warning``,
``QgsProcessing.TypeVectorPolygon`` and the other QGIS 3 spellings do not exist here).  Names and values
follow src/core/qgis.h; an enum the plugin does not touch is left out."""
from enum import IntEnum, IntFlag


class Qgis:
    class MessageLevel(IntEnum):
        Info = 0
        Warning = 1
        Critical = 2
        Success = 3
        NoLevel = 4

    class LayerType(IntEnum):
        Vector = 0
        Raster = 1
        Plugin = 2
        Mesh = 3
        VectorTile = 4
        Annotation = 5
        PointCloud = 6
        Group = 7
        TiledScene = 8

    class LayerFilter(IntFlag):
        RasterLayer = 1
        NoGeometry = 2
        PointLayer = 4
        LineLayer = 8
        PolygonLayer = 16
        HasGeometry = 4 | 8 | 16
        VectorLayer = 2 | 4 | 8 | 16
        PluginLayer = 32
        WritableLayer = 64
        MeshLayer = 128
        VectorTileLayer = 256
        PointCloudLayer = 512
        AnnotationLayer = 1024
        TiledSceneLayer = 2048
        All = 1 | 2 | 4 | 8 | 16 | 32 | 128 | 256 | 512 | 1024 | 2048
        SpatialLayer = 4096

    class GeometryType(IntEnum):
        Point = 0
        Line = 1
        Polygon = 2
        Unknown = 3
        Null = 4

    class ProcessingSourceType(IntEnum):
        MapLayer = -2
        VectorAnyGeometry = -1
        VectorPoint = 0
        VectorLine = 1
        VectorPolygon = 2
        Raster = 3
        File = 4
        Vector = 5
        Mesh = 6
        Plugin = 7
        PointCloud = 8
        Annotation = 9
        VectorTile = 10
        TiledScene = 11

    class ProcessingNumberParameterType(IntEnum):
        Integer = 0
        Double = 1

    class ProcessingFileParameterBehavior(IntEnum):
        File = 0
        Folder = 1

    class ProcessingFieldParameterDataType(IntEnum):
        Any = -1
        Numeric = 0
        String = 1
        DateTime = 2
        Binary = 3
        Boolean = 4

    class ProcessingParameterFlag(IntFlag):
        Advanced = 1 << 1
        Hidden = 1 << 2
        Optional = 1 << 3
        IsModelOutput = 1 << 4

    ProcessingParameterFlags = ProcessingParameterFlag

    class ProcessingAlgorithmFlag(IntFlag):
        HideFromToolbox = 1 << 1
        HideFromModeler = 1 << 2
        SupportsBatch = 1 << 3
        CanCancel = 1 << 4
        RequiresMatchingCrs = 1 << 5
        NoThreading = 1 << 6
        DisplayNameIsLiteral = 1 << 7

    ProcessingAlgorithmFlags = ProcessingAlgorithmFlag


# QGIS 4 keeps these aliases of the moved enums on their old classes (python/PyQt6/core/auto_additions):
# ``QgsWkbTypes.GeometryType.PolygonGeometry`` is ``Qgis.GeometryType.Polygon``.
for _old, _new in (("PointGeometry", "Point"), ("LineGeometry", "Line"), ("PolygonGeometry", "Polygon"),
                   ("UnknownGeometry", "Unknown"), ("NullGeometry", "Null")):
    setattr(Qgis.GeometryType, _old, Qgis.GeometryType[_new])


def need(value, kind, what: str):
    """PyQt6 refuses an int or another enum where an enum is declared: so do the stand-ins."""
    if not isinstance(value, kind):
        raise TypeError("%s: %s expected, got %r" % (what, kind.__qualname__, value))
    return value
