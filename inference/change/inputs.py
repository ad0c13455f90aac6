"""The results a change map compares: what each is, its classes, its year and the ground it covers.

An input is a class raster (``<stem>_classes.tif``: class ids, 255 no data, 250-253 masked) or a
polygon layer (the engine's GeoPackage, ``path`` or ``path|layername=L``), whose polygons as they
are now -- edited by hand or not -- are the truth: inside the ground its run covered
(``TM_AREA``) a pixel is the class of the polygon over it, else background; pixels its class
raster (beside it) marks as no data or masked stay no data.  The class table comes from the
``CLASS_k`` metadata (of the raster, or of the polygon layer), else the class raster beside the
polygons, else the model that made them, else the polygons themselves; the year from ``TM_DATE``,
unless given.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from osgeo import gdal, ogr, osr

from ..errors import InputError
from ..masks import MASK_MIN

gdal.UseExceptions()
ogr.UseExceptions()


@dataclass(frozen=True)
class ResultInput:
    label: str                    # as the user gave it
    kind: str                     # "raster" or "polygons"
    path: str                     # the raster, or the GeoPackage
    layer: Optional[str]          # the polygon layer's name
    classes: Dict[int, str]       # class id -> name (no mask or nodata codes)
    date: Optional[str]           # TM_DATE as recorded (YYYY[-MM[-DD]]), when it is
    wkt: str                      # its CRS
    footprint: str                # WKT, in ``wkt``: the ground it covers
    raster: Optional[str] = None  # polygons: the class raster beside them (no data, masked), when there

    @property
    def year(self) -> Optional[str]:
        return self.date[:4] if self.date else None


def _srs(wkt: str) -> osr.SpatialReference:
    s = osr.SpatialReference()
    s.ImportFromWkt(wkt)
    s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return s


def raster_classes(md: Dict[str, str], ds=None) -> Dict[int, str]:
    """Class names from a class raster's ``CLASS_k`` metadata (else its category names)."""
    out = {}
    for k, v in md.items():
        if k.startswith("CLASS_") and k[6:].isdigit() and int(k[6:]) < MASK_MIN:
            out[int(k[6:])] = v
    if not out and ds is not None:
        b = ds.GetRasterBand(1)
        b.GetNoDataValue()   # (GDAL reads the .aux.xml lazily)
        for i, name in enumerate(b.GetCategoryNames() or []):
            if name and i < MASK_MIN:
                out[i] = name
    return out


def _bounds_wkt(ds) -> str:
    gt = ds.GetGeoTransform()
    x0, y0 = gt[0], gt[3]
    x1, y1 = gt[0] + gt[1] * ds.RasterXSize, gt[3] + gt[5] * ds.RasterYSize
    return "POLYGON((%r %r,%r %r,%r %r,%r %r,%r %r))" % (x0, y0, x1, y0, x1, y1, x0, y1, x0, y0)


def _open_raster(label: str) -> ResultInput:
    try:
        ds = gdal.Open(label)
    except RuntimeError as e:
        raise InputError("cannot open %s: %s" % (label, str(e).splitlines()[0])) from None
    if ds.RasterCount < 1 or not ds.GetProjection():
        raise InputError("%s is not a georeferenced class raster" % label)
    md = ds.GetMetadata() or {}
    classes = raster_classes(md, ds)
    if not classes:
        raise InputError("%s does not name its classes (no CLASS_k metadata or category names): is it a class "
                         "raster of Tailings Mapper?" % label)
    out = ResultInput(label, "raster", label, None, classes, md.get("TM_DATE"), ds.GetProjection(), _bounds_wkt(ds))
    ds = None
    return out


def sibling_raster(gpkg: str, layer: str) -> Optional[str]:
    stem = layer[:-len("_polygons")] if layer.endswith("_polygons") else layer
    p = os.path.join(os.path.dirname(gpkg), stem + "_classes.tif")
    return p if os.path.isfile(p) else None


