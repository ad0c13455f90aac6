"""The jobs of a batch: one facility in one year, one raster, an area.

From a table (a CSV, or any OGR layer) with the columns ``facility``, ``year`` or ``date``,
``raster`` (a file, a Sentinel-2 folder or SAFE; relative to the table's folder) and optionally
``aoi`` (a vector file of the facility's polygon); an OGR layer's own geometry is the area when it
has one (points grown by ``buffer_m``).  Or from a facilities layer and a folder of scenes, each
facility matched with the scenes whose footprint covers it, one job a year.
"""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from osgeo import ogr, osr

from ..areas import equal_area_at
from ..errors import InputError, TailingsError, first_line
from ..input.raster import scene_date
from ..input.tables import gdal_reason, open_layer, open_vector, read_text

ogr.UseExceptions()


@dataclass(frozen=True)
class Job:
    facility: str
    year: str
    date: Optional[str]            # YYYY[-MM[-DD]] when known
    raster: str
    aoi: Optional[str] = None      # a vector file (its polygons), or
    aoi_wkt: Optional[str] = None  # a polygon in ``aoi_srs``
    aoi_srs: Optional[str] = None

    @property
    def key(self) -> str:
        return "%s/%s" % (safe(self.facility), self.year)


def safe(name: str) -> str:
    """A facility's id as a folder name."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name).strip()).strip("._")
    return s or "facility"


def _year_of(row: Dict[str, str], where: str) -> Tuple[str, Optional[str]]:
    date = (row.get("date") or "").strip() or None
    year = (row.get("year") or "").strip() or (date[:4] if date else "")
    if not (len(year) == 4 and year.isdigit()):
        raise InputError("%s: a job needs its year (column year, or date YYYY-MM-DD), got %r" % (where, year or date))
    if date and not date.startswith(year):
        raise InputError("%s: the date %s is not of the year %s" % (where, date, year))
    return year, date


def _path(p: str, base: str) -> str:
    p = p.strip()
    if p.startswith("/vsi") or "://" in p:
        return p           # (what GDAL reads: /vsis3/, /vsicurl/...)
    return os.path.normpath(p if os.path.isabs(p) else os.path.join(base, p))


def _buffer(g: ogr.Geometry, srs: osr.SpatialReference, metres: float) -> ogr.Geometry:
    """``g`` grown by ``metres``, on an equal-area projection centred on it."""
    laea = equal_area_at(g, srs)
    h = g.Clone()
    h.Transform(osr.CoordinateTransformation(srs, laea))
    h = h.Buffer(metres, 16)
    h.Transform(osr.CoordinateTransformation(laea, srs))
    return h


def _layer_rows(lyr, name: str, rows: list) -> List[str]:
    """An OGR layer's rows (fields, geometry, CRS, where) appended to ``rows``; its field names."""
    defn = lyr.GetLayerDefn()
    fields = [defn.GetFieldDefn(i).GetName().lower() for i in range(defn.GetFieldCount())]
    srs = lyr.GetSpatialRef()
    if srs is not None:
        srs = srs.Clone()
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    for i, f in enumerate(lyr):
        row = {defn.GetFieldDefn(k).GetName().lower(): ("" if f.GetField(k) is None else str(f.GetField(k)))
               for k in range(defn.GetFieldCount())}
        g = f.GetGeometryRef()
        rows.append((row, g.Clone() if g is not None and not g.IsEmpty() else None, srs,
                     "%s feature %d" % (name, i + 1)))
    return fields


def read_jobs(path: str, buffer_m: float = 0.0, notes: Optional[List[str]] = None) -> List[Job]:
    """The jobs of a table (see the module's text); an error names the row and what is wrong.
    What was assumed (a CSV's encoding) is added to ``notes``."""
    if not os.path.isfile(path):
        raise InputError("no such jobs table: %s" % path)
    base = os.path.dirname(os.path.abspath(path))
    rows: List[Tuple[Dict[str, str], Optional[ogr.Geometry], Optional[osr.SpatialReference], str]] = []
    if path.lower().endswith(".csv"):
        text, note = read_text(path, "the jobs table")
        if note and notes is not None:
            notes.append(note)
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            for i, row in enumerate(reader):
                rows.append(({k.strip().lower(): (v or "") for k, v in row.items() if k}, None, None,
                             "%s row %d" % (os.path.basename(path), i + 2)))
        except csv.Error as e:
            raise InputError("the jobs table %s cannot be read as CSV: %s" % (path, e)) from None
    else:
        ds = open_vector(path, "the jobs table")
        try:
            fields = _layer_rows(ds.GetLayer(0), os.path.basename(path), rows)
        except RuntimeError as e:
            raise InputError("cannot read the jobs table %s: %s (is it damaged or truncated?)"
                             % (path, gdal_reason(e))) from None
        ds = None
    missing = [c for c in ("facility", "raster") if c not in fields]
    if missing or not ({"year", "date"} & set(fields)):
        raise InputError("the jobs table %s lacks the column%s %s (it needs facility, year or date, raster; aoi "
                         "optional)" % (path, "s" if len(missing) > 1 else "",
                                        ", ".join(missing + ([] if {"year", "date"} & set(fields) else ["year"]))))
    jobs: List[Job] = []
    seen = {}
    for row, geom, srs, where in rows:
        fac = row.get("facility", "").strip()
        if not fac:
            raise InputError("%s: no facility" % where)
        year, date = _year_of(row, where)
        raster = _path(row.get("raster", ""), base)
        if not row.get("raster", "").strip():
            raise InputError("%s: no raster" % where)
        aoi = _path(row["aoi"], base) if row.get("aoi", "").strip() else None
        aoi_wkt = aoi_srs = None
        if aoi is None and geom is not None:
            kind = ogr.GT_Flatten(geom.GetGeometryType())
            if kind in (ogr.wkbPoint, ogr.wkbMultiPoint):
                if buffer_m <= 0:
                    raise InputError("%s: the jobs are points: give the area around them (--buffer-m)" % where)
                geom = _buffer(geom, srs, buffer_m)
            aoi_wkt, aoi_srs = geom.ExportToWkt(), srs.ExportToWkt() if srs is not None else None
        job = Job(fac, year, date, raster, aoi, aoi_wkt, aoi_srs)
        if job.key in seen:
            raise InputError("%s: facility %s, year %s is a job twice (also %s)" % (where, fac, year, seen[job.key]))
        seen[job.key] = where
        jobs.append(job)
    if not jobs:
        raise InputError("the jobs table %s holds no job" % path)
    return jobs


