"""GDAL's settings for a run, decided once when the run is planned and applied in one place.

What a run asks of GDAL: threads to decode and compress GeoTIFF blocks, and a block cache big
enough to keep one strip's blocks until the next strip.  :func:`for_run` decides them (the
user's environment wins: ``GDAL_NUM_THREADS``, ``GDAL_CACHEMAX``), :class:`GdalSettings` applies
them: :meth:`~GdalSettings.run` around a whole run (the block-cache cap, raised and restored),
:meth:`~GdalSettings.here` around the GDAL calls of any thread (the thread count, thread-local).
A process that runs the engine caps GDAL's cache first (:func:`bound_block_cache`).

The environment knobs the engine reads, all of them: ``GDAL_NUM_THREADS`` and ``GDAL_CACHEMAX``
(here: the user's GDAL settings win over the run's); for measuring and tuning only,
``TM_IO_THREADS`` and ``TM_INFER_THREAD`` (``planning.io_threads``: which stages run on threads of
their own), ``TM_STAGE_TIMES`` (``output.writing.StageTimes``: where the time went),
``TM_ORT_SPIN`` (``model.runtime``: onnxruntime's threads spin between runs) and
``TM_POLYGONIZE_PIECE_ROWS`` (``output.polygons``: rows per polygonised piece); and where things
are, ``TAILINGS_MAPPER_MODELS`` (``model.registry``: the user's models), ``TAILINGS_MAPPER_CACHE``
(``run.sizing``: the measured speeds) and ``TMPDIR`` (the run's scratch folder:
``output.locks.scratch_folder``).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

from osgeo import gdal


def gdal_threads(default: str = "ALL_CPUS") -> str:
    """Threads GDAL may use to decode and encode GeoTIFF blocks: ``GDAL_NUM_THREADS`` when the
    user set it, else ``default``."""
    return os.environ.get("GDAL_NUM_THREADS") or default


@dataclass(frozen=True)
class GdalSettings:
    threads: str = "ALL_CPUS"   # GDAL_NUM_THREADS for the run's reads and writes
    cache_bytes: int = 0        # block cache the run needs at least (0: whatever GDAL has)

    @contextmanager
    def run(self):
        """Raise GDAL's block-cache cap to :attr:`cache_bytes` for a run when it is lower; restore it after."""
        before = gdal.GetCacheMax()
        if self.cache_bytes <= before:
            yield
            return
        gdal.SetCacheMax(self.cache_bytes)
        try:
            yield
        finally:
            if gdal.GetCacheMax() == self.cache_bytes:  # nobody changed it meanwhile
                gdal.SetCacheMax(before)

    @contextmanager
    def here(self):
        """:attr:`threads` for the GDAL calls this thread makes (only), restored after."""
        before = gdal.GetThreadLocalConfigOption("GDAL_NUM_THREADS", None)
        gdal.SetThreadLocalConfigOption("GDAL_NUM_THREADS", self.threads)
        try:
            yield
        finally:
            gdal.SetThreadLocalConfigOption("GDAL_NUM_THREADS", before)


def for_run(device: str, onnx_threads, cache_bytes: int) -> GdalSettings:
    """A run's settings.  Threads: one when the network runs on the CPU on a thread per core --
    its threads take every core while the strips are read and written, and GDAL's threads beside
    them only compete with them (on 2 cores: the shipped model's run 0.1 s faster on one, the
    I/O-bound case no different) -- else every CPU (a GPU infers, or onnxruntime leaves cores
    free); ``GDAL_NUM_THREADS`` wins.  ``cache_bytes``: :func:`block_cache_need`."""
    cores = os.cpu_count() or 1
    one = device == "cpu" and (onnx_threads or cores) >= cores
    return GdalSettings(gdal_threads("1" if one else "ALL_CPUS"), int(cache_bytes))


def block_cache_need(block_size, pixel_interleaved: bool, band_bytes, read_bands, raster_width: int,
                     window_width: int, tile: int, overlap: int, ratio: float) -> int:
    """Bytes of GDAL block cache that keep the input blocks one strip of tiles reads, and the
    output blocks being written, until the next strip.  ``band_bytes``: bytes per pixel of each
    source band; ``read_bands``: the bands (1-based) the run reads; ``ratio``: working GSD over
    the source's.

    Consecutive strips share a row of blocks (the reader copies the overlap's rows from the
    last strip, and reads the rest: ``strips.StripReader``); when the cache cannot hold it,
    each strip (and each band of a pixel-interleaved file) decodes the same blocks again.
    Measured on a 10980 x 10980 x 4 DEFLATE GeoTIFF (cProfile, reading only): 5.4 s with a
    64 MB cache, 2.2 s with 128 MB.  More than that only fills up with blocks no strip reads
    again: on a raster 100,000 px wide, memory grew strip by strip until the cache was full."""
    bw, bh = block_size
    read = range(1, len(band_bytes) + 1) if pixel_interleaved else read_bands
    bytes_px = sum(band_bytes[b - 1] for b in read)
    rows = (tile - overlap) * ratio + 2 * bh                 # source rows of a strip's new blocks
    cols = min(raster_width, window_width + 2 * bw)
    outputs = 3 * 2 * 256 * cols / ratio                     # classes, confidence, mask: 2 block rows
    return int(1.25 * (rows * cols * bytes_px + outputs))


def bound_block_cache(nbytes: int = 64 * 1024 * 1024) -> None:
    """GDAL's block cache defaults to 5 % of RAM; the engine streams and needs little.  Keep a
    process's memory bounded (``nbytes``) unless the user set GDAL_CACHEMAX; a run raises the cap
    for its duration when a strip needs more (:meth:`GdalSettings.run`)."""
    if "GDAL_CACHEMAX" not in os.environ:
        gdal.SetCacheMax(nbytes)
