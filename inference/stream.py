"""The tile stream: read a strip, infer its tiles, blend them, classify the rows that are final.

Memory stays bounded by a strip of tiles: the working raster is read one row of tiles at a
time (only the bands the model reads), tiles go to onnxruntime in batches, overlapping tile
probabilities are blended into a strip accumulator with weights that ramp across the overlap,
and rows that no later tile touches are classified (:mod:`classify`) and handed on at once; a
strip's last batch is inferred while the next strip is read and its first batch filled.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from osgeo import gdal, gdal_array

from . import aoi as aoilib
from . import raster as rasterlib
from .errors import Cancelled, InputError, ModelError, TailingsError, first_line
from .metadata import model_label
from .classify import classify
from .tiling import blend_weights, positions, rescale, tta_views
from .writing import NODATA_CONF, STAGES, gdal_threads_here

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


@dataclass
class WorkGrid:
    """The raster as the network sees it: the window of the bands the model reads, on the
    model's GSD when the source's differs (``ds`` is open for reading)."""
    ds: gdal.Dataset
    width: int
    height: int
    gt: Tuple[float, ...]
    wkt: str
    nodata: List[Optional[float]]
    floating: bool
    view_gt: Tuple[float, ...]   # the window on the source grid
    view_size: Tuple[int, int]
    mask_ds: Optional[gdal.Dataset] = None   # the mask's classification on this grid (nearest)
    mask_lut: Optional[np.ndarray] = None    # its values -> mask classes (masks.CLOUD...; 0: none)
    gdal_threads: str = "ALL_CPUS"           # GDAL's threads for the run's reads and writes


def open_grid(p, workdir: str, mask_raster: Optional[str] = None) -> WorkGrid:
    """Virtual rasters in ``workdir``: the window and bands of the source (``view.vrt``), warped
    to the model's GSD when the plan resamples (``work.vrt``); ``mask_raster`` (a scene
    classification, ``p.mask``'s values) warped onto that grid (``mask.vrt``, nearest)."""
    src = p.raster.path
    if rasterlib.is_vrt_xml(src):  # a Sentinel-2 folder's stack, built by the plan
        path = os.path.join(workdir, "s2_stack.vrt")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(src)
        src = path
    c0, r0, w0, h0 = p.window
    view = os.path.join(workdir, "view.vrt")
    gdal.Translate(view, src, format="VRT", bandList=list(p.mapping.source_bands), srcWin=[c0, r0, w0, h0])
    view_ds = gdal.Open(view)
    view_gt, wkt = view_ds.GetGeoTransform(), view_ds.GetProjection()
    work = view
    if p.resample:
        gsd = p.work_gsd_m
        gt = view_gt
        if p.raster.geographic:
            mx, my = rasterlib.metres_per_degree(gt[3] + gt[5] * h0 / 2.0)
            xres, yres = gsd / mx, gsd / my
        else:
            unit = p.raster.srs.GetLinearUnits() or 1.0
            xres = yres = gsd / unit
        work = os.path.join(workdir, "work.vrt")
        # Whole working pixels that cover the window (GDAL would round the size to the nearest
        # pixel and drop the last source rows/columns when they fill less than half of one).
        nx = max(1, int(np.ceil(w0 * abs(gt[1]) / xres - 1e-6)))
        ny = max(1, int(np.ceil(h0 * abs(gt[5]) / yres - 1e-6)))
        gdal.Warp(work, view_ds, format="VRT", xRes=xres, yRes=yres,
                  outputBounds=[gt[0], gt[3] - ny * yres, gt[0] + nx * xres, gt[3]],
                  resampleAlg="average" if gsd > p.src_gsd_m else "bilinear")
    view_ds = None
    # GeoTIFF sources take GDAL_NUM_THREADS when opened
    threads = gdal_threads_for(p)
    with gdal_threads_here(threads):
        ds = gdal.Open(work)
    nb = ds.RasterCount
    floating = any(ds.GetRasterBand(i + 1).DataType in (gdal.GDT_Float32, gdal.GDT_Float64) for i in range(nb))
    grid = WorkGrid(ds, ds.RasterXSize, ds.RasterYSize, ds.GetGeoTransform(), wkt,
                    [ds.GetRasterBand(i + 1).GetNoDataValue() for i in range(nb)], floating, view_gt, (w0, h0),
                    gdal_threads=threads)
    if mask_raster is not None:
        from .masks import lookup
        g = grid.gt
        bounds = [g[0], g[3] + g[5] * grid.height, g[0] + g[1] * grid.width, g[3]]
        mpath, first = os.path.join(workdir, "mask.vrt"), os.path.join(workdir, "mask_band1.vrt")
        try:
            gdal.Translate(first, mask_raster, format="VRT", bandList=[1])
            gdal.Warp(mpath, first, format="VRT", outputBounds=bounds, width=grid.width, height=grid.height,
                      dstSRS=wkt, resampleAlg="near", dstNodata=0, warpOptions=["SOURCE_EXTRA=2"])
            grid.mask_ds = gdal.Open(mpath)
        except RuntimeError as e:
            raise InputError("cannot read the scene classification %s: %s" % (mask_raster, first_line(e))) from None
        grid.mask_lut = lookup(p.mask.table)
    return grid


