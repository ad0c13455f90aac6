"""One grid for all the years: the first raster's CRS, pixel size and alignment, over the ground
every input covers; every input brought onto it (class rasters nearest, polygons burnt).  (The true areas of its
pixels and polygons: :mod:`inference.areas`.)
"""
from __future__ import annotations

from dataclasses import replace
from typing import List, Optional, Sequence, Tuple

from osgeo import gdal, ogr, osr

from ..errors import InputError
from ..grid import Grid
from ..input.tables import gdal_reason, open_layer
from .inputs import ResultInput, _srs, polygon_items

NODATA = 255


def _transform(wkt_geom: str, src_wkt: str, dst_wkt: str, what: str = "a polygon") -> ogr.Geometry:
    g = ogr.CreateGeometryFromWkt(wkt_geom)
    src, dst = _srs(src_wkt), _srs(dst_wkt)
    if not src.IsSame(dst):
        try:
            g.Transform(osr.CoordinateTransformation(src, dst))
        except RuntimeError as e:
            raise InputError("%s cannot be brought into the grid's CRS (%s): %s" % (
                what, src.GetName() or "?", gdal_reason(e))) from None
    return g


def common_grid(inputs: Sequence[ResultInput]) -> Tuple[Grid, ogr.Geometry]:
    """The grid and the ground all inputs cover (in the grid's CRS)."""
    ref = next(((i.path if i.kind == "raster" else i.raster) for i in inputs
                if i.kind == "raster" or i.raster), None)
    if ref is None:
        raise InputError("none of the results is a class raster, nor has one beside it: the change map needs one "
                         "for its grid")
    ds = gdal.Open(ref)
    whole = replace(Grid.of_dataset(ds), source=ref)
    ds = None
    wkt = whole.wkt
    if not whole.north_up:
        raise InputError("%s is rotated: give north-up rasters" % ref)
    common = None
    for inp in inputs:
        g = _transform(inp.footprint, inp.footprint_wkt, wkt, "the ground %s covers" % inp.label)
        common = g if common is None else common.Intersection(g)
    if common is None or common.IsEmpty() or common.GetArea() <= 0:
        raise InputError("the results do not overlap: they are of different areas (%s)"
                         % ", ".join(i.label for i in inputs))
    xmin, xmax, ymin, ymax = common.GetEnvelope()
    window = whole.window_of(xmin, ymin, xmax, ymax)
    if window.width <= 0 or window.height <= 0:
        raise InputError("the results overlap by less than a pixel")
    return whole.sub(window), common


def warp_onto(src: str, grid: Grid, path: str) -> str:
    """A class raster's band 1 on the grid (a VRT: nearest, no data 255)."""
    first = path + ".band1.vrt"
    gdal.Translate(first, src, format="VRT", bandList=[1])
    gdal.Warp(path, first, format="VRT", dstSRS=grid.wkt, outputBounds=list(grid.bounds), width=grid.width,
              height=grid.height, resampleAlg="near", srcNodata=NODATA, dstNodata=NODATA)
    return path


def _mem_layer(srs_wkt: str, items, field: str = "v"):
    drv = ogr.GetDriverByName("Memory") or ogr.GetDriverByName("MEM")
    ds = drv.CreateDataSource("m")
    lyr = ds.CreateLayer("l", _srs(srs_wkt), ogr.wkbMultiPolygon)
    lyr.CreateField(ogr.FieldDefn(field, ogr.OFTInteger))
    for g, v in items:
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(g)
        f.SetField(field, int(v))
        lyr.CreateFeature(f)
    return ds, lyr


def _new(path: str, grid: Grid, dtype=gdal.GDT_Byte, fill: int = NODATA):
    ds = gdal.GetDriverByName("GTiff").Create(path, grid.width, grid.height, 1, dtype,
                                              options=["TILED=YES", "COMPRESS=DEFLATE"])
    ds.SetGeoTransform(grid.gt)
    ds.SetProjection(grid.wkt)
    ds.GetRasterBand(1).Fill(fill)
    return ds


def burn_polygons(inp: ResultInput, grid: Grid, path: str) -> str:
    """A polygon input on the grid: inside its ground, each polygon's class, else background (0);
    outside it, no data."""
    ds = _new(path, grid)
    area = _transform(inp.footprint, inp.footprint_wkt, grid.wkt, "the ground %s covers" % inp.label)
    m, lyr = _mem_layer(grid.wkt, [(area, 0)])
    gdal.RasterizeLayer(ds, [1], lyr, burn_values=[0])
    items = sorted(polygon_items(inp, grid.wkt), key=lambda gc: gc[1])
    if items:
        m2, lyr2 = _mem_layer(grid.wkt, items)
        gdal.RasterizeLayer(ds, [1], lyr2, options=["ATTRIBUTE=v"])
    ds.FlushCache()
    ds = None
    return path


def burn_common(common: ogr.Geometry, grid: Grid, path: str) -> str:
    """1 inside the ground all inputs cover, 0 outside."""
    ds = _new(path, grid, fill=0)
    m, lyr = _mem_layer(grid.wkt, [(common, 1)])
    gdal.RasterizeLayer(ds, [1], lyr, burn_values=[1])
    ds.FlushCache()
    ds = None
    return path


def burn_facilities(path_in: str, field: str, grid: Grid, path: str) -> Tuple[str, List[str]]:
    """Each facility's index (1..F, 0 outside all; where facilities overlap, the later one) on the
    grid, and the facilities' ids in index order."""
    ds, lyr = open_layer(path_in, "the facilities")
    defn = lyr.GetLayerDefn()
    names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
    if field not in names:
        raise InputError("the facilities %s have no field %r (their fields: %s)" % (path_in, field, ", ".join(names)))
    src = lyr.GetSpatialRef().ExportToWkt()
    ids, items = [], []
    try:
        for f in lyr:
            g = f.GetGeometryRef()
            if g is None or g.IsEmpty():
                continue
            fid = str(f.GetField(field))
            if fid in ids:
                raise InputError("the facility id %r appears twice in %s" % (fid, path_in))
            ids.append(fid)
            items.append((_transform(g.ExportToWkt(), src, grid.wkt, "facility %s" % fid), len(ids)))
    except RuntimeError as e:   # (a damaged GeoPackage fails when its tables are read)
        raise InputError("cannot read the facilities %s: %s (is it damaged or truncated?)" % (
            path_in, gdal_reason(e))) from None
    lyr = ds = None
    if not ids:
        raise InputError("the facilities layer %s holds no polygon" % path_in)
    out = _new(path, grid, gdal.GDT_UInt16, fill=0)
    m, ml = _mem_layer(grid.wkt, items)
    gdal.RasterizeLayer(out, [1], ml, options=["ATTRIBUTE=v"])
    out.FlushCache()
    out = None
    return path, ids


def sibling_mask(inp: ResultInput, grid: Grid, path: str) -> Optional[str]:
    """A polygon input's class raster on the grid, for its no-data and masked pixels (None without)."""
    return warp_onto(inp.raster, grid, path) if inp.raster else None
