"""Running a plan: ``execute(plan, progress, cancel)`` -> :class:`SegmentResult`.

The steps, in order: load the network (the model's session for the plan's device; on a thread
of its own while the working grid is opened and its first strip read), stream it (read / infer / blend / classify, ``stream``) into the class and
confidence rasters, bring them back onto the source grid when inference ran at another GSD,
remove small regions and polygonise (``vectorize``), and rename the staged outputs to their
final names.  A cancelled or failed run removes what it wrote.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import os
import shutil
import tempfile
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Dict, Optional, Tuple

from . import locks, report, sizing, stream, styles
from .errors import Cancelled, InputError, OutputError
from .likeness import DistanceGrid, mark_layer
from .masks import MASK_CLASSES
from .ood import TileLog, boxes_wkt, warning as ood_warning
from .metadata import ModelInfo
from .output_names import make_output_folder
from .planning import Plan, plan
from .geotiff import codec
from .polygonize import BandPolygonizer
from .vectorize import StreamSieve, foreground, postprocess, sieve_threshold_px, two_classes, write_tiles_layer
from .writing import (NODATA_CLASS, NODATA_CONF, STAGES, GeoTiffWriter, StagedOutputs, block_cache_at_least,
                      disk_error, failing_quietly, to_source_grid)


@dataclass(frozen=True)
class SegmentResult:
    class_raster: str
    confidence_raster: Optional[str]
    polygons: Optional[str]
    layer_name: Optional[str]              # the polygon layer inside its GeoPackage
    device: str                            # "cpu" or "cuda": what onnxruntime ran on
    provider_reason: str
    seconds: float
    stats: Dict[int, Dict[str, object]]    # class id -> {name, count (None without polygons), area_ha}
    notes: Tuple[str, ...]
    model: ModelInfo
    valid_pixels: int = 0
    tiles: int = 0
    warnings: Tuple[str, ...] = ()
    masked_ha: Dict[str, float] = field(default_factory=dict)   # cloud, cloud shadow...: hectares
    masked_fraction: float = 0.0           # of the pixels with data: masked before segmenting
    flagged_fraction: float = 0.0          # of the segmented pixels: in a class that gets polygons
    reliability: Dict[str, object] = field(default_factory=dict)   # ood.TileLog.summary(), when checked
    tiles_layer: Optional[str] = None      # the GeoPackage layer of scored tiles (beside the polygons)
    report: Optional[str] = None           # <stem>_report.json (``inference.report``)
    marks: Dict[str, object] = field(default_factory=dict)   # regions marked for review (likeness.mark_layer)


def execute(p: Plan, progress: Optional[stream.ProgressFn] = None,
            cancel: Optional[stream.CancelFn] = None, scratch: Optional[str] = None) -> SegmentResult:
    """Run ``p`` (a plan with an output folder); raise :class:`~inference.errors.TailingsError`.
    ``scratch``: the folder to make the run's scratch folder in (default: TMPDIR, else the system's)."""
    if not p.outputs:
        raise OutputError("the plan has no output folder: plan it with out_dir to run it")
    progress = progress or (lambda f, m: None)
    cancel = cancel or (lambda: False)
    t0 = time.time()
    progress(0.0, "loading model")
    # The network loads on a thread of its own while the run opens the raster and reads its first strip.
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tm-load")
    loading = loader.submit(p.session)
    loader.shutdown(wait=False)
    created = not os.path.isdir(p.out_dir)
    make_output_folder(p.out_dir)
    staged = workdir = None
    try:
        staged = StagedOutputs(p.outputs, p.options.overwrite, p.options.unique_names)
        workdir = scratch_folder(scratch)
        with block_cache_at_least(p.block_cache_bytes):
            stats, streamed, run_time = _run(p, loading, staged, workdir, progress, cancel)
        res = _result(p, loading.result(), staged, stats, streamed, t0)
        report.write(staged.get("report"), report.build(p, res, staged.final, run_time))
        if cancel():   # (asked for at the last moment: nothing committed)
            raise Cancelled("cancelled")
        staged.commit()
        sizing.record_speed(p, res.device, streamed.tiles, streamed.seconds)   # the next plan's time estimate
    except BaseException as e:
        # The failed run's frames (kept alive by the traceback) still hold GDAL datasets open;
        # closed later, they would write a .aux.xml or a GeoPackage journal back into the output
        # folder after the removal below.  Release them first (the free space measured before).
        full = None if isinstance(e, OutputError) else _disk_error(e, p.out_dir, workdir, staged)
        with failing_quietly():
            traceback.clear_frames(e.__traceback__)
            gc.collect()
        if staged is not None:
            staged.discard()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        if created:   # the folder the run made, when nothing else came into it meanwhile
            with contextlib.suppress(OSError):
                os.rmdir(p.out_dir)
        if full is not None:
            raise full from None
        raise
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        STAGES.add("run (wall)", time.time() - t0)
        STAGES.dump()
    progress(1.0, "done")
    return res


def scratch_folder(base: Optional[str] = None) -> str:
    """A new scratch folder for a run (``tm-run-*``, ``locks.scratch_prefix``) in ``base``, else in
    TMPDIR when it is set, else in the system's temporary folder; an :class:`OutputError` naming
    it when it cannot be made there.  The scratch folders of killed runs are removed first."""
    base = base or os.environ.get("TMPDIR") or None
    locks.sweep_scratch(base or tempfile.gettempdir())   # (what killed runs left there)
    try:
        return tempfile.mkdtemp(prefix=locks.scratch_prefix(), dir=base)
    except OSError as e:
        where = ("%s (TMPDIR)" % base if base == os.environ.get("TMPDIR") else base) if base else tempfile.gettempdir()
        raise OutputError("cannot make the run's scratch folder in %s: %s; set TMPDIR to a writable folder with "
                          "free space" % (where, e.strerror or e)) from None


def _disk_error(e: BaseException, out_dir: str, workdir: Optional[str],
                staged: Optional[StagedOutputs]) -> Optional[OutputError]:
    """A write that failed under the outputs or the scratch folder, said as such (``writing.disk_error``:
    a full disk, a file size limit); None for other errors."""
    if not isinstance(e, (OSError, RuntimeError)):
        return None
    files = list(staged.tmp.values()) if staged is not None else []
    for root, _, names in os.walk(workdir) if workdir else ():
        files.extend(os.path.join(root, n) for n in names)
    scratch = (os.path.dirname(workdir), " (TMPDIR, the run's scratch space)") if workdir else None
    text = "%s %s" % (e, getattr(e, "filename", "") or "")
    if scratch and workdir in text:   # (polygon scratch is inside the run's folder too)
        return disk_error(e, [scratch], files)
    return disk_error(e, [(out_dir, "")] + ([scratch] if scratch else []), files)


def _result(p: Plan, session, staged: StagedOutputs, stats, streamed, t0: float) -> SegmentResult:
    """What the run found, under the outputs' final names."""
    out = staged.final
    masked_ha, masked_fraction, flagged_fraction, warnings = _findings(p, stats, streamed)
    reliability = streamed.tile_log.summary() if streamed.tile_log is not None else {}
    if reliability:
        w = ood_warning(reliability)
        if w:
            warnings.append(w)
    tiles_layer = (staged.layer_name.replace("_polygons", "") + "_tiles"
                   if streamed.tile_log is not None and out.get("polygons") else None)
    return SegmentResult(class_raster=out["classes"], confidence_raster=out.get("confidence"),
                         polygons=out.get("polygons"), layer_name=staged.layer_name, device=session.device,
                         provider_reason=session.reason, seconds=time.time() - t0, stats=stats,
                         notes=p.notes + tuple(staged.notes),
                         model=p.info, valid_pixels=streamed.valid_pixels, tiles=streamed.tiles,
                         warnings=p.warnings + tuple(warnings), masked_ha=masked_ha,
                         masked_fraction=masked_fraction, flagged_fraction=flagged_fraction,
                         reliability=reliability, tiles_layer=tiles_layer, report=out.get("report"),
                         marks=streamed.marks or {})