# Raster types whose values float32 holds exactly: read in their own type (half the bytes GDAL
# moves for 16-bit data) and converted while normalising, one numpy pass.
EXACT_IN_FLOAT32 = (gdal.GDT_Byte, gdal.GDT_UInt16, gdal.GDT_Int16) + (
    (gdal.GDT_Int8,) if hasattr(gdal, "GDT_Int8") else ())


class StripReader:
    """Reads one strip of tile rows and normalises it; ``valid`` marks pixels with data (not
    nodata, finite, inside the area of interest).

    Consecutive strips share the overlap's rows: those are copied from the previous strip,
    only the new rows are read (every pixel's values depend on that pixel alone).  The strips
    are written into two buffers in turn (no fresh pages to fault in for each strip): what a
    call returns stays as it is until the call after next.

    A raster of one integer type that float32 holds exactly (``exact``) can also be read as it
    is (:meth:`raw`: half the bytes of float32 for 16-bit data), each tile normalised where the
    network's batch takes it (:meth:`normalise`): the same numbers, no normalised strip."""

    def __init__(self, p, grid: WorkGrid):
        self.p, self.grid = p, grid
        self.rows = min(p.tile_size, grid.height)
        self.a = np.array([t[0] for t in p.transform], np.float32)[:, None, None]
        self.b = np.array([t[1] for t in p.transform], np.float32)[:, None, None]
        self._offset = bool(self.b.any())   # (x + 0.0 is x: no pass for it)
        self.aoi = aoilib.Mask(p.aoi, grid.wkt) if p.aoi else None
        types = {grid.ds.GetRasterBand(i + 1).DataType for i in range(grid.ds.RasterCount)}
        self.exact = len(types) == 1 and types <= set(EXACT_IN_FLOAT32)   # (one type: read as it is)
        self.raw_dtype = (np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(types.pop())) if self.exact
                          else np.dtype(np.float32))
        # nodata as the raw values' own type where it is a whole number (an integer comparison)
        self._nodata = [int(v) if self.exact and v is not None and float(v).is_integer() else v
                        for v in grid.nodata]
        self._last = None   # (y, raw?, strip, valid, codes): the last strip read
        self._buffers: List[Tuple[np.ndarray, np.ndarray]] = []

    def __call__(self, y: int) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """``(normalised strip, valid, mask classes or None)`` of rows ``y..y + rows``."""
        return self._strip(y, False)

    def raw(self, y: int) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """``(strip in the raster's own type, valid, mask classes or None)`` (``exact`` rasters)."""
        return self._strip(y, True)

    def fetch(self, y: int) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """The strip as the stream reads it: rasters of one 16-bit (or 8-bit) type as they are
        (:meth:`raw`; each tile normalised as it goes into the batch: the same numbers, without a
        float32 strip), others normalised."""
        return self._strip(y, self.exact)

    def first(self) -> None:
        """Read the first strip now (asked for again, it is not read twice)."""
        self.fetch(0)

    def normalise(self, raw: np.ndarray, valid: Optional[np.ndarray], out: np.ndarray) -> None:
        """``out`` = the network's input for ``raw`` (a window of :meth:`raw`'s strip, or ``out``
        itself read as float32): raw x a + b in float32 (the same numbers as converting first);
        ``valid`` (None: all valid) zeroes the pixels without data (the network sees the training
        mean there)."""
        np.multiply(raw, self.a, out=out, dtype=np.float32)
        if self._offset:
            out += self.b
        if valid is not None and not valid.all():
            out *= valid

    def _strip(self, y: int, raw: bool):
        with STAGES("read"):
            if self._last is not None and self._last[:2] == (y, raw):   # the strip just read, again
                return self._last[2:]
            last, self._last = self._last, None
            th, w = self.rows, self.grid.width
            k = (last[0] + th - y if last is not None and last[1] == raw and last[0] < y < last[0] + th
                 else 0)   # rows shared with the last strip
            dtype = self.raw_dtype if raw else np.dtype(np.float32)
            if len(self._buffers) < 2 or self._buffers[0][0].dtype != dtype:
                strip, valid = np.empty((self.grid.ds.RasterCount, th, w), dtype), np.empty((th, w), bool)
                if len(self._buffers) == 2:
                    self._buffers.pop(0)
            else:
                strip, valid = self._buffers.pop(0)   # the one before last
            self._buffers.append((strip, valid))
            codes = None
            if k:
                _, _, pstrip, pvalid, pcodes = last
                strip[:, :k] = pstrip[:, th - k:]
                valid[:k] = pvalid[th - k:]
            new_codes = self._read(0, y + k, w, th - k, strip[:, k:], valid[k:], normalise=not raw)
            if new_codes is not None:
                codes = np.concatenate([pcodes[th - k:], new_codes]) if k else new_codes
            self._last = (y, raw, strip, valid, codes)
            return strip, valid, codes

    def window(self, x: int, y: int, w: int, th: int) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """The same as :meth:`__call__` for any window of the grid (training reads chips with it)."""
        strip = np.empty((self.grid.ds.RasterCount, th, w), np.float32)
        valid = np.empty((th, w), bool)
        codes = self._read(x, y, w, th, strip, valid, normalise=True)
        return strip, valid, codes

    def _read(self, x: int, y: int, w: int, th: int, strip: np.ndarray, valid: np.ndarray,
              normalise: bool) -> Optional[np.ndarray]:
        """Fill ``strip`` (normalised, else in the raster's own type) and ``valid`` for a window;
        return its mask classes (or None)."""
        g = self.grid
        nb = g.ds.RasterCount
        if normalise and not self.exact:
            buf = strip    # float32 from GDAL, normalised in place
        elif not normalise:
            buf = strip    # the raster's own type
        else:
            buf = np.empty((nb, th, w), self.raw_dtype)
        try:
            with gdal_threads_here(g.gdal_threads):  # decode blocks in parallel (or not: gdal_threads_for)
                raw = g.ds.ReadAsArray(x, y, w, th, buf_obj=buf)
        except RuntimeError as e:  # a truncated or corrupt file: GDAL fails on the first bad block
            raise InputError("cannot read %s: %s" % (self.p.input, first_line(e))) from None
        raw = raw.reshape(nb, th, w)
        valid[...] = True
        for i in range(nb):
            if self._nodata[i] is not None:
                valid &= raw[i] != self._nodata[i]
        if g.floating:
            valid &= np.isfinite(raw).all(axis=0)
            np.nan_to_num(raw, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        if self.aoi is not None:
            valid &= self.aoi.strip(g.gt, y, w, th, x)
        codes = None
        if g.mask_ds is not None:
            codes = g.mask_lut[g.mask_ds.GetRasterBand(1).ReadAsArray(x, y, w, th).astype(np.uint8)]
            codes[~valid] = 0           # no data stays no data
            valid &= codes == 0         # masked pixels are not segmented
        if normalise:   # (in place when the strip was read as float32)
            self.normalise(raw, valid, strip)
        return codes


def activate(out: np.ndarray, activation: str) -> np.ndarray:
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-out))
    if activation == "softmax":
        e = np.exp(out - out.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return out


def join_heads(heads, n: int) -> np.ndarray:
    """The network's outputs as one (n, K, T, T) array: an (N, T, T) output is one channel, and
    the channels of several outputs (heads) follow each other in output order."""
    arrays = [h[:n, None] if h.ndim == 3 else h[:n] for h in heads]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=1)


