"""A run's main step: the plan streamed into its class and confidence rasters, on the source grid.

Opens the working grid (the cloud mask's classification on it), reads the first strip while the
network finishes loading, and runs the :class:`~stream.Stream` into two GeoTIFF writers.  When
the results are on the source grid already (no resampling) and the run writes polygons, the
classes are sieved on the writer thread as their rows come (``vectorize.StreamSieve``) and the
sieved rows polygonised on worker threads (``polygonize.BandPolygonizer``); else the results,
written on the working grid, are resampled onto the source grid.  A multilabel result is sieved
label by label afterwards (``vectorize.postprocess``).

:func:`mask_clouds` runs the cloud mask's sub-plan (ukis-csmask's network) the same way, into
the run's scratch folder.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

from . import provenance
from .errors import Cancelled, InputError
from .likeness import DistanceGrid
from .network import TileNetwork
from .ood import TileLog
from .planning import LABEL_LAYOUT, Plan
from .polygonize import BandPolygonizer
from .stream import Stream, StreamStats
from .strips import StripReader
from .vectorize import StreamSieve, foreground, two_classes
from .work_grid import WorkGrid, open_grid
from .writing import NODATA_CLASS, NODATA_CONF, STAGES, GeoTiffWriter, failing_quietly, to_source_grid


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


def mask_clouds(p: Plan, workdir: str, progress, cancel) -> Optional[str]:
    """The classification the plan's mask reads: the scene classification itself, or the classes
    ukis-csmask's network gives the same window (:attr:`Plan.mask_plan`, streamed into ``workdir``)."""
    if p.mask is None:
        return None
    sub = p.mask_plan
    if sub is None:
        return p.mask.path
    loading = Future()
    loading.set_result(sub.session())
    out = {"classes": os.path.join(workdir, "csmask_classes.tif")}
    rasters = stream_rasters(sub, loading, out, tempfile.mkdtemp(prefix="csmask-", dir=workdir), None, {},
                             lambda f, m: progress(0.1 * f, "cloud mask: " + m), cancel)
    return rasters.classes


def stream_rasters(p: Plan, loading: Future, out: Mapping[str, str], workdir: str, mask_raster: Optional[str],
                   meta: Dict[str, str], progress, cancel) -> Rasters:
    """Stream ``p`` into its rasters, on the source grid: ``out``'s classes, confidence (else a
    scratch file) and, when it names polygons, the polygoniser fed while streaming; ``workdir``:
    the scratch folder; ``loading``: the session, being created; ``meta``: what the rasters
    record (``execute.run_metadata``: the device is added here, and the classes)."""
    grid = open_grid(p, workdir, mask_raster)
    read = StripReader(p, grid)
    read.first()
    with STAGES("load network"):   # (what is left of it)
        session = loading.result()
    names = {c.id: c.name for c in p.out_classes}
    meta = dict(meta, **{provenance.DEVICE: session.device, provenance.PROVIDER_REASON: session.reason},
                **provenance.class_table(names))
    if p.label_bands:
        meta[provenance.LAYOUT] = LABEL_LAYOUT
    colours = {c.id: c.color for c in p.out_classes}
    conf_out = out.get("confidence") or os.path.join(workdir, "conf.tif")
    cls_path = os.path.join(workdir, "classes_work.tif") if p.resample else out["classes"]
    conf_path = os.path.join(workdir, "conf_work.tif") if p.resample else conf_out
    labels = p.label_bands
    cls_w = GeoTiffWriter(cls_path, grid.width, grid.height, grid.gt, grid.wkt, NODATA_CLASS, colours, names, meta,
                          compress=None if p.resample else p.codec, labels=labels, threads=p.gdal.threads)
    conf_w = GeoTiffWriter(conf_path, grid.width, grid.height, grid.gt, grid.wkt, NODATA_CONF,
                           meta=dict(meta, **{provenance.CONTENT: "probability of the assigned class, percent"}),
                           compress=None if p.resample or out.get("confidence") is None else p.codec,
                           labels=[(n, None) for n, _ in labels] if labels else None, threads=p.gdal.threads)
    sieve = polygons = None
    if not p.resample and out.get("polygons") and not labels:
        sieve, polygons = _sieve_and_polygonise(p, cls_w, grid, workdir)

    def write(cls, conf, y):
        if sieve is not None:
            sieve.push(cls, y)
        else:
            cls_w.write(cls, y)
        conf_w.write(conf, y)

    tile_log = TileLog(p.ood) if p.ood is not None else None
    distances = None
    if p.likeness is not None:   # (Plan.session asks for its feature)
        distances = DistanceGrid(p.likeness, grid.width, grid.height, session.extra_outputs.index(p.likeness.feature))
    try:
        with STAGES("stream (wall)"):
            stats = Stream(p, grid, TileNetwork(p, session, p.info.channels, cancel), read, write, progress, cancel,
                           finish=sieve.close if sieve is not None else None, tile_log=tile_log,
                           likeness=distances).run()
        grid.ds = None
        cls_w.close()
        conf_w.close()
    except BaseException:
        if polygons is not None:
            polygons.close()
        raise
    finally:
        for w in (cls_w, conf_w):   # (a failed run's: closed before its files are removed)
            with contextlib.suppress(RuntimeError), failing_quietly():
                w.close()
    if stats.valid_pixels == 0 and not stats.masked:
        if polygons is not None:
            polygons.close()
        if p.aoi:
            raise InputError("%s holds no valid pixels inside the area of interest" % p.input)
        raise InputError("%s holds no valid pixels in the bands the model reads (all nodata)" % p.input)
    rasters = Rasters(cls_path, conf_path, stats, grid, session, tile_log, distances, polygons, meta)
    if cancel():
        if polygons is not None:
            polygons.close()
        raise Cancelled("cancelled")
    if p.resample:
        progress(0.87, "resampling results onto the source grid")
        _to_source_grid(p, rasters, out["classes"], conf_out)
    return rasters


def _to_source_grid(p: Plan, rasters: Rasters, classes: str, confidence: str) -> None:
    """Results on the working grid (the plan resamples) brought back onto the source grid."""
    grid, labels, meta = rasters.grid, p.label_bands, rasters.meta
    w0, h0 = grid.view_size
    names = {c.id: c.name for c in p.out_classes}
    colours = {c.id: c.color for c in p.out_classes}
    to_source_grid(rasters.classes, classes, grid.view_gt, w0, h0, grid.wkt, colours, names, meta, labels, p.codec)
    to_source_grid(rasters.confidence, confidence, grid.view_gt, w0, h0, grid.wkt, None, None, meta,
                   [(n, None) for n, _ in labels] if labels else None, p.codec)
    rasters.classes, rasters.confidence = classes, confidence


def _sieve_and_polygonise(p: Plan, cls_w: GeoTiffWriter, grid: WorkGrid, workdir: str):
    """Without resampling, the output grid is the working grid: sieve while streaming, on the
    writer thread, and polygonise the sieved bands on worker threads as they come."""
    bg = p.info.background_ids()
    polygons = BandPolygonizer(grid.width, grid.height, grid.gt, tempfile.mkdtemp(prefix="poly-", dir=workdir))

    def emit(rows, y):
        cls_w.write(rows, y)
        with STAGES("foreground mask"):
            fg = foreground(rows, bg)
        polygons.push(rows, fg, y)
    # the last band no longer than the last strip and its margin: less to sieve at the end
    sieve = StreamSieve(emit, grid.width, grid.height, p.sieve_px, NODATA_CLASS, tail=p.tile_size + p.sieve_px,
                        two_classes=two_classes(p.info))
    return sieve, polygons
