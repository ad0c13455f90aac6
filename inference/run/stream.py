"""The tile stream: read a strip, infer its tiles, blend them, classify the rows that are final.

Memory stays bounded by a strip of tiles: the working grid is read one row of tiles at a time
(``strips.StripReader``: only the bands the model reads), tiles go to the network in batches
(``network.TileNetwork``), overlapping tile probabilities are blended into a strip accumulator
with weights that ramp across the overlap (``tiling.Blender``), and the rows that no later tile
touches are classified (:mod:`classify`) and handed on to the writer at once; a strip's last
batch is inferred while the next strip is read and its first batch filled.

:class:`Stream` runs it as named steps: :meth:`~Stream.read_strip`, :meth:`~Stream.add_tile`,
:meth:`~Stream.queue_batch` (to the network), :meth:`~Stream.blend_batch` (the oldest one
inferred), :meth:`~Stream.hand_on` (classify the final rows and queue them to the writer).  Its
queues hold typed items: :class:`Batch` (tiles in the network), :class:`FinalRows` (a strip
whose last batch is still in the network).
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .classify import classify
from ..errors import Cancelled
from .network import TileNetwork
from .ood import out_of_range
from .strips import StripReader
from ..tiling import Blender, positions
from .work_grid import WorkGrid
from ..output.writing import NODATA_CONF, STAGES

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]
WriteFn = Callable[[np.ndarray, np.ndarray, int], None]   # (classes, confidence, first row)


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


# Strips handed to the writer and not yet written: enough for the writer's longest job (the sieve
# of a band of rows, sieve.SIEVE_BAND_ROWS) to overlap the strips read meanwhile; each holds
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
    seconds: float = 0.0  # streaming's wall time


@dataclass
class Batch:
    """Tiles queued to the network: the job (its probabilities, features and feature maps), each
    tile's x, each tile's share of pixels out of the training range and valid pixels, the strip's y."""
    job: Future
    xs: List[int]
    checks: List[Tuple[float, int]]
    y: int


@dataclass
class FinalRows:
    """The rows of a strip that no later tile row reaches (copies: the reader reuses its strips),
    held until the strip's last batch is blended: their valid pixels, mask classes (or None), and
    whether every pixel is valid."""
    y: int
    valid: np.ndarray
    codes: Optional[np.ndarray]
    all_valid: bool