class TileNetwork:
    """The network on a batch of tiles: one pass, or the views of test-time augmentation at each
    scale, each mapped back and averaged; probabilities (n, K, T, T)."""

    def __init__(self, p, session, channels: int, cancel: CancelFn):
        self.p, self.sess, self.K, self.cancel = p, session.ort, channels, cancel
        self.input_name = session.input_name
        self.fixed_batch = session.fixed_batch is not None
        self.views = tta_views(p.tta)
        self.activation = p.info.activation
        self.with_features = bool(session.extra_outputs)
        self.heads = session.n_outputs
        self.features: Optional[np.ndarray] = None   # (n, C): the encoder's tile means, first pass
        self.maps: Optional[List[np.ndarray]] = None  # the extra outputs themselves (n, C, h, w), first pass

    def __call__(self, batch: np.ndarray, n: int) -> np.ndarray:
        feed = batch if self.fixed_batch else batch[:n]
        out = None
        self.features = self.maps = None
        for s in self.p.scales:
            fs = feed if s == 1.0 else np.ascontiguousarray(rescale(feed, s))
            for fwd, inv in self.views:
                if out is not None and self.cancel():  # cancel between passes too
                    raise Cancelled("cancelled")
                o = inv(activate(self._run(np.ascontiguousarray(fwd(fs)), n, features=s == 1.0 and out is None),
                                 self.activation))
                if s != 1.0:
                    o = rescale(o, s, up=True)
                if out is None:  # an array of our own (sess.run and rescale return new ones)
                    out = o
                else:
                    out += o
        passes = len(self.views) * len(self.p.scales)
        if passes > 1:
            out *= 1.0 / passes
        return out

    def _run(self, x: np.ndarray, n: int, features: bool = False) -> np.ndarray:
        ts = x.shape[-1]
        try:
            outs = self.sess.run(None, {self.input_name: x})
            o = join_heads(outs[:self.heads], n)
            if features and self.with_features:
                from .ood import tile_means
                self.maps = [np.asarray(f[:n], np.float32) for f in outs[self.heads:]]
                self.features = tile_means(self.maps[0])
        except Exception as e:  # onnxruntime's own exception types
            raise TailingsError("the network failed on tiles of %d x %d px: %s" % (ts, ts, first_line(e))) from None
        if o.shape[1] != self.K or o.shape[2] != ts or o.shape[3] != ts:
            raise TailingsError("the network returned shape %s for tiles of %d x %d; expected (N, %d, %d, %d)"
                                % (o.shape, ts, ts, self.K, ts, ts))
        if not np.isfinite(o).all():   # (a NaN map is "no tailings" everywhere: never silently; ~0.05 % of a batch)
            raise ModelError("model %s returned NaN or infinite values on tiles of %d x %d px (an fp16 export that "
                             "overflows does this): its map would mean nothing; export the model again (float32)"
                             % (model_label(self.p.info), ts, ts))
        return o.astype(np.float32, copy=False)


