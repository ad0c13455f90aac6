"""A run's main step: the plan streamed into its class and confidence rasters, on the source grid.

Opens the working grid (the cloud mask's classification on it), reads the first strip while the
network finishes loading, and runs the :class:`~stream.Stream` into two GeoTIFF writers.  When
the results are on the source grid already (no resampling) and the run writes polygons, the
classes are sieved on the writer thread as their rows come (``sieve.StreamSieve``) and the
sieved rows polygonised on worker threads (``polygons.BandPolygonizer``); else the results,
written on the working grid, are resampled onto the source grid.  A multilabel result is sieved
label by label afterwards (``output.regions.postprocess``: ``sieve.sieve_result``).

:func:`stream_rasters` runs the cloud mask's sub-plan (ukis-csmask's network) first, the same way, into
the run's scratch folder.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

from .. import provenance
from ..errors import Cancelled, InputError
from .likeness import DistanceGrid
from .ood import TileLog
from .planning import Plan
from ..output.polygons import BandPolygonizer
from .stream import Stream, StreamStats
from .strips import StripReader
from ..output.sieve import streaming_regions
from .work_grid import WorkGrid, open_grid
from ..output.writing import NODATA_CLASS, NODATA_CONF, STAGES, GeoTiffWriter, failing_quietly, results_to_source_grid


@dataclass
class Rasters:
    """What streaming wrote: the class and confidence rasters (on the working grid when the plan
    resamples: scratch files), the stream's counts, the grid, the scored tiles, the training
    tailings' distances, and the polygoniser fed while streaming (or None)."""
    classes: str
    confidence: str
    stats: StreamStats
    grid: WorkGrid
    session: object
    tile_log: Optional[TileLog]
    distances: Optional[DistanceGrid]
    polygons: Optional[BandPolygonizer]
    meta: Dict[str, str]                   # what the rasters record (``execute.run_metadata``, classes, layout)
    device: Dict[str, str]                 # where the network ran and why (``provenance.device_record``)


def stream_rasters(p: Plan, loading: Future, out: Mapping[str, str], workdir: str, meta: Dict[str, str],
                   progress, cancel) -> Rasters:
    """Stream ``p`` into its rasters, on the source grid: ``out``'s classes, confidence (else a
    scratch file) and, when it names polygons, the polygoniser fed while streaming; ``workdir``:
    the scratch folder; ``loading``: the session, being created; ``meta``: what the rasters
    record (``execute.run_metadata``: the device is added here, and the classes).  The cloud
    mask's classification comes first: the scene classification itself, or the classes
    ukis-csmask's network gives the same window (:attr:`Plan.mask_plan`, streamed the same way
    into ``workdir``)."""
    mask_raster = p.mask.path if p.mask is not None else None
    if p.mask_plan is not None:
        sub = p.mask_plan
        sub_loading = Future()
        sub_loading.set_result(sub.session())
        mask_raster = stream_rasters(sub, sub_loading, {"classes": os.path.join(workdir, "csmask_classes.tif")},
                                     tempfile.mkdtemp(prefix="csmask-", dir=workdir), {},
                                     lambda f, m: progress(0.1 * f, "cloud mask: " + m), cancel).classes
    grid = open_grid(p, workdir, mask_raster)
    read = StripReader(p, grid)
    read.first()
    with STAGES("load network"):   # (what is left of it)
        session = loading.result()
    names = {c.id: c.name for c in p.out_classes}
    device = provenance.device_record(session)
    meta = dict(meta, **device)
    colours = {c.id: c.color for c in p.out_classes}
    conf_out = out.get("confidence") or os.path.join(workdir, "conf.tif")
    cls_path = os.path.join(workdir, "classes_work.tif") if p.resample else out["classes"]
    conf_path = os.path.join(workdir, "conf_work.tif") if p.resample else conf_out
    labels = p.label_bands
    writers: List[GeoTiffWriter] = []   # the class and confidence rasters' (made once the stream is set up)
    sieve = polygons = None
    if not p.resample and out.get("polygons") and not labels:
        sieve, polygons = streaming_regions(p, lambda rows, y: writers[0].write(rows, y), grid.width, grid.height,
                                            grid.gt, workdir)

    def write(cls, conf, y):
        if sieve is not None:
            sieve.push(cls, y)
        else:
            writers[0].write(cls, y)
        writers[1].write(conf, y)

    tile_log = TileLog(p.ood) if p.ood is not None else None
    distances = None
    if p.likeness is not None:   # (Plan.session asks for its feature)
        distances = DistanceGrid(p.likeness, grid.width, grid.height, session.extra_outputs.index(p.likeness.feature))
    try:
        writers.append(GeoTiffWriter(cls_path, grid.width, grid.height, grid.gt, grid.wkt, NODATA_CLASS, colours,
                                     names, meta, compress=None if p.resample else p.codec, labels=labels,
                                     threads=p.gdal.threads))
        writers.append(GeoTiffWriter(conf_path, grid.width, grid.height, grid.gt, grid.wkt, NODATA_CONF,
                                     meta=dict(meta, **{provenance.CONTENT: "probability of the assigned class, percent"}),
                                     compress=None if p.resample or out.get("confidence") is None else p.codec,
                                     labels=[(n, None) for n, _ in labels] if labels else None, threads=p.gdal.threads))
        with STAGES("stream (wall)"):
            stats = Stream(p, grid, session, read, write, progress, cancel, tile_log=tile_log, likeness=distances,
                           finish=sieve.close if sieve is not None else None).run()
        grid.ds = None
        for w in writers:
            w.close()
        if stats.valid_pixels == 0 and not stats.masked:
            if p.aoi:
                raise InputError("%s holds no valid pixels inside the area of interest" % p.input)
            raise InputError("%s holds no valid pixels in the bands the model reads (all nodata)" % p.input)
        if cancel():
            raise Cancelled("cancelled")
    except BaseException:
        if polygons is not None:
            polygons.close()
        raise
    finally:
        for w in writers:   # (a failed run's: closed before its files are removed)
            with contextlib.suppress(RuntimeError), failing_quietly():
                w.close()
    rasters = Rasters(cls_path, conf_path, stats, grid, session, tile_log, distances, polygons, meta, device)
    if p.resample:
        progress(0.87, "resampling results onto the source grid")
        results_to_source_grid(p, rasters, out["classes"], conf_out)
    return rasters