class Stream:
    """One pass over the working grid (``p``: the plan; its tile size, overlap, threshold, label
    thresholds, threads and progress span; ``session``: the model's, its network run by a
    ``network.TileNetwork``).  ``write(classes, confidence, y)`` takes the final
    rows in order, on the writer thread; ``finish()`` runs there once they are written;
    ``read``: the grid's :class:`StripReader` (its first strip may be read already);
    ``tile_log`` (an ``ood.TileLog``) gets each inferred tile's place and scores; ``likeness``
    (a ``likeness.DistanceGrid``) each inferred tile's deepest features."""

    def __init__(self, p, grid: WorkGrid, session, read: StripReader, write: WriteFn,
                 progress: ProgressFn, cancel: CancelFn, finish: Optional[Callable] = None, tile_log=None,
                 likeness=None):
        self.network = network = TileNetwork(p, session, p.info.channels, cancel)   # (``session``: the model's)
        self.p, self.grid, self.read, self.write = p, grid, read, write
        self.progress, self.cancel, self.finish = progress, cancel, finish
        self.tile_log, self.likeness = tile_log, likeness
        T, O = p.tile_size, p.overlap
        self.W = grid.width
        self.binary = p.info.task == "binary"
        self.xs, self.ys = positions(grid.width, T, O), positions(grid.height, T, O)
        self.th, self.tw = min(T, grid.height), min(T, grid.width)
        self.blend = Blender(network.K, T, O, grid.width, self.th, self.tw)
        # (the training range in this raster's own values: its reflectance bounds through the run's scaling)
        self.training_range = tile_log.stats.raw_range(p.scalings) if tile_log is not None else None
        threaded_read, threaded_write, threaded_infer = p.io_threads
        self.threaded_read = threaded_read
        # Two batches in turn when the network runs on a thread of its own: the next is filled while
        # the last is inferred, and queued before that one is blended, so that the network goes from
        # one to the next without waiting (a tile smaller than a batch keeps the zeros it was
        # allocated with).
        self.batches = [np.zeros((network.batch_size, grid.ds.RasterCount, T, T), np.float32)
                        for _ in range(1 + threaded_infer)]
        self.batch, self.turn = self.batches[0], 0
        self.pending: List[int] = []                   # x of the tiles in the batch being filled
        self.checks: List[Tuple[float, int]] = []      # their range checks
        self.inflight: List[Batch] = []                # batches inferred or queued, oldest first
        self.unfinished: List[FinalRows] = []          # strips all queued, waiting to be handed on
        self.writes: List[Future] = []                 # strips handed to the writer
        self.queue = write_queue_strips(grid.width, (self.ys[1] - self.ys[0]) if len(self.ys) > 1 else self.th)
        self.stats = StreamStats()
        self.total, self.done = len(self.xs) * len(self.ys), 0
        self.reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tm-read") if threaded_read else Inline()
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tm-write") if threaded_write else Inline()
        self.net = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tm-infer") if threaded_infer else Inline()

    def run(self) -> StreamStats:
        """Every strip, in order; then the batches still in flight, the last rows and the writer."""
        t0 = time.perf_counter()
        try:
            nxt = self.reader.submit(self.read.fetch, self.ys[0])
            for yi, y in enumerate(self.ys):
                nxt = self.read_strip(yi, y, nxt)
            while self.inflight:
                self.blend_batch()
            self.hand_on()
            with STAGES("waiting for the writer"):
                for w in self.writes:
                    w.result()
                if self.finish is not None:
                    self.writer.submit(self.finish).result()
        finally:
            self.net.shutdown(wait=True, cancel_futures=True)
            self.reader.shutdown(wait=True, cancel_futures=True)
            self.writer.shutdown(wait=True, cancel_futures=True)
        self.stats.seconds = time.perf_counter() - t0
        return self.stats

    def read_strip(self, yi: int, y: int, nxt: Future) -> Optional[Future]:
        """Strip ``yi`` (read by ``nxt``): its tiles into batches, its final rows held until its
        last batch is blended; returns the read of the next strip.  The next strip is read on the
        reader's thread from now, or (read inline) once this strip's first batch is being
        inferred, not before the network has work."""
        if self.cancel():
            raise Cancelled("cancelled")
        data, valid, codes = nxt.result()
        ahead = yi + 1 < len(self.ys)
        if ahead and self.threaded_read:
            nxt, ahead = self.reader.submit(self.read.fetch, self.ys[yi + 1]), False
        all_valid = bool(valid.all())
        for x in self.xs:
            self.done += 1
            if not all_valid and not valid[:, x:x + self.tw].any():
                continue
            self.add_tile(data, valid, x, all_valid)
            if len(self.pending) == len(self.batch):
                self.queue_batch(y)
                if ahead:
                    nxt, ahead = self.reader.submit(self.read.fetch, self.ys[yi + 1]), False
                self._progress()
        self.queue_batch(y)
        if ahead:
            nxt = self.reader.submit(self.read.fetch, self.ys[yi + 1])
        self._progress()
        nrows = self.th if yi == len(self.ys) - 1 else self.ys[yi + 1] - y
        self.unfinished.append(FinalRows(y, valid[:nrows].copy(), None if codes is None else codes[:nrows].copy(),
                                         all_valid))
        self.hand_on()   # (a strip without tiles in flight: at once)
        return nxt

    def add_tile(self, data: np.ndarray, valid: np.ndarray, x: int, all_valid: bool) -> None:
        """The tile at ``x`` of the strip into the batch being filled (normalised there when the
        strip was read as it is), with its range check when the run checks the scene."""
        k, th, tw, read = len(self.pending), self.th, self.tw, self.read
        batch = self.batch
        with STAGES("tiles"):
            # (a tile smaller than the batch's keeps the zeros it was allocated with beyond it)
            if not read.exact:
                batch[k, :, :th, :tw] = data[:, :, x:x + tw]
            else:
                read.normalise(data[:, :, x:x + tw], None if all_valid else valid[:, x:x + tw], batch[k, :, :th, :tw])
        self.pending.append(x)
        if self.tile_log is not None:
            v = valid[:, x:x + tw]
            # (an exact raster's tile as read: its own integers against the range)
            t = data[:, :, x:x + tw] if read.exact else batch[k, :, :th, :tw]
            self.checks.append((out_of_range(self.training_range, t, v, read.a, read.b, raw=read.exact), int(v.sum())))

    def queue_batch(self, y: int) -> None:
        """The batch being filled to the network; the next buffer to fill; the oldest batches
        blended while as many are in flight as there are buffers; final rows handed on."""
        if not self.pending:
            return
        if self.cancel():
            raise Cancelled("cancelled")
        self.inflight.append(Batch(self.net.submit(self._infer, self.batch, len(self.pending)), list(self.pending),
                                   list(self.checks), y))
        self.turn = (self.turn + 1) % len(self.batches)
        self.batch = self.batches[self.turn]
        self.pending.clear()
        self.checks.clear()
        while len(self.inflight) >= len(self.batches):   # the batch that held it: inferred and blended first
            self.blend_batch()
        self.hand_on()

    def _infer(self, batch: np.ndarray, n: int):
        with STAGES("network"):
            return self.network(batch, n), self.network.features, self.network.maps

    def blend_batch(self) -> None:
        """Blend the oldest batch in flight (wait for it); its tiles' scores to the tile log and
        features to the likeness grid."""
        if not self.inflight:
            return
        b = self.inflight.pop(0)
        with STAGES("waiting for the network"):
            probs, features, maps = b.job.result()
        with STAGES("blend"):
            for k, x in enumerate(b.xs):
                self.blend.add(probs[k], x)
        boxes = [(x, b.y, self.tw, self.th) for x in b.xs]
        if self.tile_log is not None and features is not None:
            self.tile_log.add(boxes, features, [c[0] for c in b.checks], [c[1] for c in b.checks])
        if self.likeness is not None and maps is not None:
            with STAGES("likeness"):
                self.likeness.add(maps[self.likeness.output], boxes)
        self.stats.tiles += len(b.xs)

    def hand_on(self) -> None:
        """Classify, queue to the writer and drop the rows of the strips none of whose tiles is in
        flight (in order: a strip's last batch is inferred while the next strip is read and filled)."""
        p, stats = self.p, self.stats
        busy = self.inflight[0].y if self.inflight else None
        while self.unfinished and self.unfinished[0].y != busy:
            rows = self.unfinished.pop(0)
            nrows = len(rows.valid)
            acc, wsum = self.blend.rows(nrows)
            with STAGES("classify"):
                cls, conf = classify(acc, wsum, rows.valid, self.binary, p.threshold, p.label_thresholds,
                                     all_valid=rows.all_valid)
            stats.valid_pixels += nrows * self.W if rows.all_valid else int(rows.valid.sum())
            if rows.codes is not None:
                _mask(cls, conf, rows.codes, stats.masked)
            self.writes.append(self.writer.submit(self.write, cls, conf, rows.y))
            with STAGES("waiting for the writer"):
                while len(self.writes) > self.queue or (self.writes and self.writes[0].done()):
                    self.writes.pop(0).result()  # bounded queue; re-raises a write error
            with STAGES("blend"):
                self.blend.shift(nrows, rows.y == self.ys[-1])

    def _progress(self) -> None:
        a, b = self.p.stream_span
        self.progress(a + (b - a) * self.done / self.total, "tile %d of %d" % (self.done, self.total))


def _mask(cls: np.ndarray, conf: np.ndarray, codes: np.ndarray, masked: Dict[int, int]) -> None:
    """Masked pixels take their mask class (no confidence), counted per class in ``masked``."""
    hit = codes > 0
    if hit.any():
        cls[..., hit] = codes[hit]
        conf[..., hit] = NODATA_CONF
        for code, n in zip(*np.unique(codes[hit], return_counts=True)):
            masked[int(code)] = masked.get(int(code), 0) + int(n)
