"""QGIS layers and extents as the engine takes them: file paths, band names, extents and
polygons (WKT) in the raster's CRS.  Shared by the panel, the toolbar action and Processing."""
from __future__ import annotations

import os
from typing import List, Tuple

from qgis.core import (Qgis, QgsCoordinateTransform, QgsGeometry, QgsMapLayer, QgsProject, QgsProviderRegistry,
                       QgsRasterLayer, QgsRectangle)

from .log import log


def layer_path(layer: QgsMapLayer) -> str:
    """What GDAL opens for a raster layer; raises ValueError for non-GDAL layers."""
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        raise ValueError("choose a valid raster layer")
    if layer.providerType() != "gdal":
        raise ValueError("layer %r comes from the %s provider; Tailings Mapper reads GDAL rasters (files)"
                         % (layer.name(), layer.providerType()))
    src = layer.source()
    parts = QgsProviderRegistry.instance().decodeUri("gdal", src)
    return parts.get("path") or src


def band_descriptions(layer: QgsRasterLayer) -> List[str]:
    """The names of the layer's bands as the engine reads them (descriptions, band metadata, a
    VRT's source files, the file name: ``inference.input.band_names``; "" where nothing names a band)."""
    return band_names_and_sources(layer)[0]


def band_names_and_sources(layer: QgsRasterLayer):
    """``(names, sources)``: each band's name and where it was read ("" when nowhere)."""
    from osgeo import gdal
    from ..inference.input.band_names import band_names
    try:
        path = layer_path(layer)
        ds = gdal.Open(path)
        if ds is None:
            raise RuntimeError("GDAL cannot open it")
    except (RuntimeError, ValueError) as e:
        log("band names of %s cannot be read: %s" % (layer.name(), e), Qgis.MessageLevel.Warning)
        return [""] * layer.bandCount(), [""] * layer.bandCount()
    names, sources = band_names(ds, path)
    ds = None
    return names, sources


def canvas_extent_in(layer: QgsRasterLayer, canvas) -> Tuple[float, float, float, float]:
    rect = canvas.extent()
    src = canvas.mapSettings().destinationCrs()
    if src.isValid() and layer.crs().isValid() and src != layer.crs():
        rect = QgsCoordinateTransform(src, layer.crs(), QgsProject.instance()).transformBoundingBox(rect)
    rect = rect.intersect(layer.extent())
    if rect.isEmpty():
        raise ValueError("the current map view does not overlap layer %r" % layer.name())
    return rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()


def polygons_wkt_in(features, src_crs, dst_crs, transform_context, cancelled=None) -> Tuple[List[str], QgsRectangle]:
    """The geometries of ``features`` reprojected from ``src_crs`` to ``dst_crs``, as WKT (the
    engine's area of interest), and their joint bounding box; null and empty geometries are
    skipped.  Shared by the panel (selected features) and the Processing algorithm."""
    ct = None
    if src_crs.isValid() and dst_crs.isValid() and src_crs != dst_crs:
        ct = QgsCoordinateTransform(src_crs, dst_crs, transform_context)
    wkts = []
    rect = QgsRectangle()
    rect.setMinimal()
    for f in features:
        if cancelled is not None and cancelled():
            break
        g = QgsGeometry(f.geometry())
        if g.isNull() or g.isEmpty():
            continue
        if ct is not None:
            g.transform(ct)
        rect.combineExtentWith(g.boundingBox())
        wkts.append(g.asWkt())
    return wkts, rect


def selection_area_in(layer: QgsRasterLayer, polygons) -> Tuple[Tuple[float, float, float, float], List[str]]:
    """The selected polygons of ``polygons`` in the raster layer's CRS: their bounding box
    (clipped to the layer) and their geometries as WKT (the engine's area of interest:
    pixels outside them get no class)."""
    if polygons is None:
        raise ValueError("choose the polygon layer whose selected features bound the area")
    if polygons.selectedFeatureCount() == 0:
        raise ValueError("no features are selected in layer %r" % polygons.name())
    wkts, rect = polygons_wkt_in(polygons.getSelectedFeatures(), polygons.crs(), layer.crs(),
                                 QgsProject.instance().transformContext())
    if not wkts:
        raise ValueError("the selected features of %r have no geometry" % polygons.name())
    rect = rect.intersect(layer.extent())
    if rect.isEmpty():
        raise ValueError("the selected features of %r do not overlap layer %r" % (polygons.name(), layer.name()))
    return (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()), wkts


MTD_FILES = ("MTD_MSIL1C.xml", "MTD_MSIL2A.xml")


def product_name(path: str) -> str:
    """A product's name, as its run's layers are named (``S2B_MSIL1C_..._20230823T181107``): the
    SAFE folder's or zip's, without ``.zip`` / ``.SAFE`` (an MTD file names its folder)."""
    path = os.path.abspath(path)
    if os.path.basename(path) in MTD_FILES:
        path = os.path.dirname(path)
    name = os.path.basename(path.rstrip(os.sep))
    for ext in (".zip", ".SAFE"):
        if name.upper().endswith(ext.upper()):
            name = name[:-len(ext)]
    return name