def _open_polygons(label: str) -> ResultInput:
    parts = label.split("|")
    path = parts[0]
    layer = next((p.split("=", 1)[1] for p in parts[1:] if p.startswith("layername=")), None)
    try:
        ds = ogr.Open(path)
    except RuntimeError as e:
        raise InputError("cannot open %s: %s" % (path, str(e).splitlines()[0])) from None
    lyr = ds.GetLayerByName(layer) if layer else next(
        (ds.GetLayer(i) for i in range(ds.GetLayerCount()) if ds.GetLayer(i).GetName() != "layer_styles"
         and not ds.GetLayer(i).GetName().endswith("_tiles")), None)
    if lyr is None:
        raise InputError("%s has no polygon layer %s" % (path, layer or ""))
    name = lyr.GetName()
    md = lyr.GetMetadata() or {}
    if lyr.GetSpatialRef() is None:
        raise InputError("%s: the layer %s has no coordinate reference system" % (path, name))
    wkt = lyr.GetSpatialRef().ExportToWkt()
    defn = lyr.GetLayerDefn()
    if defn.GetFieldIndex("class_id") < 0:
        raise InputError("%s: the layer %s has no class_id field: is it a polygon layer of Tailings Mapper?"
                         % (path, name))
    sibling = sibling_raster(path, name)
    if md.get("TM_CLASSES_RASTER") and os.path.isfile(md["TM_CLASSES_RASTER"]):
        sibling = md["TM_CLASSES_RASTER"]     # (a copy of edited polygons says where its raster is)
    classes = raster_classes(md)   # (the engine records the class table with the polygons too)
    if not classes and sibling:
        sds = gdal.Open(sibling)
        classes = raster_classes(sds.GetMetadata() or {}, sds)
        sds = None
    if not classes and md.get("TM_MODEL_PATH") and os.path.isfile(md["TM_MODEL_PATH"]):
        from ..model import open_model
        classes = open_model(md["TM_MODEL_PATH"]).info.class_names()
    if not classes:
        seen = {0: "background"}
        for f in lyr:
            if f.GetField("class_id") is not None:
                seen[int(f.GetField("class_id"))] = f.GetField("class_name") or str(f.GetField("class_id"))
        lyr.ResetReading()
        classes = dict(sorted(seen.items()))
    area = md.get("TM_AREA")
    if not area and sibling:
        sds = gdal.Open(sibling)
        area = _bounds_wkt(sds)
        sds = None
    if not area:
        raise InputError("%s: the layer %s does not say which ground its run covered (TM_AREA), and no class raster "
                         "is beside it: where it has no polygon, background cannot be told from no data"
                         % (path, name))
    out = ResultInput(label, "polygons", path, name, classes, md.get("TM_DATE"), wkt, area, sibling)
    lyr = ds = None
    return out


def open_input(label: str) -> ResultInput:
    """A result by path (a raster, or ``gpkg[|layername=L]``)."""
    path = label.split("|")[0]
    if not os.path.exists(path):
        raise InputError("no such file: %s" % path)
    if path.lower().endswith((".gpkg", ".shp", ".geojson", ".json", ".fgb")):
        return _open_polygons(label)
    return _open_raster(label)


def polygon_items(inp: ResultInput, wkt: str) -> List[Tuple[ogr.Geometry, int]]:
    """The polygons of a polygon input with their class ids, in ``wkt``; a polygon without a
    class (drawn by hand) is the positive class of a binary table, else an error."""
    ds = ogr.Open(inp.path)
    lyr = ds.GetLayerByName(inp.layer)
    ct = None
    src, dst = _srs(lyr.GetSpatialRef().ExportToWkt()), _srs(wkt)
    if not src.IsSame(dst):
        ct = osr.CoordinateTransformation(src, dst)
    positive = max(inp.classes) if len(inp.classes) == 2 else None
    items, missing, unknown = [], 0, set()
    for f in lyr:
        g = f.GetGeometryRef()
        if g is None or g.IsEmpty():
            continue
        cid = f.GetField("class_id")
        if cid is None:
            if positive is None:
                missing += 1
                continue
            cid = positive
        cid = int(cid)
        if cid not in inp.classes:
            unknown.add(cid)
            continue
        g = g.Clone()
        if ct is not None:
            g.Transform(ct)
        items.append((g, cid))
    lyr = ds = None
    if missing:
        raise InputError("%s: %d polygons have no class_id: with several classes, say which each is"
                         % (inp.label, missing))
    if unknown:
        raise InputError("%s: polygons of class ids %s, which its class table (%s) does not have"
                         % (inp.label, sorted(unknown), ", ".join("%d=%s" % kv for kv in sorted(inp.classes.items()))))
    return items


def check_classes(inputs: Sequence[ResultInput]) -> Dict[int, str]:
    """The class table they share (an error when they differ)."""
    first = inputs[0].classes
    for inp in inputs[1:]:
        if inp.classes != first:
            raise InputError("the results have different class tables: %s has %s, %s has %s; compare results of "
                             "the same model (or models of the same classes)"
                             % (inputs[0].label, _table(first), inp.label, _table(inp.classes)))
    ids = sorted(first)
    if ids != list(range(len(ids))):
        raise InputError("class ids must run 0..N-1, got %s" % ids)
    return first


def _table(c: Dict[int, str]) -> str:
    return ", ".join("%d=%s" % kv for kv in sorted(c.items()))


def assign_years(inputs: Sequence[ResultInput], years: Optional[Sequence[str]]) -> List[str]:
    """Each input's year: given, else recorded (``TM_DATE``); a year twice is an error."""
    if years:
        if len(years) != len(inputs):
            raise InputError("%d years given for %d results" % (len(years), len(inputs)))
        out = [str(y).strip() for y in years]
    else:
        out = []
        for inp in inputs:
            if not inp.year:
                raise InputError("%s does not record its year (no TM_DATE: the run had no --date and its product no "
                                 "acquisition date): give the years (--years 2019,2021)" % inp.label)
            out.append(inp.year)
    for y in out:
        if not (len(y) == 4 and y.isdigit()):
            raise InputError("a year is four digits, got %r" % y)
    dup = sorted({y for y in out if out.count(y) > 1})
    if dup:
        raise InputError("the year %s is given twice (%s): compare results of different years, or give the years "
                         "(--years)" % (", ".join(dup), ", ".join(i.label for i, y in zip(inputs, out) if y in dup)))
    return out
