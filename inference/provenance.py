"""The provenance a run records (``TM_*`` metadata): one definition of its keys and their formats,
the dict a run writes (the same keys and formats in its rasters and its polygon layer), and a
typed record read back from any of them -- files the previous versions wrote included (their
rasters wrote numbers as ``%g``, their polygon layers as ``str()``: both read as floats here).

Numbers are written by :func:`number`: the shortest text that reads back as the same float, with
no trailing ``.0`` (``0.5``, ``1``, ``0.123456789``): what ``%g`` wrote for every usual value, and
exact where ``%g`` rounded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

MODEL = "TM_MODEL"                  # the model's name
MODEL_PATH = "TM_MODEL_PATH"        # the model file the run read
SOURCE = "TM_SOURCE"                # the input raster (or product)
RUN_TIME = "TM_RUN_TIME"            # when it ran, ISO 8601 to the second
DEVICE = "TM_DEVICE"                # where the network ran (cpu, cuda, ...)
PROVIDER_REASON = "TM_PROVIDER_REASON"   # why there
BANDS = "TM_BANDS"                  # which input band fed which model band
TTA = "TM_TTA"                      # network passes per tile and scale (integer)
SCALES = "TM_SCALES"                # the scales each tile is seen at (numbers, comma separated)
THRESHOLD = "TM_THRESHOLD"          # a binary model's decision threshold (number)
MIN_AREA_HA = "TM_MIN_AREA_HA"      # the smallest region kept, hectares (number)
DATE = "TM_DATE"                    # the scene's date, YYYY[-MM[-DD]], when known
AREA = "TM_AREA"                    # the ground the run covered (WKT polygon, in AREA_CRS)
AREA_CRS = "TM_AREA_CRS"            # AREA's CRS (WKT): the run's raster's
LAYOUT = "TM_LAYOUT"                # a multilabel class raster's band layout (text)
CONTENT = "TM_CONTENT"              # what a raster's values are (the confidence raster's)
CLASSES_RASTER = "TM_CLASSES_RASTER"   # a copy of a polygon layer: where its run's class raster is
YEARS = "TM_YEARS"                  # a change map's years (comma separated)
CODE = "TM_CODE"                    # a change map's value code
UNCERTAIN_CODE = "TM_UNCERTAIN_CODE"   # its code for uncertain changes
CLASS_PREFIX = "CLASS_"             # CLASS_<id>: the class table

LABEL_LAYOUT = ("multilabel: band 1 the most probable label class present (0 none), then one band per label "
                "class (1 present, 0 absent), in id order")   # (LAYOUT's text for a multilabel class raster)


def number(x) -> str:
    """``x`` as the provenance writes numbers (see the module's text)."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def class_table(names: Mapping[int, str]) -> Dict[str, str]:
    """``{CLASS_<id>: name}``."""
    return {"%s%d" % (CLASS_PREFIX, k): v for k, v in names.items()}


def run_area_wkt(p) -> str:
    """The ground a plan's run covers (its area of interest, else its window), WKT in its raster's CRS."""
    if p.aoi:
        from osgeo import ogr
        u = ogr.Geometry(ogr.wkbMultiPolygon)
        for w in p.aoi:
            g = ogr.CreateGeometryFromWkt(w)
            for part in (g if g.GetGeometryType() == ogr.wkbMultiPolygon else [g]):
                u.AddGeometry(part)
        return u.UnionCascaded().ExportToWkt()
    return p.raster.grid.box_wkt(p.window)


def run_record(p, run_time: str) -> Dict[str, str]:
    """What every output of plan ``p``'s run records about it, rasters and polygon layer alike,
    before its session is known (where the network ran: :func:`device_record`; the class table is
    the caller's)."""
    info = p.info
    meta = {MODEL: info.name, MODEL_PATH: p.model.path, SOURCE: p.input, RUN_TIME: run_time,
            BANDS: p.mapping.as_text(info.bands), TTA: str(int(p.tta)),
            SCALES: ",".join(number(s) for s in p.scales), THRESHOLD: number(p.threshold),
            MIN_AREA_HA: number(p.min_area_ha), AREA: run_area_wkt(p), AREA_CRS: p.raster.wkt}
    if p.date:
        meta[DATE] = p.date
    return meta


def device_record(session) -> Dict[str, str]:
    """Where the network ran and why (an onnxruntime ``runtime.Session``'s device and reason)."""
    return {DEVICE: session.device, PROVIDER_REASON: session.reason}


def raster_record(p, run_time: str) -> Dict[str, str]:
    """What a run's class and confidence rasters record before the session is known: the run's
    record, the class table of the classes they hold (the model's, then the mask's) and a
    multilabel raster's band layout."""
    meta = dict(run_record(p, run_time), **class_table({c.id: c.name for c in p.out_classes}))
    if p.label_bands:
        meta[LAYOUT] = LABEL_LAYOUT
    return meta


def layer_record(p, run_time: str) -> Dict[str, str]:
    """What a run's polygon layer records before the session is known: the run's record (what made
    it, and the ground its run covered: ``TM_AREA``, in the CRS ``TM_AREA_CRS`` names, so that
    corrections made in it can teach the model where there is nothing) and the class table of the
    model's classes."""
    return dict(run_record(p, run_time), **class_table({c.id: c.name for c in p.info.classes}))


def _float(text: Optional[str]) -> Optional[float]:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _int(text: Optional[str]) -> Optional[int]:
    f = _float(text)
    return int(f) if f is not None and f == int(f) else None


@dataclass(frozen=True)
class Provenance:
    """What a file records of the run that made it (None: not recorded, or not readable)."""
    model: Optional[str] = None
    model_path: Optional[str] = None
    source: Optional[str] = None
    run_time: Optional[str] = None
    device: Optional[str] = None
    provider_reason: Optional[str] = None
    bands: Optional[str] = None
    tta: Optional[int] = None
    scales: Optional[Tuple[float, ...]] = None
    threshold: Optional[float] = None
    min_area_ha: Optional[float] = None
    date: Optional[str] = None
    area: Optional[str] = None
    area_crs: Optional[str] = None
    layout: Optional[str] = None
    classes_raster: Optional[str] = None
    classes: Dict[int, str] = field(default_factory=dict)   # CLASS_<id> (every id; callers filter)


def read(md: Optional[Mapping[str, str]]) -> Provenance:
    """The record in metadata ``md`` (a raster's ``GetMetadata()``, a layer's)."""
    md = md or {}
    text = lambda k: md.get(k) or None   # (an empty value is no value)
    scales = None
    if md.get(SCALES):
        parsed = tuple(_float(s) for s in md[SCALES].split(","))
        scales = None if None in parsed else parsed
    classes = {int(k[len(CLASS_PREFIX):]): v for k, v in md.items()
               if k.startswith(CLASS_PREFIX) and k[len(CLASS_PREFIX):].isdigit()}
    return Provenance(text(MODEL), text(MODEL_PATH), text(SOURCE), text(RUN_TIME), text(DEVICE),
                      text(PROVIDER_REASON), text(BANDS), _int(md.get(TTA)), scales, _float(md.get(THRESHOLD)),
                      _float(md.get(MIN_AREA_HA)), text(DATE), text(AREA), text(AREA_CRS), text(LAYOUT),
                      text(CLASSES_RASTER), dict(sorted(classes.items())))


def read_file(path: str, layer: Optional[str] = None) -> Provenance:
    """The record a raster, or a vector file's layer (``layer``, else its first), holds; an empty
    record when it cannot be read."""
    from osgeo import gdal, ogr
    try:
        if path.lower().endswith((".gpkg", ".shp", ".geojson", ".json", ".fgb")):
            ds = ogr.Open(path)
            lyr = (ds.GetLayerByName(layer) if layer else ds.GetLayer(0)) if ds is not None else None
            return read(lyr.GetMetadata() if lyr is not None else None)
        ds = gdal.Open(path)
        return read(ds.GetMetadata() if ds is not None else None)
    except (RuntimeError, AttributeError):
        return Provenance()