def _footprint(path: str) -> Tuple[ogr.Geometry, str]:
    from ..input.raster import open_input
    r = open_input(path)
    return ogr.CreateGeometryFromWkt(r.grid.box_wkt()), r.wkt


def _facilities(facilities: str, field: str) -> List[Tuple[str, ogr.Geometry, osr.SpatialReference]]:
    """The facilities' ids, geometries and CRS (``path`` or ``path|layername=L``)."""
    ds, lyr = open_layer(facilities, "the facilities")
    srs = lyr.GetSpatialRef().Clone()
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    if lyr.GetLayerDefn().GetFieldIndex(field) < 0:
        raise InputError("the facilities %s have no field %r" % (facilities, field))
    out = []
    try:
        for f in lyr:
            g = f.GetGeometryRef()
            if g is not None and not g.IsEmpty():
                out.append((str(f.GetField(field)), g.Clone(), srs))
    except RuntimeError as e:
        raise InputError("cannot read the facilities %s: %s (is it damaged or truncated?)"
                         % (facilities, gdal_reason(e))) from None
    return out


def scene_jobs(facilities: str, field: str, scenes_dir: str, buffer_m: float = 0.0) -> Tuple[List[Job], List[str]]:
    """Jobs from a facilities layer and a folder of scenes (a raster file, Sentinel-2 folder or SAFE
    each): every facility with each year's scene that covers it (of several, the one that covers
    it whole, then the latest).  Returns the jobs and notes on what was left out."""
    if not os.path.isdir(scenes_dir):
        raise InputError("no such folder of scenes: %s" % scenes_dir)
    facs = _facilities(facilities, field)
    names = sorted(n for n in os.listdir(scenes_dir) if not n.startswith("."))
    scenes, notes = [], []
    for n in names:
        p = os.path.join(scenes_dir, n)
        if os.path.isfile(p) and not n.lower().endswith((".tif", ".tiff", ".jp2", ".vrt", ".img", ".zip")):
            continue
        date = scene_date(p)
        if date is None:
            continue
        try:
            fp, wkt = _footprint(p)
        except (TailingsError, RuntimeError, OSError) as e:   # not a raster
            notes.append("%s: left out, not a raster the engine reads (%s)" % (n, first_line(e)))
            continue
        scenes.append((p, date, fp, wkt))
    if not scenes:
        raise InputError("no dated scene in %s (dates come from the products, or a YYYYMMDD in their names)"
                         % scenes_dir)
    jobs = []
    for fac, g, srs in facs:
        if ogr.GT_Flatten(g.GetGeometryType()) in (ogr.wkbPoint, ogr.wkbMultiPoint):
            if buffer_m <= 0:
                raise InputError("the facilities are points: give the area around them (--buffer-m)")
            g = _buffer(g, srs, buffer_m)
        by_year: Dict[str, list] = {}
        for p, date, fp, wkt in scenes:
            dst = osr.SpatialReference()
            dst.ImportFromWkt(wkt)
            dst.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
            h = g.Clone()
            h.Transform(osr.CoordinateTransformation(srs, dst))
            if fp.Intersects(h):
                by_year.setdefault(date[:4], []).append((fp.Contains(h), date, p))
        for year, cands in sorted(by_year.items()):
            cands.sort(reverse=True)
            _, date, p = cands[0]
            if len(cands) > 1:
                notes.append("%s %s: %d scenes cover it, %s taken" % (fac, year, len(cands), os.path.basename(p)))
            jobs.append(Job(fac, year, date, p, None, g.ExportToWkt(), srs.ExportToWkt()))
        if not by_year:
            notes.append("%s: no scene covers it" % fac)
    if not jobs:
        raise InputError("no scene in %s covers any facility of %s" % (scenes_dir, facilities))
    return jobs, notes


def aoi_wkts(job: Job, raster_wkt: str) -> Optional[List[str]]:
    """A job's area in the raster's CRS (None: the whole raster)."""
    if job.aoi:
        return None
    if not job.aoi_wkt:
        return None
    g = ogr.CreateGeometryFromWkt(job.aoi_wkt)
    if job.aoi_srs:
        src, dst = osr.SpatialReference(), osr.SpatialReference()
        src.ImportFromWkt(job.aoi_srs)
        dst.ImportFromWkt(raster_wkt)
        for s in (src, dst):
            s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        if not src.IsSame(dst):
            g.Transform(osr.CoordinateTransformation(src, dst))
    return [g.ExportToWkt()]