class Blender:
    """The strip accumulator: tile probabilities weighted by ``blend_weights`` (neighbours
    cross-fade across the overlap), rows handed out once no later tile reaches them."""

    def __init__(self, channels: int, tile: int, overlap: int, width: int, th: int, tw: int):
        self.th, self.tw = th, tw
        self.weights = blend_weights(tile, overlap)[:th, :tw]
        self.acc = np.zeros((channels, tile, width), np.float32)
        self.wsum = np.zeros((tile, width), np.float32)
        self._tmp = np.empty((channels, th, tw), np.float32)

    def add(self, probs: np.ndarray, x: int) -> None:
        th, tw = self.th, self.tw
        np.multiply(probs[:, :th, :tw], self.weights, out=self._tmp)
        self.acc[:, :th, x:x + tw] += self._tmp
        self.wsum[:th, x:x + tw] += self.weights

    def rows(self, n: int) -> Tuple[np.ndarray, np.ndarray]:
        return self.acc[:, :n], self.wsum[:n]

    def shift(self, n: int, last: bool) -> None:
        """Drop the first ``n`` rows (handed out): the rows not yet final move to the top."""
        keep = self.th - n
        if keep > 0 and not last:
            self.acc[:, :keep] = self.acc[:, n:self.th]
            self.wsum[:keep] = self.wsum[n:self.th]
        self.acc[:, keep:] = 0.0
        self.wsum[keep:] = 0.0


