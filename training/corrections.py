"""Corrections count only where the user corrected: the labels of a fit from an edited result
layer (``fit(..., corrections_of=RUN)``, ``python -m training fit --corrections-of RUN``).

The run's own map (its classes raster, ``<stem>_classes.tif`` beside its GeoPackage) is compared
with the polygons as they are now, pixel by pixel on the model's grid:

- a pixel the run flagged and no polygon holds any more (deleted, reshaped out): background;
- a pixel a polygon holds now and the run did not flag as that class (added, reshaped in): that class;
- everything else -- the detections the user left as they were, the ground the run left empty --
  is ignored (``labels.IGNORE``): neither confirmed nor rejected;
- inside an area the user drew (``--aoi``), everything is labelled as without a run: the polygons
  are the classes, the rest background.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
from osgeo import gdal, ogr

from .engine import sibling_raster
from .engine import InputError
from .engine import Grid

from . import labels as L

NODATA = 255    # the classes raster's "not covered"

gdal.UseExceptions()


def run_map(path: str) -> str:
    """The classes raster of a run, from the run's GeoPackage (its polygon layer's sibling) or the
    raster itself."""
    if not os.path.exists(path):
        raise InputError("--corrections-of: %s is not there" % path)
    if path.lower().endswith(".gpkg"):
        try:
            ds = ogr.Open(path)
        except RuntimeError as e:
            raise InputError("--corrections-of: cannot open %s: %s" % (path, e)) from None
        names = [ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount())] if ds is not None else []
        ds = None
        for n in names:
            r = sibling_raster(path, n)
            if r:
                return r
        raise InputError("--corrections-of: no classes raster of the run beside %s (<layer>_classes.tif): the "
                         "run's own map is what your corrections are compared with" % path)
    try:
        ds = gdal.Open(path)
    except RuntimeError as e:
        raise InputError("--corrections-of: cannot open %s: %s" % (path, e)) from None
    if ds is None or ds.RasterCount < 1:
        raise InputError("--corrections-of: %s is neither a run's GeoPackage nor its classes raster" % path)
    return path


def footprint(path: str, wkt: str) -> ogr.Geometry:
    """The run map's extent as a polygon in ``wkt``."""
    ds = gdal.Open(path)
    grid, srs = Grid.of_dataset(ds), ds.GetSpatialRef()
    ds = None
    g = ogr.CreateGeometryFromWkt(grid.box_wkt())
    if srs is None:
        raise InputError("--corrections-of: %s has no coordinate reference system" % path)
    poly = L.Polygons([(g, -1)], srs)
    return poly.to(wkt).items[0][0]


def on_grid(path: str, gt, wkt: str, width: int, height: int) -> gdal.Dataset:
    """The run's map (class ids, ``NODATA`` outside it) on the model's grid (nearest)."""
    return gdal.Warp("", path, format="MEM", outputBounds=Grid(tuple(gt), width, height).bounds, width=width,
                     height=height, dstSRS=wkt, resampleAlg="near", srcNodata=NODATA, dstNodata=NODATA,
                     outputType=gdal.GDT_Byte)


def relabel(label_path: str, polygons_path: str, area_path: Optional[str], original: gdal.Dataset) -> int:
    """Rewrite ``label_path`` (the labels as without a run) from the polygons alone
    (``polygons_path``, IGNORE where none), the area's mask (``area_path``: 0 inside, or None) and
    the run's map on the same grid: see the module's text.  Returns the pixels outside the area
    that are corrections."""
    out = gdal.Open(label_path, gdal.GA_Update)
    now_ds = gdal.Open(polygons_path)
    area_ds = gdal.Open(area_path) if area_path else None
    W, H = out.RasterXSize, out.RasterYSize
    corrected = 0
    for y in range(0, H, 512):
        n = min(512, H - y)
        now = now_ds.ReadAsArray(0, y, W, n)
        now = np.where(now == L.IGNORE, 0, now)
        orig = original.ReadAsArray(0, y, W, n)
        lab = np.full((n, W), L.IGNORE, np.uint8)
        changed = (orig != NODATA) & (now != orig)
        added_outside = (orig == NODATA) & (now > 0)
        lab[changed | added_outside] = now[changed | added_outside]
        corrected += int((changed | added_outside).sum())
        if area_ds is not None:
            inside = area_ds.ReadAsArray(0, y, W, n) != L.IGNORE
            lab[inside] = now[inside]
        out.GetRasterBand(1).WriteArray(lab, 0, y)
    out.FlushCache()
    out = now_ds = area_ds = None
    return corrected
