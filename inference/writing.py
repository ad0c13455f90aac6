"""Writing with GDAL: the result GeoTIFFs, strip by strip; outputs staged under hidden names and
renamed when complete; GDAL's threads and block cache for a run; results back on the source grid.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Dict, Mapping, Optional

import numpy as np
from osgeo import gdal

from . import locks
from . import raster as rasterlib
from .errors import OutputError, TailingsError
from .geotiff import CODEC_OPTIONS
from .metadata import rgb
from .output_names import lock_path, names_taken, output_kinds_renamed, stems

NODATA_CLASS = 255
NODATA_CONF = 255


def gdal_threads(default: str = "ALL_CPUS") -> str:
    """Threads GDAL may use to decode and encode GeoTIFF blocks: ``GDAL_NUM_THREADS`` when the
    user set it, else ``default`` (a run's: ``stream.gdal_threads_for``)."""
    return os.environ.get("GDAL_NUM_THREADS") or default


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


@contextmanager
def gdal_threads_here(threads: str = "ALL_CPUS"):
    """GDAL_NUM_THREADS (:func:`gdal_threads`) for GDAL calls made by this thread (only), restored after."""
    before = gdal.GetThreadLocalConfigOption("GDAL_NUM_THREADS", None)
    gdal.SetThreadLocalConfigOption("GDAL_NUM_THREADS", gdal_threads(threads))
    try:
        yield
    finally:
        gdal.SetThreadLocalConfigOption("GDAL_NUM_THREADS", before)


class GeoTiffWriter:
    """A uint8 GeoTIFF written strip by strip, compressed with ``compress`` (:func:`codec`'s name;
    None: a scratch file of the run, written as fast as possible) on ``threads`` (:func:`gdal_threads`).  ``labels`` (a multilabel model's ``[(name, colour)]``): one more
    band per label class, 0/1, after band 1, each named and coloured."""

    def __init__(self, path, width, height, gt, wkt, nodata, colours=None, names=None, meta=None,
                 compress: Optional[str] = "deflate", labels=None, bands=None, threads: str = "ALL_CPUS"):
        drv = gdal.GetDriverByName("GTiff")
        self.path = path
        options = ["TILED=YES", "BIGTIFF=IF_SAFER", "BLOCKXSIZE=256", "BLOCKYSIZE=256"]
        if compress:
            options += CODEC_OPTIONS[compress] + ["NUM_THREADS=%s" % gdal_threads(threads)]
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


SIDECARS = (".aux.xml", "-journal", "-wal", "-shm")


def remove(path: str) -> None:
    """A file and the sidecars GDAL or SQLite may have left beside it."""
    for p in (path,) + tuple(path + s for s in SIDECARS):
        try:
            os.remove(p)
        except OSError:
            pass


class StagedOutputs:
    """The outputs of a run: their final names reserved for the run, the files written under hidden
    temporary names beside them, renamed to the final names when all are complete (:meth:`commit`)
    or removed (:meth:`discard`), so that a cancelled or failed run leaves nothing that looks
    finished and two runs never write the same files.

    A run holds ``.<stem>.tm-lock`` (``locks``: its process, computer and hidden files) in the folder
    while it writes the outputs named ``<stem>``; a lock left by a killed run is taken over (a note
    says so: :attr:`notes`).  With ``unique``, names taken (by files, or by a live run's lock) are
    skipped for ``<stem>-2``, ``<stem>-3``...; without, a taken name is an error unless ``overwrite``."""

    def __init__(self, outputs: Mapping[str, str], overwrite: bool = False, unique: bool = False):
        first = outputs["classes"]
        out_dir, stem = os.path.dirname(first), os.path.basename(first)[:-len("_classes.tif")]
        self.overwrite = overwrite
        self.lock: Optional[str] = None
        self.notes = []
        tag = ".tm-%s-" % uuid.uuid4().hex[:8]
        self._rec = locks.record(tag)
        tried = []
        try:
            for candidate in stems(stem):
                final = output_kinds_renamed(outputs, candidate)
                lock = lock_path(out_dir, candidate)
                tried.append(lock)
                self._clear_stale(lock)
                if unique and not overwrite and names_taken(final):
                    continue
                try:
                    created = locks.create(lock, self._rec)
                except OSError as e:
                    raise OutputError("cannot write to output folder %s: %s" % (out_dir, e.strerror or e)) from None
                if not created:
                    if unique and not overwrite:
                        continue
                    raise locks.refusal(lock, candidate, locks.read(lock))
                self.lock = lock
                break
            if not overwrite:
                taken = [p for p in final.values() if os.path.exists(p)]
                if taken:   # (the handler below removes the lock just taken)
                    raise OutputError("output exists: %s (choose another folder or prefix, or allow overwriting)"
                                      % ", ".join(os.path.basename(p) for p in taken))
        except BaseException:   # (an interrupt too): a lock this run made is not kept, whenever it came
            for lock in tried:
                if locks.read(lock) == self._rec:
                    with contextlib.suppress(OSError):
                        os.remove(lock)
            raise
        self.tag = tag
        self.final: Dict[str, str] = final
        self.tmp: Dict[str, str] = {k: os.path.join(out_dir, tag + os.path.basename(v)) for k, v in final.items()}

    def _clear_stale(self, lock: str) -> None:
        """Take over ``lock`` when the run that holds it is gone (its hidden files removed)."""
        for _ in range(3):
            rec = locks.read(lock) if os.path.exists(lock) else None
            if not locks.is_stale(rec):
                return
            if locks.take_over(lock, rec):
                self.notes.append("a run that was stopped (%s) had left its lock %s and its unfinished files: "
                                  "taken over and removed" % (locks.describe(rec), lock))
                return

    @property
    def layer_name(self) -> Optional[str]:
        """The polygon layer's name inside its GeoPackage: the file's name."""
        p = self.final.get("polygons")
        return os.path.splitext(os.path.basename(p))[0] if p else None

    def get(self, kind: str) -> Optional[str]:
        return self.tmp.get(kind)

    def commit(self) -> None:
        """Rename the complete set into place, as a whole: with ``overwrite``, the outputs there are
        moved aside first (hidden names) and put back when anything fails, removed once the new
        set is in place; the lock records how far the commit went (``locks.recover``)."""
        out_dir = os.path.dirname(self.lock)
        moved, placed = [], []
        try:
            if not self.overwrite:
                taken = [p for p in self.final.values() if os.path.exists(p)]
                if taken:   # written meanwhile by something that takes no lock
                    raise OutputError("output exists: %s (written by another program during the run)" % taken[0])
            fresh = [os.path.basename(p) for p in self.final.values() if not os.path.exists(p)]
            locks.update(self.lock, dict(self._rec, phase="committing", fresh=fresh))
            for final in self.final.values():
                for old in (final,) + tuple(final + s for s in SIDECARS):
                    if os.path.lexists(old):
                        backup = os.path.join(out_dir, self.tag + locks.BACKUP + os.path.basename(old))
                        os.replace(old, backup)
                        moved.append((old, backup))
            for kind, final in self.final.items():
                tmp = self.tmp[kind]
                os.replace(tmp, final)
                placed.append(final)
                if os.path.exists(tmp + ".aux.xml"):
                    os.replace(tmp + ".aux.xml", final + ".aux.xml")
            locks.update(self.lock, dict(self._rec, phase="committed"))
        except BaseException as e:
            try:
                for final in placed:
                    remove(final)
                for old, backup in reversed(moved):
                    os.replace(backup, old)
            except OSError as e2:   # the lock stays: the next run here puts the old set back (locks.recover)
                self.lock = None
                raise OutputError("could not put the previous outputs back in %s (%s): they are kept under hidden "
                                  "names, and the next run there puts them back" % (out_dir, e2.strerror or e2)) from None
            if isinstance(e, OSError):
                raise disk_error(e, [(out_dir, "")]) or OutputError(
                    "cannot move the outputs into place in %s: %s" % (out_dir, e.strerror or e)) from None
            raise
        else:
            for _, backup in moved:
                remove(backup)
        finally:
            self._unlock()

    def discard(self) -> None:
        for path in self.tmp.values():
            remove(path)
        self._unlock()

    def _unlock(self) -> None:
        if self.lock is None:
            return
        try:
            os.remove(self.lock)
        except OSError:
            pass
        self.lock = None


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
    from .errors import first_line
    return OutputError("cannot write the results in %s: %s" % (folders[0][0], first_line(err)))


def _file_size_limit() -> Optional[int]:
    try:
        import resource
    except ImportError:   # (Windows)
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def block_cache_need(p) -> int:
    """Bytes of GDAL block cache that keep the input blocks one strip of tiles reads, and the
    output blocks being written, until the next strip (``p``: a plan).

    Consecutive strips share a row of blocks (the reader copies the overlap's rows from the
    last strip, and reads the rest: ``stream.StripReader``); when the cache cannot hold it,
    each strip (and each band of a pixel-interleaved file) decodes the same blocks again.
    Measured on a 10980 x 10980 x 4 DEFLATE GeoTIFF (cProfile, reading only): 5.4 s with a
    64 MB cache, 2.2 s with 128 MB.  More than that only fills up with blocks no strip reads
    again: on a raster 100,000 px wide, memory grew strip by strip until the cache was full."""
    try:
        ds = rasterlib.open_dataset(p.raster.path, p.input)
    except TailingsError:  # the run reports an unreadable source itself
        return 0
    bw, bh = ds.GetRasterBand(1).GetBlockSize()
    pixel_interleaved = ds.GetMetadataItem("INTERLEAVE", "IMAGE_STRUCTURE") == "PIXEL"
    read = range(1, ds.RasterCount + 1) if pixel_interleaved else p.mapping.source_bands
    bytes_px = sum(gdal.GetDataTypeSize(ds.GetRasterBand(b).DataType) // 8 for b in read)
    ds = None
    ratio = p.work_gsd_m / max(p.src_gsd_m, 1e-9)
    rows = (p.tile_size - p.overlap) * ratio + 2 * bh        # source rows of a strip's new blocks
    cols = min(p.raster.width, p.window[2] + 2 * bw)
    outputs = 3 * 2 * 256 * cols / ratio                     # classes, confidence, mask: 2 block rows
    return int(1.25 * (rows * cols * bytes_px + outputs))


@contextmanager
def block_cache_at_least(nbytes: int):
    """Raise GDAL's block-cache cap to ``nbytes`` for a run when it is lower; restore it after."""
    before = gdal.GetCacheMax()
    if nbytes <= before:
        yield
        return
    gdal.SetCacheMax(nbytes)
    try:
        yield
    finally:
        if gdal.GetCacheMax() == nbytes:  # nobody changed it meanwhile
            gdal.SetCacheMax(before)


def bound_block_cache(nbytes: int = 64 * 1024 * 1024) -> None:
    """GDAL's block cache defaults to 5 % of RAM; the engine streams and needs little.  Keep a
    process's memory bounded (``nbytes``) unless the user set GDAL_CACHEMAX; a run raises the cap
    for its duration when a strip needs more (:func:`block_cache_at_least`)."""
    if "GDAL_CACHEMAX" not in os.environ:
        gdal.SetCacheMax(nbytes)
