"""Change maps between years: ``plan_change(results, options, out_dir)`` then ``run_change(plan)``.

Two or more results of the same ground (class rasters, or polygon layers as the analyst edited
them: ``inputs``) are brought onto one grid over the ground all of them cover (``grid``), compared
strip by strip (``compute``), and written as a transition raster (``from x N + to``, styled, its
legend ``tailings -> background``), change polygons, CSV tables, ``summary.json`` (``products``)
and a self-contained HTML report with its figures as PNG (``report``).  Areas are true hectares in
any CRS; no data is never change.  Change is certain or uncertain (``doubt``: either year's run
below 70 % confident, or within 32 px of the edge of the raster it segmented), uncertain change
with its own code, rows and words; a facility with no compared ground is "not covered".  The options are declared once (:data:`CHANGE_OPTIONS`): the
command line (``python -m inference change``) and Processing take them from there.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from osgeo import gdal

from .. import provenance
from ..areas import hectares
from ..errors import InputError, OptionError, OutputError
from ..model.metadata import DEFAULT_COLOURS
from ..run.options import Option
from ..input.tables import open_vector
from . import compute, doubt, grid as gridlib, products, report
from .inputs import ResultInput, assign_years, check_classes, open_input

CHANGE_OPTIONS = (
    Option("years", "text", "Years", "the results' years, in the order given, e.g. 2019,2021 (default: those the "
           "results record, TM_DATE)", fronts=("cli", "processing"), advanced=False),
    Option("facilities", "text", "Facilities", "polygons (any OGR format and CRS) that split every figure per "
           "facility, e.g. a dam registry buffered", fronts=("cli", "processing"), advanced=False),
    Option("facility_field", "text", "Facility id field", "the facilities' id field", fronts=("cli", "processing"),
           advanced=False),
    Option("prefix", "text", "Output name", "the outputs' name stem (default: change)", fronts=("cli",)),
    Option("overwrite", "bool", "Overwrite", "replace existing outputs", default=False, flag=True, fronts=("cli",)),
)


@dataclass(frozen=True)
class ChangeOptions:
    years: Optional[Tuple[str, ...]] = None
    facilities: Optional[str] = None
    facility_field: Optional[str] = None
    prefix: str = "change"
    overwrite: bool = False


def options_from_texts(texts: Dict[str, Optional[str]]) -> ChangeOptions:
    """Options from their text forms (the command line's, Processing's)."""
    kw = {}
    for o in CHANGE_OPTIONS:
        v = o.parse(texts.get(o.name))
        if v is not None:
            kw[o.name] = v
    if "years" in kw:
        kw["years"] = tuple(y.strip() for y in kw["years"].split(",") if y.strip())
    opts = ChangeOptions(**kw)
    if opts.facilities and not opts.facility_field:
        raise OptionError("give the facilities' id field (--facility-field)", "facility_field")
    return opts


@dataclass(frozen=True)
class ChangePlan:
    inputs: Tuple[ResultInput, ...]    # ordered by year
    years: Tuple[str, ...]
    classes: Dict[int, str]
    colours: Dict[int, str]
    grid: gridlib.Grid
    common_wkt: str
    options: ChangeOptions
    out_dir: str
    outputs: Dict[str, str]


@dataclass
class ChangeResult:
    plan: ChangePlan
    outputs: Dict[str, str]
    summary: Dict
    polygons: int
    warnings: List[str] = field(default_factory=list)


def _colours(inputs: Sequence[ResultInput], classes: Dict[int, str]) -> Dict[int, str]:
    out = {k: DEFAULT_COLOURS[k % len(DEFAULT_COLOURS)] for k in classes}
    ref = next((i.path if i.kind == "raster" else i.raster for i in inputs if i.kind == "raster" or i.raster), None)
    if ref:
        ds = gdal.Open(ref)
        ct = ds.GetRasterBand(1).GetRasterColorTable()
        if ct is not None:
            for k in classes:
                if k < ct.GetCount():
                    r, g, b = ct.GetColorEntry(k)[:3]
                    out[k] = "#%02x%02x%02x" % (r, g, b)
        ds = None
    return out


def output_names(out_dir: str, prefix: str) -> Dict[str, str]:
    j = lambda s: os.path.join(out_dir, s)   # noqa: E731
    return {"transitions": j(prefix + "_transitions.tif"), "transitions_style": j(prefix + "_transitions.qml"),
            "polygons": j(prefix + "_polygons.gpkg"), "class_areas": j(prefix + "_class_areas.csv"),
            "transition_table": j(prefix + "_transitions.csv"), "change_by_class": j(prefix + "_change_by_class.csv"),
            "report": j(prefix + "_report.html"), "map": j(prefix + "_map.png"),
            "areas_png": j(prefix + "_class_areas.png"), "series_png": j(prefix + "_series.png"),
            "summary": j("summary.json")}


def plan_change(results: Sequence[str], opts: Optional[ChangeOptions] = None, out_dir: Optional[str] = None) -> ChangePlan:
    """Check the results and decide the grid (nothing is written); an error names what is wrong."""
    opts = opts or ChangeOptions()
    if len(results) < 2:
        raise InputError("a change map compares two or more results, got %d" % len(results))
    inputs = [open_input(r) for r in results]
    years = assign_years(inputs, opts.years)
    classes = check_classes(inputs)
    order = sorted(range(len(inputs)), key=lambda k: years[k])
    grid, common = gridlib.common_grid(inputs)
    if opts.facilities:
        open_vector(opts.facilities.split("|")[0], "the facilities")   # (an error names a missing or damaged file)
    outputs = output_names(out_dir, opts.prefix) if out_dir else {}
    if outputs and not opts.overwrite:
        taken = [os.path.basename(p) for p in outputs.values() if os.path.exists(p)]
        if taken:
            raise OutputError("output exists: %s (choose another folder or name, or allow overwriting)"
                              % ", ".join(taken))
    return ChangePlan(tuple(inputs[k] for k in order), tuple(years[k] for k in order), classes,
                      _colours(inputs, classes), grid, common.ExportToWkt(), opts, out_dir, outputs)


def run_change(p: ChangePlan, progress: Optional[Callable[[float, str], None]] = None,
               cancel: Optional[Callable[[], bool]] = None) -> ChangeResult:
    """Write the change products (under temporary names, renamed when all are complete)."""
    progress = progress or (lambda f, m: None)
    cancel = cancel or (lambda: False)
    if not p.out_dir:
        raise OutputError("the plan has no output folder")
    os.makedirs(p.out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="tm-change-")
    stage = os.path.join(p.out_dir, ".tm-change-%s" % uuid.uuid4().hex[:8])
    os.makedirs(stage)
    try:
        progress(0.02, "bringing the results onto one grid")
        sources, warnings = [], []
        for k, inp in enumerate(p.inputs):
            if inp.kind == "raster":
                cls_k, mask_k = gridlib.warp_onto(inp.path, p.grid, os.path.join(work, "y%d.vrt" % k)), None
            else:
                cls_k = gridlib.burn_polygons(inp, p.grid, os.path.join(work, "y%d.tif" % k))
                mask_k = gridlib.sibling_mask(inp, p.grid, os.path.join(work, "m%d.vrt" % k))
            doubt_k = None
            if k in (0, len(p.inputs) - 1):   # (the transitions are first -> last)
                ev = doubt.evidence(inp.path if inp.kind == "raster" else inp.raster)
                w = doubt.warnings_for(inp.label, ev)
                if w:
                    warnings.append(w)
                own = doubt.doubt_raster(ev, os.path.join(work, "d%d.tif" % k))
                if own:
                    doubt_k = gridlib.warp_onto(own, p.grid, os.path.join(work, "d%d.vrt" % k))
            sources.append((cls_k, mask_k, doubt_k))
        edges = None
        if sources[0][2] and sources[-1][2]:
            edges = doubt.own_edges(sources[0][2], sources[-1][2], (p.grid.width, p.grid.height),
                                    os.path.join(work, "edges.tif"))
        from osgeo import ogr
        common = gridlib.burn_common(ogr.CreateGeometryFromWkt(p.common_wkt), p.grid, os.path.join(work, "common.tif"))
        fac, ids = None, []
        if p.options.facilities:
            fac, ids = gridlib.burn_facilities(p.options.facilities, p.options.facility_field, p.grid,
                                               os.path.join(work, "facilities.tif"))
        n = len(p.classes)
        staged = {k: os.path.join(stage, os.path.basename(v)) for k, v in p.outputs.items()}
        meta = {**products.code_text(n), provenance.YEARS: ",".join(p.years), **provenance.class_table(p.classes)}
        counts = compute.compute(p.grid, n, sources, common, fac, len(ids), staged["transitions"], meta, progress, cancel,
                                 edges)
        if counts.pixels == 0:
            raise InputError("no pixel has data in every year: nothing can be compared (the common ground is %.2f "
                             "ha, all of it no data or masked in some year)" % hectares(counts.common_m2))
        products.label_raster(staged["transitions"], p.classes, p.colours)
        progress(0.75, "change polygons")
        npoly = products.change_polygons(staged["transitions"], fac, ids, p.grid, p.classes, p.years,
                                         staged["polygons"], os.path.splitext(os.path.basename(p.outputs["polygons"]))[0],
                                         cancel)
        if cancel():
            raise _cancelled()
        progress(0.9, "tables and report")
        stem = p.options.prefix
        products.tables(counts, p.classes, p.years, ids, stage, stem)
        summ = products.summary(counts, p.classes, p.years, ids, p.grid.describe())
        products.write_json(staged["summary"], summ)
        pics = {"map": report.map_png(staged["transitions"], p.classes, p.colours, staged["map"])}
        pics.update(report.charts(counts, p.classes, p.colours, p.years, ids, stage, stem))
        final = {k: v for k, v in p.outputs.items()
                 if k not in ("areas_png", "series_png") or ("areas" if k == "areas_png" else "series") in pics}
        report.html_report(staged["report"], counts, p.classes, p.colours, p.years, [i.label for i in p.inputs],
                           ids, p.grid.describe(), pics, final)
        for k, dest in final.items():
            src = staged[k]
            if os.path.exists(dest):
                os.remove(dest)
            os.replace(src, dest)
            if os.path.exists(src + ".aux.xml"):
                os.replace(src + ".aux.xml", dest + ".aux.xml")
        progress(1.0, "done")
        if counts.nodata_m2 > 0.5 * counts.common_m2:
            warnings.append("%.0f %% of the common ground is no data in some year: the figures cover the rest only"
                            % (100 * counts.nodata_m2 / counts.common_m2))
        return ChangeResult(p, final, summ, npoly, warnings)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(stage, ignore_errors=True)


def _cancelled():
    from ..errors import Cancelled
    return Cancelled("cancelled")


def change(results: Sequence[str], out_dir: str, opts: Optional[ChangeOptions] = None, progress=None, cancel=None):
    """``run_change(plan_change(results, opts, out_dir))``."""
    return run_change(plan_change(results, opts, out_dir), progress, cancel)
