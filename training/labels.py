"""Labels from polygons: a user's polygon layer (any OGR format and CRS) and an optional area, burnt
onto the grid a model sees a raster on.

- The class of a polygon comes from a field: a class name of the model's classes (any case;
  ``tailings storage facility``, ``Tailings_Storage_Facility``) or a class id.  Class 0
  (background) polygons mark ground known to hold none of the classes.  Without a field every
  polygon is the positive class of a binary model.
- The area (AOI) says where unlabelled pixels count as background; without one, only pixels within
  ``NEAR_PX`` pixels of a label do.  Everything else is ignored by the loss (``IGNORE``).  An empty
  label layer with an area teaches "none of the classes here".
- One class a pixel (binary, multiclass): one band of class ids.  Multilabel: one band per label
  class, 1 inside its polygons (they may overlap), 0 in the rest of the known ground.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal, ogr, osr

from .engine import InputError

IGNORE = 255
NEAR_PX = 32      # without an area: unlabelled pixels this close to a label are background

ogr.UseExceptions()


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name).strip().lower())


def _open_layer(path: str, what: str, layer: Optional[str] = None):
    try:
        ds = ogr.Open(path)
    except RuntimeError as e:
        raise InputError("cannot open the %s %s: %s" % (what, path, e)) from None
    if ds is None:
        raise InputError("cannot open the %s %s" % (what, path))
    lyr = ds.GetLayerByName(layer) if layer else ds.GetLayer(0)
    if lyr is None:
        raise InputError("the %s %s has no layer %s" % (what, path, layer or ""))
    return ds, lyr


def _srs(lyr, path: str, what: str):
    srs = lyr.GetSpatialRef()
    if srs is None:
        raise InputError("the %s %s has no coordinate reference system: set one (in QGIS: Layer Properties > "
                         "Source)" % (what, path))
    srs = srs.Clone()
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


@dataclass
class Polygons:
    """Polygons and their class ids, in ``srs``."""
    items: List[Tuple[ogr.Geometry, int]]
    srs: osr.SpatialReference
    warnings: List[str] = field(default_factory=list)

    def to(self, wkt: str) -> "Polygons":
        dst = osr.SpatialReference()
        dst.ImportFromWkt(wkt)
        dst.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        if self.srs.IsSame(dst):
            return Polygons([(g.Clone(), c) for g, c in self.items], dst, self.warnings)
        ct = osr.CoordinateTransformation(self.srs, dst)
        out = []
        for g, c in self.items:
            g = g.Clone()
            g.Transform(ct)
            out.append((g, c))
        return Polygons(out, dst, self.warnings)

    def union(self, classes: Optional[Sequence[int]] = None) -> Optional[ogr.Geometry]:
        geoms = [g for g, c in self.items if classes is None or c in classes]
        if not geoms:
            return None
        u = ogr.Geometry(ogr.wkbMultiPolygon)
        for g in geoms:
            for part in (g if g.GetGeometryType() in (ogr.wkbMultiPolygon, ogr.wkbMultiPolygon25D) else [g]):
                u.AddGeometry(part)
        return u.UnionCascaded() if u.GetGeometryCount() > 1 else u


def read_labels(path: str, field_name: Optional[str], classes, layer: Optional[str] = None) -> Polygons:
    """The label polygons of ``path`` with their class ids among ``classes`` (``ClassInfo``s)."""
    ds, lyr = _open_layer(path, "label layer", layer)
    srs = _srs(lyr, path, "label layer")
    defn = lyr.GetLayerDefn()
    fields = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
    by_name = {_norm(c.name): c.id for c in classes}
    ids = {c.id for c in classes}
    fi = None
    if field_name:
        matches = [i for i, f in enumerate(fields) if f.lower() == field_name.lower()]
        if not matches:
            raise InputError("the label layer %s has no field %r (its fields: %s)"
                             % (path, field_name, ", ".join(fields) or "none"))
        fi = matches[0]
    elif len(classes) != 2:
        raise InputError("the model has %d classes (%s): say which field of %s holds each polygon's class (--field)"
                         % (len(classes), ", ".join(c.name for c in classes), path))
    items, unknown, empty = [], {}, 0
    for f in lyr:
        g = f.GetGeometryRef()
        if g is None or g.IsEmpty():
            continue
        if fi is None:
            cid = max(ids)
        else:
            v = f.GetField(fi)
            if v is None or str(v).strip() == "":
                empty += 1
                continue
            cid = by_name.get(_norm(v))
            if cid is None:
                try:
                    num = float(v)
                    cid = int(num) if num.is_integer() and int(num) in ids else None
                except (TypeError, ValueError):
                    cid = None
            if cid is None:
                unknown[str(v)] = unknown.get(str(v), 0) + 1
                continue
        g = area_of(g)
        if g is not None:
            items.append((g, cid))
    ds = None
    if unknown:
        raise InputError("%s: the field %r holds classes the model does not have: %s (its classes: %s)"
                         % (path, fields[fi], ", ".join("%r (%d polygons)" % kv for kv in sorted(unknown.items())),
                            ", ".join(c.name for c in classes)))
    warnings = ["%d polygons of %s have no class in %r: left out" % (empty, path, fields[fi])] if empty else []
    return Polygons(items, srs, warnings)


def area_of(g: ogr.Geometry) -> Optional[ogr.Geometry]:
    """A label's geometry as a valid (multi)polygon of its own (a copy); None for points and lines,
    which label no area."""
    if g.GetGeometryType() not in (ogr.wkbPolygon, ogr.wkbMultiPolygon, ogr.wkbPolygon25D, ogr.wkbMultiPolygon25D):
        return None
    g = g.Clone()
    if not g.IsValid():
        g = g.MakeValid() if hasattr(g, "MakeValid") else g.Buffer(0)
    return g


def read_area(path: str, layer: Optional[str] = None) -> Polygons:
    """The area's polygons (class -1: no class)."""
    ds, lyr = _open_layer(path, "area", layer)
    srs = _srs(lyr, path, "area")
    items = [(f.GetGeometryRef().Clone(), -1) for f in lyr if f.GetGeometryRef() is not None]
    ds = None
    if not items:
        raise InputError("the area %s holds no polygon" % path)
    return Polygons(items, srs)