def _findings(p: Plan, stats, streamed) -> Tuple[Dict[str, float], float, float, list]:
    """Masked area per kind, the masked and flagged fractions, and what they warn of."""
    from .masks import summary
    px_m2 = p.work_gsd_m ** 2
    masked_px = sum(streamed.masked.values())
    total = streamed.valid_pixels + masked_px
    flagged_ha = sum(float(s["area_ha"]) for s in stats.values())
    valid_ha = streamed.valid_pixels * px_m2 / 1e4
    warnings = []
    masked_fraction = masked_px / total if total else 0.0
    if streamed.valid_pixels == 0:
        warnings.append("the whole area is masked (cloud, shadow or defective): nothing could be segmented")
    elif masked_fraction > 0.5:
        warnings.append("%.0f %% of the area is masked (cloud, shadow or defective): the map covers the rest only"
                        % (100 * masked_fraction))
    return (summary(streamed.masked, px_m2), masked_fraction,
            min(1.0, flagged_ha / valid_ha) if valid_ha else 0.0, warnings)


def segment(input_path: str, model, out_dir: str, opts=None, progress=None, cancel=None) -> SegmentResult:
    """``execute(plan(input_path, model, opts, out_dir), progress, cancel)``."""
    return execute(plan(input_path, model, opts, out_dir), progress, cancel)