class Inline:
    """An executor that runs each job at once, in the calling thread."""

    def submit(self, fn, *args):
        f = Future()
        try:
            f.set_result(fn(*args))
        except BaseException as e:  # handed to whoever calls result(), like a thread pool
            f.set_exception(e)
        return f

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def gdal_threads_for(p) -> str:
    """GDAL's threads to decode and compress a run's blocks (``GDAL_NUM_THREADS`` wins): one when
    the network runs on the CPU on a thread per core -- its threads take every core while the
    strips are read and written, and GDAL's threads beside them only compete with them (on 2
    cores: the shipped model's run 0.1 s faster on one, the I/O-bound case no different) --
    else every CPU (a GPU infers, or onnxruntime leaves cores free)."""
    from .runtime import choose_providers
    cores = os.cpu_count() or 1
    on_cpu = choose_providers(p.options.device).device == "cpu"
    return "1" if on_cpu and (p.options.threads or cores) >= cores else "ALL_CPUS"


def io_threads(device: str) -> Tuple[bool, bool, bool]:
    """``(read, write, infer)``: whether reading, writing and the network run on threads of their
    own.  Reading: when the GPU infers (the CPU is free meanwhile).  Writing: there too, and on
    the CPU when there is a second core (the writer sieves, compresses and writes the finished
    rows while the main thread reads and infers; GDAL releases the GIL).  The network: always
    (the next batch is filled while the last is inferred).  ``TM_IO_THREADS``: ``1`` reading and
    writing, ``0`` neither, ``write`` the writer only; ``TM_INFER_THREAD=0``: the network inline."""
    forced = os.environ.get("TM_IO_THREADS")
    infer = os.environ.get("TM_INFER_THREAD", "1") == "1"
    if forced is not None:
        return forced == "1", forced in ("1", "write"), infer
    if device == "cuda":
        return True, True, infer
    return False, (os.cpu_count() or 1) > 1, infer


# Strips handed to the writer and not yet written: enough for the writer's longest job (the sieve
# of a band of rows, vectorize.SIEVE_BAND_ROWS) to overlap the strips read meanwhile; each holds
# its classes and confidence (2 bytes a pixel).
WRITE_QUEUE = 8
WRITE_QUEUE_BYTES = 64 * 1024 * 1024   # ... and no more than this (a wide raster's strips are large)