def known_ground(labels: Polygons, area: Optional[Polygons], near_m: float) -> Optional[ogr.Geometry]:
    """Where unlabelled pixels are background: the area and the labels, else the labels grown by
    ``near_m`` (both in the labels' CRS)."""
    parts = []
    lab = labels.union()
    if area is not None:
        a = area.union()
        if a is not None:
            parts.append(a)
        if lab is not None:
            parts.append(lab)
    elif lab is not None:
        parts.append(lab.Buffer(near_m, 4))
    if not parts:
        return None
    g = parts[0]
    for q in parts[1:]:
        g = g.Union(q)
    return g


def burn(path: str, gt, wkt: str, width: int, height: int, labels: Polygons, known: Optional[ogr.Geometry],
         multilabel_ids: Optional[Sequence[int]] = None) -> str:
    """The label raster on a grid (``labels`` and ``known`` in its CRS): see the module's text."""
    n = len(multilabel_ids) if multilabel_ids else 1
    ds = gdal.GetDriverByName("GTiff").Create(path, width, height, n, gdal.GDT_Byte,
                                              options=["TILED=YES", "COMPRESS=DEFLATE", "INTERLEAVE=BAND"])
    ds.SetGeoTransform(gt)
    ds.SetProjection(wkt)
    for b in range(n):
        ds.GetRasterBand(b + 1).Fill(IGNORE)
    if known is None:   # the polygons alone (corrections: the rest is decided against the run's own map)
        known = ogr.Geometry(ogr.wkbPolygon)
    mem = ogr.GetDriverByName("Memory").CreateDataSource("")
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)

    def layer_of(geoms, value_field=False):
        lyr = mem.CreateLayer("l%d" % mem.GetLayerCount(), srs, ogr.wkbMultiPolygon)
        lyr.CreateField(ogr.FieldDefn("v", ogr.OFTInteger))
        for g, v in geoms:
            f = ogr.Feature(lyr.GetLayerDefn())
            f.SetGeometry(g)
            f.SetField("v", int(v))
            lyr.CreateFeature(f)
        return lyr
    bands = list(range(1, n + 1))
    if not known.IsEmpty():
        gdal.RasterizeLayer(ds, bands, layer_of([(known, 0)]), burn_values=[0] * n)
    positives = [(g, c) for g, c in labels.items if c > 0]
    background = [(g, 0) for g, c in labels.items if c == 0]
    if multilabel_ids:
        for b, cid in enumerate(multilabel_ids):
            mine = [(g, 1) for g, c in positives if c == cid]
            if mine:
                gdal.RasterizeLayer(ds, [b + 1], layer_of(mine), burn_values=[1])
    elif positives:
        gdal.RasterizeLayer(ds, [1], layer_of(sorted(positives, key=lambda gc: gc[1])), options=["ATTRIBUTE=v"])
    if background:   # drawn background wins over what it covers
        gdal.RasterizeLayer(ds, bands, layer_of(background), burn_values=[0] * n)
    ds.FlushCache()
    ds = None
    return path


def bbox(geom: ogr.Geometry) -> Tuple[float, float, float, float]:
    xmin, xmax, ymin, ymax = geom.GetEnvelope()
    return xmin, ymin, xmax, ymax


def class_pixels(path: str, n_values: int = 256) -> np.ndarray:
    """Pixels per value of a label raster, per band ``(bands, n_values)``, read in strips."""
    ds = gdal.Open(path)
    counts = np.zeros((ds.RasterCount, n_values), np.int64)
    for b in range(ds.RasterCount):
        band = ds.GetRasterBand(b + 1)
        for y in range(0, ds.RasterYSize, 512):
            a = band.ReadAsArray(0, y, ds.RasterXSize, min(512, ds.RasterYSize - y))
            counts[b] += np.bincount(a.ravel(), minlength=n_values)[:n_values]
    ds = None
    return counts


def remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
