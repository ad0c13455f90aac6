"""Regions under the minimum area removed from a class raster, in place: GDAL's sieve (4-connected;
a region merges into its largest neighbour), streamed while inference runs (:class:`StreamSieve`)
or in bands of rows afterwards (:func:`sieve_in_bands`); a multilabel result label by label
(:func:`sieve_result`).  Nodata and masked pixels are left alone and nothing merges into them.
"""
from __future__ import annotations

import tempfile
from typing import Optional

import numpy as np
from osgeo import gdal

from ..errors import Cancelled
from ..input.masks import MASK_MIN
from .polygons import BandPolygonizer, foreground
from .region_stats import ROWS_PER_READ
from .writing import NODATA_CLASS, STAGES


def two_classes(info) -> bool:
    """Whether a model's class raster holds two classes (besides nodata and masks)."""
    return info.task == "binary" or (info.task != "multilabel" and len(info.classes) <= 2)


SIEVE_BAND_ROWS = 2048
# The streamed sieve's band in pixels: 2048 rows of a Sentinel-2 tile (10980 px).  A wider raster
# gets fewer rows (at least 256), so that its memory does not grow with the width.
SIEVE_BAND_PIXELS = SIEVE_BAND_ROWS * 10980


def sieve_band_rows(width: int) -> int:
    """Rows of the streamed sieve's bands for a raster ``width`` px wide."""
    return max(256, min(SIEVE_BAND_ROWS, SIEVE_BAND_PIXELS // max(1, width)))


def sieve_array(arr: np.ndarray, thr: int, nodata=None, two_classes: bool = False) -> None:
    """GDAL's SieveFilter (4-connected) on a C-contiguous 2-D uint8 array, in place: GDAL works on
    the array's own memory.  Nodata (255) and masked pixels (cloud...: ``masks.MASK_MIN`` and above)
    are left alone and nothing merges into them.

    ``two_classes``: the array holds classes 0 and 1 only (besides nodata and masks); then only
    the rows between rows of one class are sieved (:func:`busy_rows`), the same result as
    sieving all of them."""
    with STAGES("sieve"):
        if two_classes and arr.shape[1] >= thr:
            for a, b in busy_rows(arr):
                _sieve(arr[a:b], thr)
        else:
            _sieve(arr, thr)


def busy_rows(arr: np.ndarray, gap: int = 16):
    """``[(first, end)]``: the runs of rows the sieve can change in a two-class array, each with
    the row above and below it (runs fewer than ``gap`` rows apart joined).

    A clear row -- every pixel one class, none masked -- is one region of at least ``width``
    pixels, never removed; a region of another class cannot cross it.  So every region that
    the sieve can remove lies between two clear rows, and is judged there on its true size;
    the region a clear row belongs to, cut off at the window, keeps at least ``width`` pixels
    there, so it is still kept, and a region merges into a neighbour of the other class
    whichever neighbour that is (with two classes there is no other choice to get wrong).  With
    more classes the neighbour chosen depends on the neighbours' sizes: not for them."""
    clear = (arr == arr[:, :1]).all(axis=1) & (arr[:, 0] < MASK_MIN)
    busy = np.flatnonzero(~clear)
    if not len(busy):
        return []
    cut = np.flatnonzero(np.diff(busy) > gap)
    starts, ends = np.r_[busy[0], busy[cut + 1]], np.r_[busy[cut], busy[-1]] + 1
    return [(max(0, int(a) - 1), min(len(arr), int(b) + 1)) for a, b in zip(starts, ends)]


def _sieve(arr: np.ndarray, thr: int) -> None:
    """:func:`sieve_array` on all of ``arr``."""
    from osgeo import gdal_array
    mem = gdal_array.OpenArray(arr)
    # The mask only when some pixel needs it (all ones is the same as none, read for nothing).
    keep = gdal_array.OpenArray((arr < MASK_MIN).view(np.uint8)) if arr.max() >= MASK_MIN else None
    mb = mem.GetRasterBand(1)
    gdal.SieveFilter(mb, keep.GetRasterBand(1) if keep is not None else None, mb, thr, 4)
    mb = mem = keep = None


def sieve_in_bands(band, thr: int, cancel=lambda: False, rows: int = SIEVE_BAND_ROWS,
                   two_classes: bool = False) -> None:
    """GDAL's SieveFilter, run on bands of ``rows`` rows with ``thr`` rows of margin above
    and below, writing back each band's middle (``two_classes``: see :func:`sieve_array`).

    GDAL's sieve keeps a record per region of the whole raster, so on a noisy 10980 x 10980
    result it alone takes hundreds of MB; in bands its memory is bounded by the band.  The
    result is the same as one global sieve: a region under ``thr`` pixels spans fewer than
    ``thr`` rows, so one that touches a band's middle lies wholly inside band + margins and is
    judged on its true size; a region cut by a margin's edge that reaches the middle has at
    least ``thr`` pixels inside, so it is kept, as it would be globally.  (In a multi-class
    raster the neighbour a small region merges into is chosen among what the band sees.)
    """
    W, H = band.XSize, band.YSize
    nodata = band.GetNoDataValue()
    if H <= rows + 2 * thr:
        arr = np.ascontiguousarray(band.ReadAsArray())
        sieve_array(arr, thr, nodata, two_classes)
        band.WriteArray(arr)
        band.FlushCache()
        return
    carry = None  # the original (unsieved) rows above the current band: its top margin
    for y0 in range(0, H, rows):
        if cancel():
            raise Cancelled("cancelled")
        y1 = min(H, y0 + rows)
        a0, a1 = max(0, y0 - thr), min(H, y1 + thr)
        below = band.ReadAsArray(0, y0, W, a1 - y0)      # not yet written: original values
        arr = below if carry is None else np.concatenate([carry, below])
        carry = below[max(0, (y1 - y0) - thr):y1 - y0].copy()
        arr = np.ascontiguousarray(arr)
        sieve_array(arr, thr, nodata, two_classes)
        band.WriteArray(arr[y0 - a0:y1 - a0], 0, y0)
    band.FlushCache()


class StreamSieve:
    """The banded sieve of :func:`sieve_in_bands`, fed strip by strip while inference runs.

    ``push(rows, y)`` takes the classes of rows ``y..`` in order (and keeps the array: the
    caller must not change it after); as soon as a band of ``rows`` rows has its ``thr`` rows
    of margin below, it is sieved and handed to ``emit(classes, y)`` (sieved classes) -- the
    same result as sieving the finished raster, with no second pass over the file.  The
    strips are joined once per band, and GDAL sieves that array in place.

    The band that ends the raster can only be sieved once every row is in: with ``tail`` (rows)
    the bands before it are shortened so that it has ``tail`` rows, not up to ``rows`` (what
    the run waits for after its last strip).  ``two_classes``: see :func:`sieve_array`.
    """

    def __init__(self, emit, width: int, height: int, thr: int, nodata: int, rows: Optional[int] = None,
                 tail: int = 0, two_classes: bool = False):
        self.emit, self.W, self.H, self.thr, self.nodata = emit, width, height, thr, nodata
        self.two_classes = two_classes
        self.rows, self.tail = rows or sieve_band_rows(width), max(0, int(tail))
        self.chunks = []                            # original rows from self.s0 on
        self.n = 0                                  # how many
        self.s0 = 0                                 # first row not yet emitted
        self.carry = np.zeros((0, width), np.uint8)  # original rows just above self.s0

    def push(self, arr: np.ndarray, y: int) -> None:
        if y != self.s0 + self.n:
            raise ValueError("rows must be pushed in order")
        self.chunks.append(arr)
        self.n += len(arr)
        self._drain(final=False)

    def close(self) -> None:
        self._drain(final=True)

    def _drain(self, final: bool) -> None:
        while self.n:
            left = self.H - self.s0
            y1 = self.s0 + (min(self.rows, left - self.tail) if left > self.tail else left)
            need = min(self.H, y1 + self.thr) - self.s0
            if self.n < need and not final:
                return
            window = np.concatenate([self.carry] + self.chunks)
            top, n = len(self.carry), y1 - self.s0
            # What the next band needs, unsieved, before the sieve changes the array.
            self.carry = window[top + max(0, n - self.thr):top + n].copy()
            rest = window[top + n:].copy()
            self.chunks, self.n = ([rest] if len(rest) else []), len(rest)
            if self.thr > 1:
                sieve_array(window[:top + min(need, len(window) - top)], self.thr, self.nodata, self.two_classes)
            self.emit(window[top:top + n], self.s0)
            self.s0 = y1


def streaming_regions(p, write, width: int, height: int, gt, workdir: str):
    """Without resampling, the output grid is the working grid: the classes sieved while streaming
    (:class:`StreamSieve`, on the writer thread; ``write(rows, y)`` takes the sieved rows) and the
    sieved bands polygonised on worker threads as they come (``polygons.BandPolygonizer``).
    Returns ``(sieve, polygoniser)``."""
    bg = p.info.background_ids()

    def emit(rows, y):
        write(rows, y)
        with STAGES("foreground mask"):
            fg = foreground(rows, bg)
        polygons.push(rows, fg, y)
    # the last band no longer than the last strip and its margin: less to sieve at the end
    sieve = StreamSieve(emit, width, height, p.sieve_px, NODATA_CLASS, tail=p.tile_size + p.sieve_px,
                        two_classes=two_classes(p.info))
    polygons = BandPolygonizer(width, height, gt, tempfile.mkdtemp(prefix="poly-", dir=workdir))
    return sieve, polygons


def sieve_result(p, ds, conf_path: str, streamed: bool, cancel) -> None:
    """The regions of plan ``p``'s class raster ``ds`` (open for update) under its minimum area
    removed: band 1 (unless ``streamed``: sieved while streaming), or a multilabel raster's label
    bands one by one (0/1 each), its band 1 made again from them (:func:`_top_labels`)."""
    thr = p.sieve_px
    if thr <= 1:
        return
    if p.label_bands:
        labels = p.info.label_classes()
        for k in range(len(labels)):
            sieve_in_bands(ds.GetRasterBand(k + 2), thr, cancel, two_classes=True)   # (0/1 per label)
        _top_labels(ds, conf_path, [c.id for c in labels], cancel)
    elif not streamed:
        sieve_in_bands(ds.GetRasterBand(1), thr, cancel, two_classes=two_classes(p.info))


def _top_labels(ds, conf_path: str, ids, cancel) -> None:
    """Band 1 of a multilabel class raster from its (sieved) label bands: the present label with
    the highest probability; masked and nodata pixels as they were."""
    conf = gdal.Open(conf_path)
    ids = np.asarray(ids, np.uint8)
    b1 = ds.GetRasterBand(1)
    W, H, K = ds.RasterXSize, ds.RasterYSize, len(ids)
    for y in range(0, H, ROWS_PER_READ):
        if cancel():
            raise Cancelled("cancelled")
        n = min(ROWS_PER_READ, H - y)
        present = np.stack([ds.GetRasterBand(k + 2).ReadAsArray(0, y, W, n) == 1 for k in range(K)])
        prob = np.stack([conf.GetRasterBand(k + 2).ReadAsArray(0, y, W, n) for k in range(K)]).astype(np.int16)
        top = np.where(present, prob, -1).argmax(axis=0)
        old = b1.ReadAsArray(0, y, W, n)
        new = np.where(present.any(axis=0), ids[top], 0).astype(np.uint8)
        b1.WriteArray(np.where(old >= MASK_MIN, old, new), 0, y)
    b1.FlushCache()
    conf = None
