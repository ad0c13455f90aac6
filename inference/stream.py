"""The tile stream: read a strip, infer its tiles, blend them, classify the rows that are final.

Memory stays bounded by a strip of tiles: the working raster is read one row of tiles at a
time (only the bands the model reads), tiles go to onnxruntime in batches, overlapping tile
probabilities are blended into a strip accumulator with weights that ramp across the overlap,
and rows that no later tile touches are classified and handed on at once.
"""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from osgeo import gdal

from . import aoi as aoilib
from . import raster as rasterlib
from .errors import Cancelled, InputError, TailingsError, first_line
from .tiling import blend_weights, positions, rescale, tta_views
from .writing import NODATA_CLASS, NODATA_CONF, gdal_threads_here

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
    # GeoTIFF sources take GDAL_NUM_THREADS when opened: decode blocks on every core (reads run
    # while onnxruntime waits).
    with gdal_threads_here():
        ds = gdal.Open(work)
    nb = ds.RasterCount
    floating = any(ds.GetRasterBand(i + 1).DataType in (gdal.GDT_Float32, gdal.GDT_Float64) for i in range(nb))
    grid = WorkGrid(ds, ds.RasterXSize, ds.RasterYSize, ds.GetGeoTransform(), wkt,
                    [ds.GetRasterBand(i + 1).GetNoDataValue() for i in range(nb)], floating, view_gt, (w0, h0))
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


