"""QGIS enums whose QGIS 4 name does not exist on QGIS 3.22, resolved once, here, at import.

QGIS 3.34 and 3.36 moved these into ``Qgis.*`` enums; QGIS 4 (PyQt6) knows only those names, QGIS 3.22
only the old nested ones (their scoped form, which PyQt5 accepts too).  Each constant below is the first
of its spellings that the running QGIS has: the QGIS 4 one first, the 3.22 one second.  Every other
module uses these constants instead of either spelling (scripts/check_qt6.py fails on the old ones).
"""
from __future__ import annotations

from qgis import core as _core

_MISSING = object()


def _first(*spellings: str):
    """The value of the first dotted name (``Qgis.LayerFilter.RasterLayer``...) that qgis.core has."""
    for spelling in spellings:
        obj = _core
        for part in spelling.split("."):
            obj = getattr(obj, part, _MISSING)
            if obj is _MISSING:
                break
        if obj is not _MISSING:
            return obj
    raise ImportError("this QGIS has none of %s" % ", ".join(spellings))


# Processing source types (QGIS 3.36: Qgis.ProcessingSourceType)
SOURCE_MAP_LAYER = _first("Qgis.ProcessingSourceType.MapLayer", "QgsProcessing.SourceType.TypeMapLayer")
SOURCE_RASTER = _first("Qgis.ProcessingSourceType.Raster", "QgsProcessing.SourceType.TypeRaster")
SOURCE_VECTOR_ANY = _first("Qgis.ProcessingSourceType.VectorAnyGeometry",
                           "QgsProcessing.SourceType.TypeVectorAnyGeometry")
SOURCE_VECTOR_POLYGON = _first("Qgis.ProcessingSourceType.VectorPolygon", "QgsProcessing.SourceType.TypeVectorPolygon")

# Processing parameters (QGIS 3.36)
NUMBER_INTEGER = _first("Qgis.ProcessingNumberParameterType.Integer", "QgsProcessingParameterNumber.Type.Integer")
NUMBER_DOUBLE = _first("Qgis.ProcessingNumberParameterType.Double", "QgsProcessingParameterNumber.Type.Double")
FILE_FOLDER = _first("Qgis.ProcessingFileParameterBehavior.Folder", "QgsProcessingParameterFile.Behavior.Folder")
PARAMETER_ADVANCED = _first("Qgis.ProcessingParameterFlag.Advanced",
                            "QgsProcessingParameterDefinition.Flag.FlagAdvanced")

# Layer combo box filters (QGIS 3.34: Qgis.LayerFilter)
LAYER_RASTER = _first("Qgis.LayerFilter.RasterLayer", "QgsMapLayerProxyModel.Filter.RasterLayer")
LAYER_POLYGON = _first("Qgis.LayerFilter.PolygonLayer", "QgsMapLayerProxyModel.Filter.PolygonLayer")

# Geometry types (QGIS 3.30: Qgis.GeometryType)
GEOMETRY_POLYGON = _first("Qgis.GeometryType.Polygon", "QgsWkbTypes.GeometryType.PolygonGeometry")