def run_metadata(p: Plan, session, run_time: str) -> Dict[str, str]:
    """What the result rasters record about the run (``provenance.run_record`` and the class names)."""
    from . import provenance
    return dict(provenance.run_record(p, run_time, session.device, session.reason),
                **provenance.class_table(p.info.class_names()))


LABEL_LAYOUT = ("multilabel: band 1 the most probable label class present (0 none), then one band per label "
                "class (1 present, 0 absent), in id order")


def label_bands(info: ModelInfo):
    """A multilabel model's label bands, ``[(name, colour)]`` (None for other models)."""
    return [(c.name, c.color) for c in info.label_classes()] if info.task == "multilabel" else None


def _mask_raster(p: Plan, workdir: str, progress, cancel) -> Optional[str]:
    """The classification the plan's mask reads: the scene classification itself, or the classes
    ukis-csmask's network gives the same window (a run of this engine, at 30 m)."""
    if p.mask is None:
        return None
    if p.mask.kind == "scl":
        return p.mask.path
    from .masks import csmask_info
    from .model import Model
    net = Model(p.mask.path, csmask_info(p.mask), os.path.getmtime(p.mask.path))
    g, (c0, r0, w0, h0) = p.raster.geotransform, p.window
    extent = (g[0] + g[1] * c0, g[3] + g[5] * (r0 + h0), g[0] + g[1] * (c0 + w0), g[3] + g[5] * r0)
    opts = replace(p.options, bands=dict(zip(net.info.bands, p.mask.bands)), preset=None, tile_size=None,
                   overlap=None, threshold=None, tta=1, scales=(1.0,), min_area_ha=0.0, polygons=False,
                   confidence=False, overwrite=True, unique_names=False, prefix="csmask", extent=extent, aoi=None,
                   cloud_mask="off", date=None)
    res = execute(plan(p.input, net, opts, workdir), lambda f, m: progress(0.1 * f, "cloud mask: " + m), cancel)
    return res.class_raster