def write_queue_strips(width: int, stride: int) -> int:
    """Strips the writer's queue holds for strips of ``stride`` rows ``width`` px wide."""
    return max(2, min(WRITE_QUEUE, WRITE_QUEUE_BYTES // max(1, 2 * width * stride)))


@dataclass
class StreamStats:
    valid_pixels: int = 0
    tiles: int = 0        # tiles inferred (tiles without a valid pixel are skipped)
    masked: Dict[int, int] = field(default_factory=dict)   # mask class -> pixels (working grid)
    tile_log: Optional[object] = None     # ood.TileLog of the run, when it checks the scene
    marks: Optional[Dict[str, object]] = None   # regions marked for review (likeness.mark_layer), when checked
    grid_gt: Optional[Tuple[float, ...]] = None
    seconds: float = 0.0  # streaming's wall time


def run(p, grid: WorkGrid, network: TileNetwork, batch_size: int, write: Callable, progress: ProgressFn,
        cancel: CancelFn, threaded, finish: Optional[Callable] = None, span=(0.0, 0.85),
        tile_log=None, read: Optional[StripReader] = None, likeness=None) -> StreamStats:
    """Stream the grid: for each strip of tile rows, read, infer its tiles in batches, blend,
    classify the rows that are final and ``write(classes, confidence, y)`` them in order;
    ``finish()`` runs where the writes ran (the writer thread) once they are done; ``tile_log``
    (an ``ood.TileLog``) gets each inferred tile's place and scores; ``read``: the grid's
    :class:`StripReader` when the caller has one (its first strip read already); ``likeness`` (a
    ``likeness.DistanceGrid``) gets each inferred tile's deepest features (its ``output``: which of
    the session's extra outputs).  ``threaded``: whether
    reading, writing and the network run on threads of their own, ``(read, write, infer)``
    (:func:`io_threads`) or one bool for all three."""
    from .ood import out_of_range
    t0 = time.perf_counter()
    T, O = p.tile_size, p.overlap
    W, H = grid.width, grid.height
    xs, ys = positions(W, T, O), positions(H, T, O)
    th, tw = min(T, H), min(T, W)
    blend = Blender(network.K, T, O, W, th, tw)
    read = read or StripReader(p, grid)
    # (the training range in this raster's own values: its reflectance bounds through the run's scaling)
    training_range = tile_log.stats.raw_range(p.scalings) if tile_log is not None else None
    threaded_read, threaded_write, threaded_infer = _modes(threaded)
    # Two batches in turn when the network runs on a thread of its own: the next is filled while
    # the last is inferred, and queued before that one is blended, so that the network goes from
    # one to the next without waiting (a tile smaller than a batch keeps the zeros it was
    # allocated with).
    batches = [np.zeros((batch_size, grid.ds.RasterCount, T, T), np.float32) for _ in range(1 + threaded_infer)]
    batch, turn = batches[0], 0
    pending: List[int] = []   # x of the tiles in the batch
    checks: List[Tuple[float, int]] = []   # their share of out-of-range pixels and valid pixels
    inflight: List[tuple] = []   # the batches inferred or queued, oldest first: (job, its tiles' x, their checks, strip y)
    stats = StreamStats()
    total, done = len(xs) * len(ys), 0
    binary = p.info.task == "binary"
    labels = None
    if p.info.task == "multilabel":
        labels = ([c.id for c in p.info.label_classes()], p.info.label_thresholds())
        if p.options.threshold is not None:   # the run's threshold, for every label
            labels = (labels[0], [p.threshold] * len(labels[0]))

    def infer(b, n):
        with STAGES("network"):
            return network(b, n), network.features, network.maps

    def settle():
        """Blend the oldest batch in flight (wait for it)."""
        if not inflight:
            return
        job, xs_, checks_, y_ = inflight.pop(0)
        with STAGES("waiting for the network"):
            probs, features, maps = job.result()
        with STAGES("blend"):
            for k, x in enumerate(xs_):
                blend.add(probs[k], x)
        if tile_log is not None and features is not None:
            tile_log.add([(x, y_, tw, th) for x in xs_], features,
                         [c[0] for c in checks_], [c[1] for c in checks_])
        if likeness is not None and maps is not None:
            with STAGES("likeness"):
                likeness.add(maps[likeness.output], [(x, y_, tw, th) for x in xs_])
        stats.tiles += len(xs_)

    def flush(y):
        nonlocal batch, turn
        if not pending:
            return
        if cancel():
            raise Cancelled("cancelled")
        inflight.append((net.submit(infer, batch, len(pending)), list(pending), list(checks), y))
        turn = (turn + 1) % len(batches)
        batch = batches[turn]
        pending.clear()
        checks.clear()
        while len(inflight) >= len(batches):   # the batch that held it: inferred and blended first
            settle()
        finish_strips()

    def finish_strips():
        """Classify, hand on and drop the rows of the strips none of whose tiles is in flight
        (in order: a strip's last batch is inferred while the next strip is read and filled)."""
        busy = inflight[0][3] if inflight else None
        while unfinished and unfinished[0][0] != busy:
            y, valid, codes, all_valid = unfinished.pop(0)
            nrows = len(valid)
            acc, wsum = blend.rows(nrows)
            with STAGES("classify"):
                cls, conf = classify(acc, wsum, valid, binary, p.threshold, labels, all_valid=all_valid)
            stats.valid_pixels += nrows * W if all_valid else int(valid.sum())
            if codes is not None:
                hit = codes > 0
                if hit.any():
                    cls[..., hit] = codes[hit]
                    conf[..., hit] = NODATA_CONF
                    for code, n in zip(*np.unique(codes[hit], return_counts=True)):
                        stats.masked[int(code)] = stats.masked.get(int(code), 0) + int(n)
            writes.append(writer.submit(write, cls, conf, y))
            with STAGES("waiting for the writer"):
                while len(writes) > queue or (writes and writes[0].done()):
                    writes.pop(0).result()  # bounded queue; re-raises a write error
            with STAGES("blend"):
                blend.shift(nrows, y == ys[-1])

    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tm-read") if threaded_read else Inline()
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tm-write") if threaded_write else Inline()
    net = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tm-infer") if threaded_infer else Inline()
    writes: List = []
    queue = write_queue_strips(W, (ys[1] - ys[0]) if len(ys) > 1 else th)
    unfinished: List[tuple] = []   # strips all submitted: (y, their final rows' valid, codes, all_valid)
    try:
        nxt = reader.submit(read.fetch, ys[0])
        for yi, y in enumerate(ys):
            if cancel():
                raise Cancelled("cancelled")
            norm, valid, codes = nxt.result()
            # The next strip: read on the reader's thread from now, or (read inline) once this
            # strip's first batch is being inferred, not before the network has work.
            ahead = yi + 1 < len(ys)
            if ahead and threaded_read:
                nxt, ahead = reader.submit(read.fetch, ys[yi + 1]), False
            all_valid = bool(valid.all())
            for x in xs:
                done += 1
                if not all_valid and not valid[:, x:x + tw].any():
                    continue
                k = len(pending)
                with STAGES("tiles"):
                    # (a tile smaller than the batch's keeps the zeros it was allocated with beyond it)
                    if not read.exact:
                        batch[k, :, :th, :tw] = norm[:, :, x:x + tw]
                    else:
                        read.normalise(norm[:, :, x:x + tw], None if all_valid else valid[:, x:x + tw],
                                       batch[k, :, :th, :tw])
                pending.append(x)
                if tile_log is not None:
                    v = valid[:, x:x + tw]
                    # (an exact raster's tile as read: its own integers against the range)
                    t = norm[:, :, x:x + tw] if read.exact else batch[k, :, :th, :tw]
                    checks.append((out_of_range(training_range, t, v, read.a, read.b, raw=read.exact), int(v.sum())))
                if len(pending) == len(batch):
                    flush(y)
                    if ahead:
                        nxt, ahead = reader.submit(read.fetch, ys[yi + 1]), False
                    progress(span[0] + (span[1] - span[0]) * done / total, "tile %d of %d" % (done, total))
            flush(y)
            if ahead:
                nxt = reader.submit(read.fetch, ys[yi + 1])
            progress(span[0] + (span[1] - span[0]) * done / total, "tile %d of %d" % (done, total))
            # Rows that no later tile row touches are final; kept (copies: the reader reuses its
            # strips) until the strip's last batch is blended.
            nrows = th if yi == len(ys) - 1 else ys[yi + 1] - y
            unfinished.append((y, valid[:nrows].copy(), None if codes is None else codes[:nrows].copy(),
                               all_valid))
            finish_strips()   # (a strip without tiles in flight: at once)
        while inflight:
            settle()
        finish_strips()
        with STAGES("waiting for the writer"):
            for w in writes:
                w.result()
            if finish is not None:
                writer.submit(finish).result()
    finally:
        net.shutdown(wait=True, cancel_futures=True)
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True, cancel_futures=True)
    stats.seconds = time.perf_counter() - t0
    return stats


def _modes(threaded) -> Tuple[bool, bool, bool]:
    """``(read, write, infer)`` threads from :func:`io_threads`' answer (or one bool for all)."""
    if isinstance(threaded, bool):
        return threaded, threaded, threaded
    return tuple(threaded)
