"""Batch runs: many facilities, many years, one engine plan per job, on Dask.

``plan_batch(jobs, model, options, out_dir)`` checks the jobs (``jobs``), the model and the folder;
``run_batch(plan)`` runs the jobs that are not done yet (``manifest``) as tasks of Dask distributed
-- a LocalCluster of ``workers`` processes, each engine with its share of the cores, or the
cluster at ``scheduler`` -- or, with ``workers=0``, one after the other in this process (no Dask
needed: QGIS).  Each job's outputs appear whole in ``DIR/<facility>/<year>/`` (``work``); a worker
that dies is replaced and its job run again elsewhere; a job that fails is recorded and the rest
go on.  Then the results together (``results``): the time series, the summary, a chart, and the
change products between consecutive years of every facility.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Dict, List, Optional

from ..errors import Cancelled, InputError, OutputError
from ..output.locks import sweep_scratch
from ..run.options import Option, SegmentOptions
from . import results as R
from .jobs import Job, read_jobs, safe, scene_jobs
from .manifest import Checksums, Manifest, text_checksum
from .work import STAGING, failure_reason, job_folder, run_job

BATCH_OPTIONS = (
    Option("workers", "int", "Workers", "worker processes on this machine (a Dask LocalCluster; 0: the jobs one after "
           "the other in this process, without Dask)", default=1, minimum=0, fronts=("cli",)),
    Option("scheduler", "text", "Dask scheduler", "the address of a running Dask scheduler (tcp://host:8786): the "
           "jobs run on its cluster instead", fronts=("cli",)),
    Option("resume", "bool", "Resume", "continue the batch in the output folder: jobs done with the same raster, "
           "area, model and options are skipped, the others run", default=False, flag=True, fronts=("cli",)),
    Option("buffer_m", "float", "Buffer (m)", "the area around point facilities", default=0.0, minimum=0.0,
           fronts=("cli",)),
    Option("changes", "bool", "Change maps", "write the change products of every facility between consecutive years",
           default=True, cli="--no-changes", flag=False, fronts=("cli",)),
)
# The engine's options a batch passes to every job (the rest are the batch's own: the job's area,
# date, names).
JOB_OPTIONS = ("bands", "preset", "tile_size", "overlap", "batch", "device", "threshold", "tta", "scales",
               "min_area_ha", "simplify_m", "cloud_mask", "mask_snow", "ood_check", "input_scale", "input_offset",
               "calibration", "confidence", "polygons")


@dataclass(frozen=True)
class BatchPlan:
    jobs: tuple
    model: str                   # the model file
    options: Dict                # SegmentOptions fields for every job
    out_dir: str
    workers: int = 1
    scheduler: Optional[str] = None
    resume: bool = False
    changes: bool = True
    notes: tuple = ()


@dataclass
class BatchResult:
    records: List[dict]
    ran: int                      # jobs run this time (the others were done already)
    seconds: float
    outputs: Dict[str, str]
    summary: Dict
    notes: List[str] = field(default_factory=list)


def plan_batch(jobs_table: Optional[str], model, out_dir: str, options: Optional[SegmentOptions] = None,
               workers: int = 1, scheduler: Optional[str] = None, resume: bool = False, buffer_m: float = 0.0,
               facilities: Optional[str] = None, facility_field: Optional[str] = None,
               scenes: Optional[str] = None, changes: bool = True) -> BatchPlan:
    """Read and check the jobs (a table, or facilities and a folder of scenes), the model and the
    folder; nothing runs."""
    from ..model.opened import open_model
    from ..run.options import check
    notes: List[str] = []
    if jobs_table:
        jobs = read_jobs(jobs_table, buffer_m, notes)
    elif facilities and scenes:
        if not facility_field:
            raise InputError("give the facilities' id field (--facility-field)")
        jobs, notes = scene_jobs(facilities, facility_field, scenes, buffer_m)
    else:
        raise InputError("give a jobs table, or facilities (--facilities, --facility-field) and a folder of scenes "
                         "(--scenes)")
    m = open_model(model)
    opts = check(options or SegmentOptions())
    kept = {f.name: getattr(opts, f.name) for f in fields(SegmentOptions) if f.name in JOB_OPTIONS}
    if workers < 0:
        raise InputError("workers must be 0 or more")
    if scheduler and workers not in (0, 1):
        raise InputError("give either --workers (a cluster on this machine) or --scheduler (an existing one)")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutputError("%s exists and is not a folder" % out_dir)
    if not resume and os.path.isfile(os.path.join(out_dir, "manifest.json")):
        raise OutputError("%s holds a batch already: continue it with --resume, or choose another folder" % out_dir)
    if resume and os.path.isdir(out_dir):
        note = Manifest(out_dir).damage_note()
        if note:
            notes.append(note)
    return BatchPlan(tuple(jobs), m.path, kept, out_dir, workers, scheduler, resume, changes, tuple(notes))


def _inputs_checksum(job: Job, checks: Checksums, model_sum: str, opts_sum: str) -> str:
    return text_checksum([checks.of(job.raster), checks.of(job.aoi), job.aoi_wkt, job.aoi_srs, job.date, model_sum,
                          opts_sum])


def _lock(out_dir: str) -> str:
    lock = os.path.join(out_dir, ".batch.lock")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise OutputError("another batch is running in %s (or one was killed: remove %s)" % (out_dir, lock)) from None
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return lock


Progress = Callable[[int, int, int, int, float, str], None]   # done, failed, running, total, eta s, message


def run_batch(p: BatchPlan, progress: Optional[Progress] = None, cancel: Optional[Callable[[], bool]] = None,
              on_dashboard: Optional[Callable[[str], None]] = None) -> BatchResult:
    progress = progress or (lambda *a: None)
    cancel = cancel or (lambda: False)
    t0 = time.time()
    os.makedirs(p.out_dir, exist_ok=True)
    lock = _lock(p.out_dir)
    try:
        shutil.rmtree(os.path.join(p.out_dir, STAGING), ignore_errors=True)   # what a killed batch left
        scratch = os.path.join(p.out_dir, STAGING, "scratch")   # the engine's tm-run-*: removed below, always
        os.makedirs(scratch)
        manifest = Manifest(p.out_dir)
        checks = Checksums(manifest.hashes)
        model_sum, opts_sum = checks.of(p.model), text_checksum(p.options)
        todo = []
        for job in p.jobs:
            inputs = _inputs_checksum(job, checks, model_sum, opts_sum)
            if p.resume and manifest.done(job.key, inputs) and os.path.isdir(job_folder(p.out_dir, job)):
                continue
            todo.append((job, inputs))
        manifest.hashes = checks.cache
        manifest.save()
        total = len(todo)
        state = {"done": 0, "failed": 0}

        def finished(job, inputs, rec):
            rec = dict(rec, inputs=inputs, key=job.key)
            manifest.record(job.key, rec)
            manifest.save()
            state["done" if rec["state"] == "done" else "failed"] += 1
            n = state["done"] + state["failed"]
            el = time.time() - t0
            eta = el / n * (total - n) if n else 0.0
            progress(state["done"], state["failed"], min(total - n, max(1, p.workers)), total, eta,
                     "%s %s: %s" % (job.facility, job.year, rec.get("summary", "done") if rec["state"] == "done"
                                                   else "failed: %s" % rec["error"]))
        if p.workers == 0 and not p.scheduler:
            for job, inputs in todo:
                if cancel():
                    raise Cancelled("cancelled: %d of %d jobs done; --resume continues" % (state["done"], total))
                finished(job, inputs, run_job(job, p.model, p.options, p.out_dir, p.options.get("threads"), scratch))
        elif todo:
            _on_dask(p, todo, finished, cancel, on_dashboard, scratch)
        records = [manifest.jobs[j.key] for j in p.jobs if j.key in manifest.jobs]
        outputs = {"manifest": manifest.path, "timeseries": R.timeseries(os.path.join(p.out_dir, "timeseries.csv"),
                                                                           records)}
        chart = R.chart(os.path.join(p.out_dir, "area_per_facility.png"), records)
        if chart:
            outputs["chart"] = chart
        changes = R.changes(p.out_dir, records) if p.changes else {}
        seconds = time.time() - t0
        who = p.scheduler or ("%d worker process%s" % (p.workers, "es" if p.workers != 1 else "") if p.workers
                              else "this process")
        summ = R.summary(os.path.join(p.out_dir, "summary.json"), records, os.path.basename(p.model), seconds, who,
                         changes)
        outputs["summary"] = os.path.join(p.out_dir, "summary.json")
        return BatchResult(records, total, seconds, outputs, summ, list(p.notes))
    finally:
        shutil.rmtree(os.path.join(p.out_dir, STAGING), ignore_errors=True)
        os.remove(lock)


def _local_cluster(p: BatchPlan):
    """A LocalCluster of ``p.workers`` processes, Dask's scratch space in the batch's staging folder.
    Its worker processes are started with Ctrl-C ignored (they inherit that): the batch's own
    process answers it and closes them, instead of each worker printing a traceback."""
    import signal
    from distributed import LocalCluster
    ignoring = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if ignoring else None
    import dask
    try:
        with dask.config.set({"temporary-directory": os.path.join(p.out_dir, STAGING, "dask")}):
            return LocalCluster(n_workers=p.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                                silence_logs=40, preload=[__name__ + ".quiet_worker"])
    finally:
        if ignoring:
            signal.signal(signal.SIGINT, old)


def _on_dask(p: BatchPlan, todo, finished, cancel, on_dashboard, scratch: str) -> None:
    """The jobs as Dask tasks: a LocalCluster of ``p.workers`` processes (each engine with its share
    of the cores) or the scheduler's cluster; a task whose worker dies is run again elsewhere."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise InputError("batch runs with workers need Dask: pip install dask distributed (or --workers 0: one job "
                         "after the other, without it)") from None
    cluster = None
    if p.scheduler:
        client = Client(p.scheduler)
        threads = None
    else:
        cores = os.cpu_count() or 1
        cluster = _local_cluster(p)
        client = Client(cluster)
        threads = max(1, cores // p.workers)
    if on_dashboard:
        on_dashboard(client.dashboard_link)
    try:
        futs = {}
        for job, inputs in todo:
            f = client.submit(run_job, job, p.model, p.options, p.out_dir, threads, scratch, pure=False,
                              key="job-%s-%s" % (safe(job.facility), job.year))
            futs[f] = (job, inputs)
        for f in as_completed(list(futs)):
            job, inputs = futs[f]
            try:
                rec = f.result()
            except Exception as e:  # the task itself was lost (its worker died more than Dask allows), or raised
                lost = type(e).__name__ in ("KilledWorker", "CancelledError")
                rec = {"facility": job.facility, "year": job.year, "date": job.date, "raster": job.raster,
                       "state": "failed", "error": ("its worker died while running it (%s)" % failure_reason(e)) if lost
                       else "internal error on its worker: %s" % failure_reason(e)}
            finished(job, inputs, rec)
            if cancel():
                for g in futs:
                    g.cancel()
                raise Cancelled("cancelled; --resume continues")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
            sweep_scratch(tempfile.gettempdir())   # (the scratch of the jobs its workers were running)
