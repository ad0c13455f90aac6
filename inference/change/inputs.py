"""The results a change map compares: what each is, its classes, its year and the ground it covers.

An input is a class raster (``<stem>_classes.tif``: class ids, 255 no data, 250-253 masked) or a
polygon layer (the engine's GeoPackage, ``path`` or ``path|layername=L``), whose polygons as they
are now -- edited by hand or not -- are the truth: inside the ground its run covered
(``TM_AREA``, in the CRS ``TM_AREA_CRS`` names: the run's raster's, whatever CRS the layer was
saved in since; older files do not name it: see :func:`footprint_crs`) a pixel is the class of
the polygon over it, else background; pixels its class raster (beside it) marks as no data or
masked stay no data.  The class table comes from the
``CLASS_k`` metadata (of the raster, or of the polygon layer), else the class raster beside the
polygons, else the model that made them, else the polygons themselves; the year from ``TM_DATE``,
unless given.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from osgeo import gdal, ogr, osr

from .. import provenance
from ..errors import InputError
from ..grid import Grid
from ..input.masks import MASK_MIN
from ..input.tables import gdal_reason, open_vector

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
    footprint: str                # WKT, in ``footprint_wkt``: the ground it covers
    raster: Optional[str] = None  # polygons: the class raster beside them (no data, masked), when there
    footprint_crs: Optional[str] = None   # the footprint's CRS when it is not ``wkt`` (a layer saved in another CRS)

    @property
    def footprint_wkt(self) -> str:
        """The CRS of ``footprint``."""
        return self.footprint_crs or self.wkt

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
    out = {k: v for k, v in provenance.read(md).classes.items() if k < MASK_MIN}
    if not out and ds is not None:
        b = ds.GetRasterBand(1)
        b.GetNoDataValue()   # (GDAL reads the .aux.xml lazily)
        for i, name in enumerate(b.GetCategoryNames() or []):
            if name and i < MASK_MIN:
                out[i] = name
    return out


def _bounds_wkt(ds) -> str:
    return Grid.of_dataset(ds).box_wkt()


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
    out = ResultInput(label, "raster", label, None, classes, provenance.read(md).date, ds.GetProjection(),
                      _bounds_wkt(ds))
    ds = None
    return out


def recorded_date(label: str) -> Optional[str]:
    """The date a result records (``TM_DATE``: YYYY[-MM[-DD]]), None when it records none or
    cannot be read (what is wrong with it is said when it is compared)."""
    layer = next((p.split("=", 1)[1] for p in label.split("|")[1:] if p.startswith("layername=")), None)
    return provenance.read_file(label.split("|")[0], layer).date


def sibling_raster(gpkg: str, layer: str) -> Optional[str]:
    stem = layer[:-len("_polygons")] if layer.endswith("_polygons") else layer
    p = os.path.join(os.path.dirname(gpkg), stem + "_classes.tif")
    return p if os.path.isfile(p) else None


def _open_polygons(label: str) -> ResultInput:
    parts = label.split("|")
    path = parts[0]
    layer = next((p.split("=", 1)[1] for p in parts[1:] if p.startswith("layername=")), None)
    ds = open_vector(path, "the result")
    try:
        return _read_polygons(label, path, layer, ds)
    except RuntimeError as e:   # (a damaged GeoPackage fails when its tables are read)
        raise InputError("cannot read the result %s: %s (is it damaged or truncated?)"
                         % (path, gdal_reason(e))) from None


def _read_polygons(label: str, path: str, layer: Optional[str], ds) -> ResultInput:
    lyr = ds.GetLayerByName(layer) if layer else next(
        (ds.GetLayer(i) for i in range(ds.GetLayerCount()) if ds.GetLayer(i).GetName() != "layer_styles"
         and not ds.GetLayer(i).GetName().endswith("_tiles")), None)
    if lyr is None:
        raise InputError("%s has no polygon layer %s" % (path, layer or ""))
    name = lyr.GetName()
    made = provenance.read(lyr.GetMetadata())
    if lyr.GetSpatialRef() is None:
        raise InputError("%s: the layer %s has no coordinate reference system" % (path, name))
    wkt = lyr.GetSpatialRef().ExportToWkt()
    defn = lyr.GetLayerDefn()
    if defn.GetFieldIndex("class_id") < 0:
        raise InputError("%s: the layer %s has no class_id field: is it a polygon layer of Tailings Mapper?"
                         % (path, name))
    sibling = sibling_raster(path, name)
    if made.classes_raster and os.path.isfile(made.classes_raster):
        sibling = made.classes_raster     # (a copy of edited polygons says where its raster is)
    classes = {k: v for k, v in made.classes.items() if k < MASK_MIN}   # (the engine records the class table with the polygons too)
    if not classes and sibling:
        sds = gdal.Open(sibling)
        classes = raster_classes(sds.GetMetadata() or {}, sds)
        sds = None
    if not classes and made.model_path and os.path.isfile(made.model_path):
        from ..model.opened import open_model
        classes = open_model(made.model_path).info.class_names()
    if not classes:
        seen = {0: "background"}
        for f in lyr:
            if f.GetField("class_id") is not None:
                seen[int(f.GetField("class_id"))] = f.GetField("class_name") or str(f.GetField("class_id"))
        lyr.ResetReading()
        classes = dict(sorted(seen.items()))
    area, area_crs = made.area, None
    if area:
        area_crs = footprint_crs(made, lyr, sibling, "%s: the layer %s" % (path, name))
    elif sibling:
        sds = gdal.Open(sibling)
        area, area_crs = _bounds_wkt(sds), sds.GetProjection()
        sds = None
    if not area:
        raise InputError("%s: the layer %s does not say which ground its run covered (TM_AREA), and no class raster "
                         "is beside it: where it has no polygon, background cannot be told from no data"
                         % (path, name))
    out = ResultInput(label, "polygons", path, name, classes, made.date, wkt, area, sibling,
                      None if _srs(area_crs).IsSame(_srs(wkt)) else area_crs)
    lyr = ds = None
    return out


def footprint_crs(made: provenance.Provenance, lyr, sibling: Optional[str], what: str) -> str:
    """The CRS of a polygon layer's ``TM_AREA`` (WKT): ``TM_AREA_CRS`` as recorded; in older files
    the run's raster's -- its class raster's (beside the layer, or named), else its source's --
    and, when neither is there, the layer's own if its polygons lie on that ground; else an error
    (a layer saved in another CRS cannot say where its ground was)."""
    try:
        _check_geometry(made.area)
    except (RuntimeError, ValueError):
        raise InputError("%s records its ground (TM_AREA) as %r, not a polygon" % (what, made.area[:60])) from None
    if made.area_crs:
        s = osr.SpatialReference()
        try:
            if s.SetFromUserInput(made.area_crs) != 0:
                raise RuntimeError("not a CRS")
        except RuntimeError:
            raise InputError("%s records the CRS of its ground (TM_AREA_CRS) as %r, which is not a CRS"
                             % (what, made.area_crs[:60])) from None
        return s.ExportToWkt()
    for raster in (sibling, made.source):
        wkt = _raster_crs(raster)
        if wkt:
            return wkt
    own = lyr.GetSpatialRef().ExportToWkt()
    area = ogr.CreateGeometryFromWkt(made.area)
    x0, x1, y0, y1 = area.GetEnvelope()
    tol = 0.01 * max(x1 - x0, y1 - y0)
    ext = _extent(lyr)
    inside = ext is None or (ext[0] >= x0 - tol and ext[1] <= x1 + tol and ext[2] >= y0 - tol and ext[3] <= y1 + tol)
    if not inside:
        raise InputError("%s was saved in another CRS than its run's raster, and its ground (TM_AREA, recorded in "
                         "that raster's CRS without naming it) cannot be placed: neither its class raster nor its "
                         "source raster is there to say which CRS it was; use the original layer (or its class "
                         "raster) instead" % what)
    return own


def _check_geometry(wkt: str) -> None:
    g = ogr.CreateGeometryFromWkt(wkt)
    if g is None or g.IsEmpty() or ogr.GT_Flatten(g.GetGeometryType()) not in (ogr.wkbPolygon, ogr.wkbMultiPolygon):
        raise ValueError(wkt)


def _extent(lyr):
    """The layer's polygons' extent (xmin, xmax, ymin, ymax), None when it has none."""
    if lyr.GetFeatureCount() == 0:
        return None
    try:
        return lyr.GetExtent()
    except RuntimeError:
        return None


def _raster_crs(path: Optional[str]) -> Optional[str]:
    """The CRS of a raster that is there (a file, or a product the engine reads), else None."""
    if not path or not os.path.exists(path):
        return None
    try:
        ds = gdal.Open(path)
        wkt = ds.GetProjection() if ds is not None else ""
        ds = None
        if wkt:
            return wkt
    except RuntimeError:
        pass
    try:
        from ..input.raster import open_input as open_raster
        return open_raster(path).wkt or None
    except Exception:   # not a raster the engine reads (any more): no answer from it
        return None


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
    ds = open_vector(inp.path, "the result")
    lyr = ds.GetLayerByName(inp.layer)
    ct = None
    src, dst = _srs(lyr.GetSpatialRef().ExportToWkt()), _srs(wkt)
    if not src.IsSame(dst):
        ct = osr.CoordinateTransformation(src, dst)
    try:
        items, missing, unknown = _items(inp, lyr, ct)
    except RuntimeError as e:   # (a damaged GeoPackage, or a polygon the grid's CRS cannot hold)
        raise InputError("cannot read the polygons of %s: %s" % (
            inp.label, gdal_reason(e))) from None
    lyr = ds = None
    if missing:
        raise InputError("%s: %d polygons have no class_id: with several classes, say which each is"
                         % (inp.label, missing))
    if unknown:
        raise InputError("%s: polygons of class ids %s, which its class table (%s) does not have"
                         % (inp.label, sorted(unknown), ", ".join("%d=%s" % kv for kv in sorted(inp.classes.items()))))
    return items


def _items(inp: ResultInput, lyr, ct):
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
    return items, missing, unknown


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
