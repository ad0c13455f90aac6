"""Running a plan: ``execute(plan, progress, cancel)`` -> :class:`SegmentResult`.

Every decision was made when the run was planned; ``execute`` follows the plan in named steps:
start (the network loading on a thread of its own while the working grid is opened and its
first strip read; the outputs' names reserved), the cloud mask (csmask's sub-plan, run as a
step), the stream into the class and confidence rasters (``segment_rasters``), back onto the
source grid when inference ran at another GSD, small regions removed and polygons written
(``output.regions``), the review marks and scored tiles beside them, the styles, the result and its
report, and the commit (the staged outputs renamed to their final names).  A cancelled or
failed run removes what it wrote.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import os
import shutil
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Optional

from .. import provenance
from ..output import report
from . import sizing
from ..output.locks import scratch_folder
from ..errors import Cancelled, OutputError
from .planning import Plan, plan
from .result import SegmentResult, result
from .review_layers import finish_layers
from .segment_rasters import stream_rasters
from ..output.staged import StagedOutputs
from .stream import CancelFn, ProgressFn
from ..output.regions import postprocess
from ..output.writing import STAGES, disk_error, failing_quietly


def execute(p: Plan, progress: Optional[ProgressFn] = None, cancel: Optional[CancelFn] = None,
            scratch: Optional[str] = None) -> SegmentResult:
    """Run ``p`` (a plan with an output folder); raise :class:`~inference.errors.TailingsError`.
    ``scratch``: the folder to make the run's scratch folder in (default: TMPDIR, else the system's)."""
    if not p.outputs:
        raise OutputError("the plan has no output folder: plan it with out_dir to run it")
    progress = progress or (lambda f, m: None)
    cancel = cancel or (lambda: False)
    t0 = time.time()
    run = start(p, progress)
    try:
        with p.gdal.run():
            staged = run.staged = StagedOutputs(p.names)   # (the folder made, the names reserved)
            run.workdir = scratch_folder(scratch)
            rasters = stream_rasters(p, run.loading, staged.tmp, run.workdir, run.meta, progress, cancel)
            progress(0.9, "removing regions under the minimum area and polygonising")
            try:
                with STAGES("regions (wall)"):
                    stats = postprocess(p, rasters.classes, rasters.confidence, staged.get("polygons"),
                                        staged.layer_name, run.time, dict(run.layer_meta, **rasters.device),
                                        cancel, rasters.polygons, run.workdir)
            finally:
                if rasters.polygons is not None:
                    rasters.polygons.close()
            marks = finish_layers(p, rasters, staged)
        res = result(p, rasters, staged, stats, marks, t0)
        report.write(staged.get("report"), report.build(p, res, staged.final, run.time))
        if cancel():   # (asked for at the last moment: nothing committed)
            raise Cancelled("cancelled")
        staged.commit()
        sizing.record_speed(p, res.device, rasters.stats.tiles, rasters.stats.seconds)   # the next plan's estimate
    except BaseException as e:
        _fail(e, p, run)
        raise
    finally:
        if run.workdir is not None:
            shutil.rmtree(run.workdir, ignore_errors=True)
        STAGES.add("run (wall)", time.time() - t0)
        STAGES.dump()
    progress(1.0, "done")
    return res


@dataclass
class Run:
    """What a run holds while its steps run: the session being created, the staged outputs, the
    scratch folder, the run's time (recorded with its outputs), whether it made the output folder."""
    loading: Future
    created: bool
    time: str
    meta: Dict[str, str]                   # what the result rasters record (``run_metadata``)
    layer_meta: Dict[str, str]             # what the polygon layer records (``provenance.layer_record``)
    staged: Optional[StagedOutputs] = None
    workdir: Optional[str] = None


def start(p: Plan, progress) -> Run:
    """Load the network on a thread of its own (while the run opens the raster and reads its first
    strip); what the run's rasters record."""
    progress(0.0, "loading model")
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tm-load")
    run_time = _dt.datetime.now().replace(microsecond=0).isoformat()
    run = Run(loader.submit(p.session), not os.path.isdir(p.out_dir), run_time, run_metadata(p, run_time),
              provenance.layer_record(p, run_time))
    loader.shutdown(wait=False)
    return run


def _fail(e: BaseException, p: Plan, run: Run) -> None:
    """A run that failed or was cancelled removes what it wrote.  The failed run's frames (kept
    alive by the traceback) still hold GDAL datasets open; closed later, they would write a
    .aux.xml or a GeoPackage journal back into the output folder after the removal below:
    released first (the free space measured before).  A full disk is said as such."""
    staged, workdir = run.staged, run.workdir
    full = None if isinstance(e, OutputError) else _disk_error(e, p.out_dir, workdir, staged)
    with failing_quietly():
        traceback.clear_frames(e.__traceback__)
        gc.collect()
    if staged is not None:
        staged.discard()
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)
    if run.created:   # the folder the run made, when nothing else came into it meanwhile
        with contextlib.suppress(OSError):
            os.rmdir(p.out_dir)
    if full is not None:
        raise full from None


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


def segment(input_path: str, model, out_dir: str, opts=None, progress=None, cancel=None) -> SegmentResult:
    """``execute(plan(input_path, model, opts, out_dir), progress, cancel)``."""
    return execute(plan(input_path, model, opts, out_dir), progress, cancel)


def run_metadata(p: Plan, run_time: str) -> Dict[str, str]:
    """What the result rasters record about the run (``provenance.raster_record``: the run's record,
    the class table and a multilabel raster's layout; the device is added when the session is
    known: ``segment_rasters``)."""
    return provenance.raster_record(p, run_time)
