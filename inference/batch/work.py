"""One job, where it runs (a Dask worker, or this process): the engine's plan of the job's raster
into a staging folder, renamed to ``DIR/<facility>/<year>/`` when complete -- a job's outputs are
there whole or not at all, whichever worker ran it and however often.  A job that fails is a
record of its error, not an exception: the batch goes on.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import replace
from typing import Dict, Optional

from ..errors import TailingsError
from ..output.present import headline
from ..input.tables import gdal_reason
from .jobs import Job, aoi_wkts, safe

STAGING = ".staging"
KILL_HOOK = "TM_BATCH_TEST_KILL"    # tests: "<job key>=<marker file>": the first worker to run it dies
_MODELS: Dict[str, object] = {}      # per worker process: each model opened once, its session reused


def job_folder(out_root: str, job: Job) -> str:
    return os.path.join(out_root, safe(job.facility), job.year)


def _model(path: str):
    from ..model.opened import open_model
    m = _MODELS.get(path)
    if m is None or not m.is_current():
        m = _MODELS[path] = open_model(path)
    return m


def _die_if_asked(job: Job) -> None:
    hook = os.environ.get(KILL_HOOK, "")
    if "=" in hook:
        key, marker = hook.split("=", 1)
        if key == job.key and not os.path.exists(marker):
            with open(marker, "w") as fh:
                fh.write(str(os.getpid()))
            os._exit(17)    # as a worker killed mid-job would (out of memory, node lost)


def failure_reason(e: BaseException) -> str:
    """An unexpected error's type and message (GDAL's last message when it has none: never the
    type's name alone)."""
    return "%s: %s" % (type(e).__name__, gdal_reason(e))


def _place(stage: str, final: str) -> None:
    """``stage`` becomes ``final`` in one rename (an older ``final`` moved aside first)."""
    os.makedirs(os.path.dirname(final), exist_ok=True)
    old = None
    if os.path.exists(final):
        old = final + ".old-%s" % uuid.uuid4().hex[:6]
        os.rename(final, old)
    os.rename(stage, final)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def run_job(job: Job, model_path: str, options: dict, out_root: str, threads, scratch: Optional[str] = None) -> dict:
    """Segment a job; its record: ``state`` done or failed, the areas per class, the flagged and
    masked fractions, the out-of-distribution score, the report and class raster (final paths),
    the seconds, or the error.  The run's scratch folder goes under ``scratch`` when given (the
    batch removes it whatever becomes of the worker)."""
    from ..run.execute import execute
    from ..run.options import SegmentOptions
    from ..run.planning import plan
    from ..input.raster import open_input
    t0 = time.time()
    base = {"facility": job.facility, "year": job.year, "date": job.date, "raster": job.raster, "pid": os.getpid()}
    stage = os.path.join(out_root, STAGING, "%s-%s-%s" % (safe(job.facility), job.year, uuid.uuid4().hex[:8]))
    try:
        _die_if_asked(job)
        opts = SegmentOptions(**options)
        aoi = job.aoi
        if aoi is None and job.aoi_wkt:
            aoi = tuple(aoi_wkts(job, open_input(job.raster).wkt))
        opts = replace(opts, aoi=aoi, date=job.date or job.year, prefix="%s_%s" % (safe(job.facility), job.year),
                       threads=threads, overwrite=False, unique_names=False)
        res = execute(plan(job.raster, _model(model_path), opts, stage), scratch=scratch)
        final = job_folder(out_root, job)
        _place(stage, final)
        moved = lambda p: os.path.join(final, os.path.basename(p)) if p else None   # noqa: E731
        return dict(base, state="done", seconds=round(time.time() - t0, 2),
                    areas={str(s["name"]): round(float(s["area_ha"]), 4) for s in res.stats.values()},
                    flagged_fraction=round(res.flagged_fraction, 6), masked_fraction=round(res.masked_fraction, 6),
                    ood_score=(res.reliability or {}).get("ood_score"), warnings=list(res.warnings),
                    report=moved(res.report), class_raster=moved(res.class_raster), polygons=moved(res.polygons),
                    summary=headline(res))
    except TailingsError as e:
        shutil.rmtree(stage, ignore_errors=True)
        return dict(base, state="failed", seconds=round(time.time() - t0, 2), error=str(e))
    except Exception as e:  # a bug in a job: recorded, the batch goes on
        shutil.rmtree(stage, ignore_errors=True)
        return dict(base, state="failed", seconds=round(time.time() - t0, 2),
                    error="internal error: %s" % failure_reason(e))