class StripReader:
    """Reads one strip of tile rows and normalises it in place; ``valid`` marks pixels with data
    (not nodata, finite, inside the area of interest)."""

    def __init__(self, p, grid: WorkGrid):
        self.p, self.grid = p, grid
        self.rows = min(p.tile_size, grid.height)
        self.a = np.array([t[0] for t in p.transform], np.float32)[:, None, None]
        self.b = np.array([t[1] for t in p.transform], np.float32)[:, None, None]
        self.aoi = aoilib.Mask(p.aoi, grid.wkt) if p.aoi else None

    def __call__(self, y: int) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """``(normalised strip, valid, mask classes or None)``."""
        return self.window(0, y, self.grid.width, self.rows)

    def window(self, x: int, y: int, w: int, th: int) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """The same for any window of the grid (training reads chips with it)."""
        g = self.grid
        nb = g.ds.RasterCount
        try:
            with gdal_threads_here():  # decode blocks in parallel
                strip = g.ds.ReadAsArray(x, y, w, th, buf_type=gdal.GDT_Float32)
        except RuntimeError as e:  # a truncated or corrupt file: GDAL fails on the first bad block
            raise InputError("cannot read %s: %s" % (self.p.input, first_line(e))) from None
        strip = strip.reshape(nb, th, w)
        valid = np.ones((th, w), bool)
        for i in range(nb):
            if g.nodata[i] is not None:
                valid &= strip[i] != g.nodata[i]
        if g.floating:
            valid &= np.isfinite(strip).all(axis=0)
            np.nan_to_num(strip, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        if self.aoi is not None:
            valid &= self.aoi.strip(g.gt, y, w, th, x)
        codes = None
        if g.mask_ds is not None:
            codes = g.mask_lut[g.mask_ds.GetRasterBand(1).ReadAsArray(x, y, w, th).astype(np.uint8)]
            codes[~valid] = 0           # no data stays no data
            valid &= codes == 0         # masked pixels are not segmented
        strip *= self.a
        strip += self.b
        if not valid.all():
            strip *= valid  # invalid pixels feed the network zeros (the training mean)
        return strip, valid, codes


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

    def __call__(self, batch: np.ndarray, n: int) -> np.ndarray:
        feed = batch if self.fixed_batch else batch[:n]
        out = None
        self.features = None
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
                self.features = tile_means(np.asarray(outs[self.heads][:n], np.float32))
        except Exception as e:  # onnxruntime's own exception types
            raise TailingsError("the network failed on tiles of %d x %d px: %s" % (ts, ts, first_line(e))) from None
        if o.shape[1] != self.K or o.shape[2] != ts or o.shape[3] != ts:
            raise TailingsError("the network returned shape %s for tiles of %d x %d; expected (N, %d, %d, %d)"
                                % (o.shape, ts, ts, self.K, ts, ts))
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


def classify(acc, wsum, valid, binary, threshold, labels=None):
    """Classes and confidence (probability of the assigned class, percent) of blended rows;
    with ``labels`` (a multilabel model: each label class's id and threshold) see
    :func:`classify_labels`.

    Written for speed on the largest case, one output channel: a few passes in place, no
    float64 and no temporaries beyond the probability array."""
    if labels is not None:
        return classify_labels(acc, wsum, valid, *labels)
    invalid = ~valid
    with np.errstate(invalid="ignore", divide="ignore"):
        if acc.shape[0] == 1:
            conf = np.divide(acc[0], np.maximum(wsum, 1e-12))
            cls = conf >= threshold
            np.subtract(1.0, conf, out=conf, where=~cls)   # background: 1 - p
        elif binary:
            conf = acc[1] / np.maximum(acc.sum(axis=0), 1e-12)
            cls = conf >= threshold
            np.subtract(1.0, conf, out=conf, where=~cls)
        else:
            cls = acc.argmax(axis=0).astype(np.uint8)
            conf = acc.max(axis=0) / np.maximum(acc.sum(axis=0), 1e-12)
    if cls.dtype == bool:
        cls = cls.view(np.uint8)
    conf *= 100.0
    np.rint(conf, out=conf)
    np.clip(conf, 0, 100, out=conf)
    conf = conf.astype(np.uint8)
    cls[invalid] = NODATA_CLASS
    conf[invalid] = NODATA_CONF
    return cls, conf


def classify_labels(acc, wsum, valid, ids, thresholds):
    """A multilabel model's rows: ``(1 + K, rows, W)`` classes -- band 1 the id of the most probable
    label present (0: none), then per label 1 (present) or 0 -- and confidence in percent -- band 1
    the probability of band 1's label (1 - the highest when none is present), then each label's."""
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = acc / np.maximum(wsum, 1e-12)[None]
    present = prob >= np.asarray(thresholds, np.float32).reshape(-1, 1, 1)
    any_label = present.any(axis=0)
    top = np.where(present, prob, -1.0).argmax(axis=0)
    ids = np.asarray(ids, np.uint8)
    cls = np.empty((1 + len(ids),) + prob.shape[1:], np.uint8)
    cls[0] = np.where(any_label, ids[top], 0)
    cls[1:] = present
    best = np.take_along_axis(prob, top[None], axis=0)[0]
    conf = np.empty(cls.shape, np.float32)
    conf[0] = np.where(any_label, best, 1.0 - prob.max(axis=0))
    conf[1:] = prob
    conf = np.clip(np.rint(conf * 100.0), 0, 100).astype(np.uint8)
    cls[:, ~valid] = NODATA_CLASS
    conf[:, ~valid] = NODATA_CONF
    return cls, conf


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


def io_threads(device: str) -> bool:
    """Reading and writing overlap inference on I/O threads when the GPU infers: the CPU is free
    meanwhile.  On the CPU, onnxruntime already uses every core and a thread taking one of them
    slows each of its parallel operators (measured: no gain on 2 cores), so I/O runs inline
    (``TM_IO_THREADS=1`` forces threads)."""
    return os.environ.get("TM_IO_THREADS", "1" if device == "cuda" else "0") == "1"


@dataclass
class StreamStats:
    valid_pixels: int = 0
    tiles: int = 0        # tiles inferred (tiles without a valid pixel are skipped)
    masked: Dict[int, int] = field(default_factory=dict)   # mask class -> pixels (working grid)
    tile_log: Optional[object] = None     # ood.TileLog of the run, when it checks the scene
    grid_gt: Optional[Tuple[float, ...]] = None


def run(p, grid: WorkGrid, network: TileNetwork, batch_size: int, write: Callable, progress: ProgressFn,
        cancel: CancelFn, threaded: bool, finish: Optional[Callable] = None, span=(0.0, 0.85),
        tile_log=None) -> StreamStats:
    """Stream the grid: for each strip of tile rows, read, infer its tiles in batches, blend,
    classify the rows that are final and ``write(classes, confidence, y)`` them in order;
    ``finish()`` runs where the writes ran (the writer thread) once they are done; ``tile_log``
    (an ``ood.TileLog``) gets each inferred tile's place and scores."""
    from .ood import out_of_range
    T, O = p.tile_size, p.overlap
    W, H = grid.width, grid.height
    xs, ys = positions(W, T, O), positions(H, T, O)
    th, tw = min(T, H), min(T, W)
    blend = Blender(network.K, T, O, W, th, tw)
    read = StripReader(p, grid)
    batch = np.zeros((batch_size, grid.ds.RasterCount, T, T), np.float32)
    pending: List[int] = []   # x of the tiles in the batch
    checks: List[Tuple[float, int]] = []   # their share of out-of-range pixels and valid pixels
    stats = StreamStats()
    total, done = len(xs) * len(ys), 0
    binary = p.info.task == "binary"
    labels = None
    if p.info.task == "multilabel":
        labels = ([c.id for c in p.info.label_classes()], p.info.label_thresholds())
        if p.options.threshold is not None:   # the run's threshold, for every label
            labels = (labels[0], [p.threshold] * len(labels[0]))

    def flush():
        if not pending:
            return
        if cancel():
            raise Cancelled("cancelled")
        probs = network(batch, len(pending))
        for k, x in enumerate(pending):
            blend.add(probs[k], x)
        if tile_log is not None and network.features is not None:
            tile_log.add([(x, y, tw, th) for x in pending], network.features,   # (y: the strip's)
                         [c[0] for c in checks], [c[1] for c in checks])
        stats.tiles += len(pending)
        pending.clear()
        checks.clear()

    if threaded:
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tm-read")
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tm-write")
    else:
        reader = writer = Inline()
    writes = []
    try:
        nxt = reader.submit(read, ys[0])
        for yi, y in enumerate(ys):
            if cancel():
                raise Cancelled("cancelled")
            norm, valid, codes = nxt.result()
            if yi + 1 < len(ys):
                nxt = reader.submit(read, ys[yi + 1])
            for x in xs:
                done += 1
                if not valid[:, x:x + tw].any():
                    continue
                k = len(pending)
                batch[k] = 0.0
                batch[k, :, :th, :tw] = norm[:, :, x:x + tw]
                pending.append(x)
                if tile_log is not None:
                    v = valid[:, x:x + tw]
                    checks.append((out_of_range(tile_log.stats, norm[:, :, x:x + tw], v, read.a, read.b), int(v.sum())))
                if len(pending) == len(batch):
                    flush()
                    progress(span[0] + (span[1] - span[0]) * done / total, "tile %d of %d" % (done, total))
            flush()
            progress(span[0] + (span[1] - span[0]) * done / total, "tile %d of %d" % (done, total))
            # Rows that no later tile row touches are final.
            last = yi == len(ys) - 1
            nrows = th if last else ys[yi + 1] - y
            acc, wsum = blend.rows(nrows)
            cls, conf = classify(acc, wsum, valid[:nrows], binary, p.threshold, labels)
            stats.valid_pixels += int(valid[:nrows].sum())
            if codes is not None:
                c = codes[:nrows]
                hit = c > 0
                if hit.any():
                    cls[..., hit] = c[hit]
                    conf[..., hit] = NODATA_CONF
                    for code, n in zip(*np.unique(c[hit], return_counts=True)):
                        stats.masked[int(code)] = stats.masked.get(int(code), 0) + int(n)
            writes.append(writer.submit(write, cls, conf, y))
            while len(writes) > 2 or (writes and writes[0].done()):
                writes.pop(0).result()  # bounded queue; re-raises a write error
            blend.shift(nrows, last)
        for w in writes:
            w.result()
        if finish is not None:
            writer.submit(finish).result()
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True, cancel_futures=True)
    return stats