def _run(p: Plan, loading: Future, staged: StagedOutputs, workdir: str, progress, cancel):
    """Stream, write and polygonise the plan's outputs; ``loading``: the session, being created."""
    info = p.info
    grid = stream.open_grid(p, workdir, _mask_raster(p, workdir, progress, cancel))
    read = stream.StripReader(p, grid)
    read.first()
    with STAGES("load network"):   # (what is left of it)
        session = loading.result()
    classes = list(info.classes) + (list(MASK_CLASSES) if p.mask is not None else [])
    names = {c.id: c.name for c in classes}
    colours = {c.id: c.color for c in classes}
    run_time = _dt.datetime.now().replace(microsecond=0).isoformat()
    meta = dict(run_metadata(p, session, run_time), **{"CLASS_%d" % c.id: c.name for c in classes})
    classes_out = staged.get("classes")
    conf_out = staged.get("confidence") or os.path.join(workdir, "conf.tif")
    if p.resample:  # results on the working grid first: uncompressed scratch files
        cls_path, conf_path = os.path.join(workdir, "classes_work.tif"), os.path.join(workdir, "conf_work.tif")
    else:
        cls_path, conf_path = classes_out, conf_out
    W, H, gt, wkt = grid.width, grid.height, grid.gt, grid.wkt
    labels = label_bands(info)
    if labels:
        meta["TM_LAYOUT"] = LABEL_LAYOUT
    out_codec = codec(p.options.compression)
    cls_w = GeoTiffWriter(cls_path, W, H, gt, wkt, NODATA_CLASS, colours, names, meta,
                          compress=None if p.resample else out_codec, labels=labels, threads=grid.gdal_threads)
    conf_w = GeoTiffWriter(conf_path, W, H, gt, wkt, NODATA_CONF,
                           meta=dict(meta, TM_CONTENT="probability of the assigned class, percent"),
                           compress=None if p.resample or staged.get("confidence") is None else out_codec,
                           labels=[(n, None) for n, _ in labels] if labels else None, threads=grid.gdal_threads)
    # Without resampling, the output grid is the working grid: sieve while streaming, on the
    # writer thread, and polygonise the sieved bands on worker threads as they come (see
    # vectorize.StreamSieve, polygonize.BandPolygonizer).  (A multilabel result is sieved label
    # by label afterwards.)
    sieve = polygons = None
    if not p.resample and staged.get("polygons") and not labels:
        bg = info.background_ids()
        polygons = BandPolygonizer(W, H, gt, tempfile.mkdtemp(prefix="poly-", dir=workdir))

        def emit(rows, y):
            cls_w.write(rows, y)
            with STAGES("foreground mask"):
                fg = foreground(rows, bg)
            polygons.push(rows, fg, y)
        thr = sieve_threshold_px(p)
        # the last band no longer than the last strip and its margin: less to sieve at the end
        sieve = StreamSieve(emit, W, H, thr, NODATA_CLASS, tail=p.tile_size + thr, two_classes=two_classes(info))

    def write(cls, conf, y):
        if sieve is not None:
            sieve.push(cls, y)
        else:
            cls_w.write(cls, y)
        conf_w.write(conf, y)

    K = info.channels
    network = stream.TileNetwork(p, session, K, cancel)
    tile_log = TileLog(p.ood) if p.ood is not None else None
    distances = None
    if p.likeness is not None:   # (Plan.session asks for its feature)
        distances = DistanceGrid(p.likeness, W, H, session.extra_outputs.index(p.likeness.feature))
    try:
        with STAGES("stream (wall)"):
            streamed = stream.run(p, grid, network, session.fixed_batch or p.batch, write, progress, cancel,
                                  stream.io_threads(session.device), finish=sieve.close if sieve is not None else None,
                                  span=(0.1 if p.mask is not None and p.mask.kind == "csmask" else 0.0, 0.85),
                                  tile_log=tile_log, read=read, likeness=distances)
        streamed.tile_log = tile_log
        streamed.grid_gt = grid.gt
        grid.ds = None
        cls_w.close()
        conf_w.close()
        if streamed.valid_pixels == 0 and not streamed.masked:
            if p.aoi:
                raise InputError("%s holds no valid pixels inside the area of interest" % p.input)
            raise InputError("%s holds no valid pixels in the bands the model reads (all nodata)" % p.input)
        if cancel():
            raise Cancelled("cancelled")
        if p.resample:
            progress(0.87, "resampling results onto the source grid")
            w0, h0 = grid.view_size
            to_source_grid(cls_path, classes_out, grid.view_gt, w0, h0, wkt, colours, names, meta, labels, out_codec)
            to_source_grid(conf_path, conf_out, grid.view_gt, w0, h0, wkt, None, None, meta,
                           [(n, None) for n, _ in labels] if labels else None, out_codec)
        progress(0.9, "removing regions under the minimum area and polygonising")
        with STAGES("regions (wall)"):
            stats = postprocess(p, classes_out, conf_out, staged.get("polygons"), staged.layer_name, run_time,
                                cancel, polygonizer=polygons, workdir=workdir)
    finally:
        if polygons is not None:
            polygons.close()
        for w in (cls_w, conf_w):   # (a failed run's: closed before its files are removed)
            with contextlib.suppress(RuntimeError), failing_quietly():
                w.close()
    if distances is not None:
        with STAGES("likeness"):
            streamed.marks = mark_layer(staged.get("polygons"), staged.layer_name, distances, gt, wkt)
    if tile_log is not None and staged.get("polygons"):
        write_tiles_layer(staged.get("polygons"), staged.layer_name.replace("_polygons", "") + "_tiles",
                          boxes_wkt(tile_log.boxes, grid.gt), grid.wkt, tile_log)
    _write(staged.get("classes_style"), styles.classes_qml(classes))
    _write(staged.get("confidence_style"), styles.confidence_qml())
    return stats, streamed, run_time


def _write(path: Optional[str], text: str) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
