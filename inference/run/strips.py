"""Reading the working grid strip by strip: each strip of tile rows read (only its new rows),
checked (nodata, non-finite, outside the area of interest, masked) and normalised for the network."""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
from osgeo import gdal, gdal_array

from ..input import aoi as aoilib
from ..errors import InputError, first_line
from .work_grid import WorkGrid
from ..output.writing import STAGES


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
            with self.p.gdal.here():  # decode blocks in parallel (or not: gdal_settings.for_run)
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
