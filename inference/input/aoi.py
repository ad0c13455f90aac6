"""Area of interest: polygons that limit a run to the pixels inside them.

The engine takes the polygons as WKT in the raster's CRS (the plugin sends the selected
features, the command line reads a vector file).  The run covers their bounding box and
pixels outside every polygon get no class, like nodata: tiles that hold none of the
area are not inferred at all.  The mask is burnt strip by strip on the working grid,
so memory stays bounded whatever the raster's size.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
from osgeo import gdal, ogr, osr

from ..errors import InputError
from ..grid import Grid

_POLYGONAL = (ogr.wkbPolygon, ogr.wkbMultiPolygon, ogr.wkbCurvePolygon, ogr.wkbMultiSurface)


def check(wkts: Sequence[str]) -> Tuple[List[str], Tuple[float, float, float, float]]:
    """Validated polygons (WKT, empty ones dropped) and their joint bounding box
    (xmin, ymin, xmax, ymax); InputError names what is wrong."""
    out: List[str] = []
    env = [np.inf, np.inf, -np.inf, -np.inf]
    for i, wkt in enumerate(wkts):
        try:
            g = ogr.CreateGeometryFromWkt(wkt)
        except RuntimeError:
            g = None
        if g is None:
            raise InputError("area of interest: geometry %d is not valid WKT" % (i + 1))
        if ogr.GT_Flatten(g.GetGeometryType()) not in _POLYGONAL:
            raise InputError("area of interest: geometry %d is a %s, not a polygon"
                             % (i + 1, g.GetGeometryName().lower()))
        if g.IsEmpty():
            continue
        x0, x1, y0, y1 = g.GetEnvelope()
        env = [min(env[0], x0), min(env[1], y0), max(env[2], x1), max(env[3], y1)]
        out.append(g.ExportToWkt())
    if not out:
        raise InputError("the area of interest holds no polygon")
    if not (env[2] > env[0] and env[3] > env[1]):
        raise InputError("the area of interest has no area")
    return out, (env[0], env[1], env[2], env[3])


def read_vector(path: str, raster_srs: osr.SpatialReference) -> List[str]:
    """The geometries of every feature of a vector file's first layer, reprojected to the
    raster's CRS, as WKT (``check`` then refuses what is not a polygon)."""
    try:
        ds = gdal.OpenEx(path, gdal.OF_VECTOR)
    except RuntimeError:
        ds = None
    if ds is None or ds.GetLayerCount() == 0:
        raise InputError("cannot open %s as a vector layer for the area of interest" % path)
    lyr = ds.GetLayer(0)
    src = lyr.GetSpatialRef()
    ct = None
    if src is None:
        raise InputError("the area of interest %s has no CRS" % path)
    target = raster_srs.Clone()
    src.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    target.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    if not src.IsSame(target):
        ct = osr.CoordinateTransformation(src, target)
    out = []
    for f in lyr:
        g = f.GetGeometryRef()
        if g is None or g.IsEmpty():
            continue
        g = g.Clone()
        if ct is not None:
            g.Transform(ct)
        out.append(g.ExportToWkt())
    if not out:
        raise InputError("the area of interest %s holds no features" % path)
    return out


class Mask:
    """Burns the polygons into a boolean strip of the working grid."""

    def __init__(self, wkts: Sequence[str], wkt_srs: str):
        # vector "Memory" driver (GDAL 3.11 folds it into "MEM", keeping the old name as an alias)
        drv = ogr.GetDriverByName("Memory") or ogr.GetDriverByName("MEM")
        self._ds = drv.CreateDataSource("aoi")
        srs = osr.SpatialReference()
        if wkt_srs:
            srs.ImportFromWkt(wkt_srs)
        self._lyr = self._ds.CreateLayer("aoi", srs, ogr.wkbMultiPolygon)
        defn = self._lyr.GetLayerDefn()
        for w in wkts:
            f = ogr.Feature(defn)
            f.SetGeometry(ogr.CreateGeometryFromWkt(w))
            self._lyr.CreateFeature(f)
        self._wkt_srs = wkt_srs

    def strip(self, gt: Sequence[float], y: int, width: int, rows: int, x: int = 0) -> np.ndarray:
        """(rows, width) bool: True inside a polygon, for rows y.. (columns x..) of the grid ``gt``."""
        strip = Grid(tuple(gt), x + width, y + rows).sub((x, y, width, rows))
        mem = gdal.GetDriverByName("MEM").Create("", width, rows, 1, gdal.GDT_Byte)
        mem.SetGeoTransform(strip.gt)
        if self._wkt_srs:
            mem.SetProjection(self._wkt_srs)
        self._lyr.SetSpatialFilterRect(*strip.bounds)
        gdal.RasterizeLayer(mem, [1], self._lyr, burn_values=[1])
        self._lyr.SetSpatialFilter(None)
        return mem.GetRasterBand(1).ReadAsArray().astype(bool)
