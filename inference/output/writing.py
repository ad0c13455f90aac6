"""Writing with GDAL: the result GeoTIFFs, strip by strip; results back on the source grid; what a
failed write says (a full disk, a file size limit); where the run's time went (:data:`STAGES`).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from typing import Dict, Optional

import numpy as np
from osgeo import gdal

from ..errors import OutputError
from .compression import CODEC_OPTIONS
from ..model.metadata import rgb

NODATA_CLASS = 255
NODATA_CONF = 255


class StageTimes:
    """Seconds spent per stage (reading, network, blending, sieve...) by the runs of this process,
    summed per stage over threads: a stage on the writer thread overlaps the main thread's.
    Two clock reads per timed block; always on.  ``TM_STAGE_TIMES=<file>``: :meth:`dump` (at the
    end of each run) writes the totals there as JSON (the benchmark reads them)."""

    def __init__(self):
        self.seconds: Dict[str, float] = {}
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self, stage: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def dump(self) -> None:
        path = os.environ.get("TM_STAGE_TIMES")
        if path:
            try:
                with self._lock, open(path, "w", encoding="utf-8") as fh:
                    json.dump(self.seconds, fh)
            except OSError:   # (figures for a benchmark: never the run's failure)
                pass


STAGES = StageTimes()


class GeoTiffWriter:
    """A uint8 GeoTIFF written strip by strip, compressed with ``compress`` (:func:`codec`'s name;
    None: a scratch file of the run, written as fast as possible) on ``threads`` (GDAL's NUM_THREADS: ``gdal_settings``).  ``labels`` (a multilabel model's ``[(name, colour)]``): one more
    band per label class, 0/1, after band 1, each named and coloured."""

    def __init__(self, path, width, height, gt, wkt, nodata, colours=None, names=None, meta=None,
                 compress: Optional[str] = "deflate", labels=None, bands=None, threads: str = "ALL_CPUS"):
        drv = gdal.GetDriverByName("GTiff")
        self.path = path
        options = ["TILED=YES", "BIGTIFF=IF_SAFER", "BLOCKXSIZE=256", "BLOCKYSIZE=256"]
        if compress:
            options += CODEC_OPTIONS[compress] + ["NUM_THREADS=%s" % threads]
        n = bands or 1 + len(labels or ())
        if n > 1:
            options += ["INTERLEAVE=BAND"]
        self.ds = drv.Create(path, width, height, n, gdal.GDT_Byte, options=options)
        if self.ds is None:
            raise OutputError("cannot create %s" % path)
        self.ds.SetGeoTransform(gt)
        self.ds.SetProjection(wkt)
        b = self.ds.GetRasterBand(1)
        if nodata is not None:
            b.SetNoDataValue(nodata)
        if colours and n == 1:   # (TIFF holds no colour table in a file of several bands: the .qml styles it)
            ct = gdal.ColorTable()
            for cid, hexcol in colours.items():
                ct.SetColorEntry(cid, rgb(hexcol) + (255,))
            ct.SetColorEntry(nodata, (0, 0, 0, 0))
            b.SetRasterColorTable(ct)
            b.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
        if names:
            # GDAL's category names: the model's classes 0..K-1 (a list with gaps reads back as None in
            # GDAL's Python bindings); mask classes (250...) are named in the metadata (CLASS_<value>)
            cats = [names[k] for k in range(len(names)) if k in names]
            if cats:
                b.SetCategoryNames(cats)
        if meta:
            self.ds.SetMetadata({k: str(v) for k, v in meta.items()})
        if labels:
            b.SetDescription("most probable label class present")
        for i, (name, colour) in enumerate(labels or ()):
            lb = self.ds.GetRasterBand(i + 2)
            lb.SetDescription(name)
            if colour:
                lb.SetCategoryNames(["", name])
        for i in range(1, n):
            if nodata is not None:
                self.ds.GetRasterBand(i + 1).SetNoDataValue(nodata)
        self.band = b
        self.block_rows = b.GetBlockSize()[1]
        self._held = None   # (y, rows): rows not yet given to GDAL

    def write(self, arr, yoff):
        """Rows ``yoff..`` of the whole width: band 1 ``(rows, W)``, or ``(bands, rows, W)``.

        Rows that follow the last ones written go to GDAL in whole rows of blocks, each row of
        blocks compressed and written to the file as soon as it is complete (GDAL would keep
        them in its cache until the file is closed, and compress all of them then); the part
        of a row of blocks is held until the rows below it come."""
        with STAGES("write"):
            if self._held is not None:
                hy, held = self._held
                self._held = None
                if yoff == hy + held.shape[-2]:
                    yoff, arr = hy, np.concatenate([held, arr], axis=-2)
                else:
                    self._put(held, hy)
            end = yoff + arr.shape[-2]
            cut = max(yoff, end if end >= self.ds.RasterYSize else end // self.block_rows * self.block_rows)
            if cut > yoff:
                self._put(arr[..., :cut - yoff, :], yoff)
                self.ds.FlushCache()
            if cut < end:
                self._held = (cut, arr[..., cut - yoff:, :].copy())

    def _put(self, arr, yoff):
        if arr.ndim == 3:   # band 1, then the label bands
            for i in range(arr.shape[0]):
                self.ds.GetRasterBand(i + 1).WriteArray(arr[i], 0, yoff)
        else:
            self.band.WriteArray(arr, 0, yoff)

    def close(self):
        if self.ds is not None:
            with STAGES("write"):
                if self._held is not None:
                    self._put(self._held[1], self._held[0])
                    self._held = None
                self.ds.FlushCache()
                self.band = None
                self.ds = None


@contextmanager
def failing_quietly():
    """While a failed run releases its files: GDAL's messages (a .aux.xml it cannot save on a full
    disk...) and the errors of datasets closed by the garbage collector are not shown; the run's
    own error is."""
    hook = sys.unraisablehook
    sys.unraisablehook = quiet_unraisable(hook)
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        yield
    finally:
        gdal.PopErrorHandler()
        sys.unraisablehook = hook


def quiet_unraisable(hook):
    """``sys.unraisablehook`` that drops the RuntimeErrors of GDAL and OGR objects destroyed after
    a failure (a file that cannot be flushed to a full disk: the run's error says it), passing
    anything else to ``hook``."""
    def quiet(u):
        where = getattr(u.object, "__module__", None) or type(u.object).__module__ or ""
        name = getattr(u.object, "__name__", "")
        if not (isinstance(u.exc_value, RuntimeError) and (where.startswith("osgeo") or name.startswith("delete_"))):
            hook(u)
    return quiet


def to_source_grid(src, dst, gt, w, h, wkt, colours, names, meta, labels=None, compress="deflate") -> None:
    """Resample a working-grid result onto the source grid (the window), nearest, streamed by GDAL."""
    n = gdal.Open(src).RasterCount
    out = GeoTiffWriter(dst, w, h, gt, wkt, NODATA_CLASS, colours, names, meta, labels=labels, bands=n,
                        compress=compress)
    out.close()
    ds = gdal.Open(dst, gdal.GA_Update)
    gdal.Warp(ds, src, resampleAlg="near", srcNodata=NODATA_CLASS, dstNodata=NODATA_CLASS, multithread=False)
    ds.FlushCache()
    ds = None


def results_to_source_grid(p, rasters, classes: str, confidence: str) -> None:
    """A run's results on the working grid (``p`` resamples) brought back onto the source grid, into
    ``classes`` and ``confidence`` (``rasters``: ``segment_rasters.Rasters``, updated to name them)."""
    grid, labels, meta = rasters.grid, p.label_bands, rasters.meta
    w0, h0 = grid.view_size
    names = {c.id: c.name for c in p.out_classes}
    colours = {c.id: c.color for c in p.out_classes}
    to_source_grid(rasters.classes, classes, grid.view_gt, w0, h0, grid.wkt, colours, names, meta, labels, p.codec)
    to_source_grid(rasters.confidence, confidence, grid.view_gt, w0, h0, grid.wkt, None, None, meta,
                   [(n, None) for n, _ in labels] if labels else None, p.codec)
    rasters.classes, rasters.confidence = classes, confidence


WRITE_FAILED = ("Write error", "write error", "Failed to write", "failed to write", "Error writing", "Unable to write",
                "Cannot write", "cannot write", "readonly database", "I/O error", "disk I/O", "No space left",
                "Free disk space", "disk is full", "Disk quota", "File too large")
NEARLY_FULL = 16e6   # bytes free under which a failed write is taken for a full disk (GDAL does not always say)


def free_bytes(folder: str) -> Optional[float]:
    """Bytes free on the disk holding ``folder`` (or its nearest existing parent); None: unknown."""
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        return float(shutil.disk_usage(folder).free)
    except OSError:
        return None


def disk_error(err: BaseException, folders, files=()) -> Optional[OutputError]:
    """An :class:`OutputError` for a write that failed (an OSError, or GDAL's or SQLite's
    RuntimeError, or a GDAL error while the disk is nearly full or a file size limit is set): the
    disk holding one of ``folders`` (``[(folder, what)]``, ``what`` said after it) is full, or a
    file (one of the run's ``files``) grew over the size this process may write, or GDAL's reason; None for any other error.
    Call it before the run's files are removed (the free space is measured)."""
    import errno
    text = str(err)
    code = getattr(err, "errno", None)
    wrote = code in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", -1)) or (
        isinstance(err, RuntimeError) and any(w in text for w in WRITE_FAILED))
    if not (wrote or isinstance(err, RuntimeError)):   # (GDAL may report a file cut short on reading it back)
        return None
    for folder, what in folders:
        free = free_bytes(folder)
        said = code == errno.ENOSPC or any(w in text for w in ("No space left", "Free disk space", "disk is full"))
        if free is not None and (free < (NEARLY_FULL if wrote else 1e6) or (said and len(folders) == 1)):
            return OutputError("the disk holding %s%s is full: %.0f MB free" % (folder, what, free / 1e6))
    limit = _file_size_limit()
    if code == errno.EFBIG or "File too large" in text or (limit is not None and any(
            os.path.isfile(f) and os.path.getsize(f) >= limit for f in files)):
        return OutputError("cannot write in %s: a file grew over the size this process may write%s"
                           % (folders[0][0], " (ulimit -f: %.1f MB)" % (limit / 1e6) if limit else ""))
    if not wrote:
        return None
    from ..errors import first_line
    return OutputError("cannot write the results in %s: %s" % (folders[0][0], first_line(err)))


def _file_size_limit() -> Optional[int]:
    try:
        import resource
    except ImportError:   # (Windows)
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft
