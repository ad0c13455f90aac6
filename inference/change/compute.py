"""The change itself, strip by strip over the common grid: each year's class areas and the
transitions from the first year to the last (per facility), in true hectares, and the transition
raster (``from x N + to``; uncertain change -- see :mod:`.doubt` -- ``N x N + from x N + to``).
A pixel that is no data, masked or outside the common ground in any year is no data in all of
them: never change.  Memory: one strip of every year."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal

from ..areas import PixelAreas
from ..errors import Cancelled
from ..grid import Grid
from ..input.masks import MASK_MIN
from .doubt import uncertain
from .grid import NODATA

ROWS = 256


@dataclass
class Counts:
    n_classes: int
    area_year: np.ndarray        # (years, facilities + 1, N) m2: index 0 = outside every facility
    transitions: np.ndarray      # (facilities + 1, N, N) m2, first year -> last year (certain and uncertain)
    common_m2: float             # the ground all inputs cover
    nodata_m2: float             # of it: no data (or masked) in some year
    pixels: int                  # compared pixels
    uncertain: np.ndarray = None   # (facilities + 1, N, N) m2: of ``transitions``, the uncertain change
    facility_m2: np.ndarray = None   # (facilities + 1,) m2 compared per facility (0: not covered)

    @property
    def certain(self) -> np.ndarray:
        return self.transitions - self.uncertain


def transition_nodata(n: int) -> int:
    return 255 if 2 * n * n <= 255 else 65535


def uncertain_code(n: int, f: int, t: int) -> int:
    return n * n + f * n + t


def compute(grid: Grid, n: int, years: Sequence[Tuple[str, Optional[str], Optional[str]]], common: str,
            facilities: Optional[str],
            n_facilities: int, out_path: str, meta: dict, progress: Callable[[float, str], None],
            cancel: Callable[[], bool], edges: Optional[str] = None) -> Counts:
    """``years``: per year, its class raster on the grid, the raster of its no-data pixels
    (a polygon input's class raster, or None) and its doubt raster on the grid (or None);
    ``edges``: the pixels near one year's own edge (:func:`.doubt.own_edges`), or None."""
    big = 2 * n * n > 255
    nd = transition_nodata(n)
    drv = gdal.GetDriverByName("GTiff")
    out = drv.Create(out_path, grid.width, grid.height, 1, gdal.GDT_UInt16 if big else gdal.GDT_Byte,
                     options=["TILED=YES", "COMPRESS=DEFLATE"])
    out.SetGeoTransform(grid.gt)
    out.SetProjection(grid.wkt)
    band = out.GetRasterBand(1)
    band.SetNoDataValue(nd)
    out.SetMetadata({k: str(v) for k, v in meta.items()})
    srcs = [(gdal.Open(c), gdal.Open(m) if m else None) for c, m, _ in years]
    doubts = [gdal.Open(d) if d else None for _, _, d in years]
    eds = gdal.Open(edges) if edges else None
    cds = gdal.Open(common)
    fds = gdal.Open(facilities) if facilities else None
    pa = PixelAreas(grid)
    F = n_facilities + 1
    area_year = np.zeros((len(years), F, n))
    trans = np.zeros((F, n, n))
    unsure = np.zeros((F, n, n))
    common_m2 = nodata_m2 = 0.0
    pixels = 0
    W = grid.width
    for y in range(0, grid.height, ROWS):
        if cancel():
            raise Cancelled("cancelled")
        h = min(ROWS, grid.height - y)
        inside = cds.GetRasterBand(1).ReadAsArray(0, y, W, h) == 1
        valid = inside.copy()
        cls, runs = [], []
        for c, m in srcs:
            a = c.GetRasterBand(1).ReadAsArray(0, y, W, h)
            mm = None
            if m is not None:
                mm = m.GetRasterBand(1).ReadAsArray(0, y, W, h)
                a = np.where((mm == NODATA) | (mm >= MASK_MIN), NODATA, a)
            valid &= a < n
            cls.append(a.astype(np.int64))
            runs.append(mm)
        areas = pa.rows_of(y, h)
        fac = fds.GetRasterBand(1).ReadAsArray(0, y, W, h).astype(np.int64) if fds is not None else np.zeros((h, W), np.int64)
        fac = np.where(fac <= n_facilities, fac, 0)
        w = areas[valid]
        fv = fac[valid]
        for k, a in enumerate(cls):
            area_year[k] += np.bincount(fv * n + a[valid], weights=w, minlength=F * n).reshape(F, n)
        code = cls[0] * n + cls[-1]
        trans += np.bincount(fv * n * n + code[valid], weights=w, minlength=F * n * n).reshape(F, n, n)
        doubt = uncertain(*[(doubts[k].GetRasterBand(1).ReadAsArray(0, y, W, h) if doubts[k] is not None else None,
                             runs[k], cls[k]) for k in (0, len(cls) - 1)],
                          eds.GetRasterBand(1).ReadAsArray(0, y, W, h) if eds is not None else None)
        doubt &= valid & (cls[0] != cls[-1])
        unsure += np.bincount(fac[doubt] * n * n + code[doubt], weights=areas[doubt],
                              minlength=F * n * n).reshape(F, n, n)
        code = np.where(doubt, code + n * n, code)
        common_m2 += float(areas[inside].sum())
        nodata_m2 += float(areas[inside & ~valid].sum())
        pixels += int(valid.sum())
        band.WriteArray(np.where(valid, code, nd).astype(np.uint16 if big else np.uint8), 0, y)
        progress(0.1 + 0.6 * (y + h) / grid.height, "comparing rows %d of %d" % (y + h, grid.height))
    band.FlushCache()
    band = out = cds = fds = None
    srcs = doubts = eds = None
    return Counts(n, area_year, trans, common_m2, nodata_m2, pixels, unsure, area_year[0].sum(axis=1))
