"""One type for geotransform arithmetic: a raster's :class:`Grid` (GDAL's six numbers, its size,
its CRS) and a :class:`Window` of it (columns and rows), in the spirit of rasterio's Affine and
Window.  Pixel ``(col, row)`` is the corner of that pixel: ``xy(col + 0.5, row + 0.5)`` its centre.

Every coordinate is computed the way GDAL's geotransform reads (``gt[0] + col * gt[1] + row *
gt[2]``, ...), term by term, so that the results are the same floats the hand-written sums gave.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple


def box_wkt(x0: float, y0: float, x1: float, y1: float) -> str:
    """The box of corners ``(x0, y0)`` and ``(x1, y1)`` as a WKT polygon (coordinates written exactly)."""
    return "POLYGON((%r %r,%r %r,%r %r,%r %r,%r %r))" % (x0, y0, x1, y0, x1, y1, x0, y1, x0, y0)


@dataclass(frozen=True)
class Window:
    """Columns ``col .. col + width`` and rows ``row .. row + height`` of a grid."""
    col: int
    row: int
    width: int
    height: int

    @classmethod
    def of(cls, window: Sequence[int]) -> "Window":
        """A ``(col, row, width, height)`` tuple (or a Window) as a Window."""
        return window if isinstance(window, Window) else cls(*(int(v) for v in window))


@dataclass(frozen=True)
class Grid:
    """``width`` x ``height`` pixels placed by the geotransform ``gt``, in the CRS ``wkt`` (``source``:
    the raster it is read from, when one is)."""
    gt: Tuple[float, ...]
    width: int
    height: int
    wkt: str = ""
    source: str = ""

    @classmethod
    def of_dataset(cls, ds) -> "Grid":
        """A GDAL dataset's grid."""
        return cls(tuple(ds.GetGeoTransform()), ds.RasterXSize, ds.RasterYSize, ds.GetProjection() or "",
                   ds.GetDescription() or "")

    @property
    def north_up(self) -> bool:
        return self.gt[2] == 0 and self.gt[4] == 0

    @property
    def pixel_size(self) -> Tuple[float, float]:
        """(width, height) of a pixel in the CRS's units."""
        return abs(self.gt[1]), abs(self.gt[5])

    def describe(self) -> str:
        """The grid in words: its CRS, pixels and size, and the raster it is read from."""
        import os
        from osgeo import osr
        srs = osr.SpatialReference()
        srs.ImportFromWkt(self.wkt)
        name = srs.GetName() or "?"
        code = srs.GetAuthorityCode(None)
        unit = "degrees" if srs.IsGeographic() else (srs.GetLinearUnitsName() or "units")
        return "%s%s, pixels of %g x %g %s, %d x %d, from %s" % (
            name, " (EPSG:%s)" % code if code else "", self.pixel_size[0], self.pixel_size[1], unit, self.width,
            self.height, os.path.basename(self.source))

    def xy(self, col, row):
        """The map coordinates of pixel position ``(col, row)`` (numbers or numpy arrays)."""
        gt = self.gt
        return gt[0] + col * gt[1] + row * gt[2], gt[3] + col * gt[4] + row * gt[5]

    def pixel_of(self, x, y):
        """The (fractional) pixel position ``(col, row)`` of map coordinates (a north-up grid)."""
        gt = self.gt
        return (x - gt[0]) / gt[1], (y - gt[3]) / gt[5]

    def whole(self) -> Window:
        return Window(0, 0, self.width, self.height)

    def corners(self, window: Optional[Sequence[int]] = None) -> Tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``: the map coordinates of the window's first corner (its first column and
        row) and of the opposite one (the whole grid without a window)."""
        w = self.whole() if window is None else Window.of(window)
        x0, y0 = self.xy(w.col, w.row)
        x1, y1 = self.xy(w.col + w.width, w.row + w.height)
        return x0, y0, x1, y1

    def extent_of(self, window: Optional[Sequence[int]] = None) -> Tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of the window (of the whole grid without one)."""
        w = self.whole() if window is None else Window.of(window)
        if self.north_up:
            x0, y0, x1, y1 = self.corners(w)
            return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)
        pts = [self.xy(c, r) for c in (w.col, w.col + w.width) for r in (w.row, w.row + w.height)]
        return (min(p[0] for p in pts), min(p[1] for p in pts), max(p[0] for p in pts), max(p[1] for p in pts))

    @property
    def bounds(self) -> Tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of the whole grid."""
        return self.extent_of()

    @property
    def center(self) -> Tuple[float, float]:
        return self.xy(self.width / 2.0, self.height / 2.0)

    def box_wkt(self, window: Optional[Sequence[int]] = None) -> str:
        """The window (the whole grid without one) as a WKT polygon of its four corners (a north-up grid)."""
        return box_wkt(*self.corners(window))

    def sub(self, window: Sequence[int]) -> "Grid":
        """The grid of a window of this one (its pixels, placed where they are here)."""
        w = Window.of(window)
        gt = self.gt
        x, y = self.xy(w.col, w.row)
        return Grid((x, gt[1], gt[2], y, gt[4], gt[5]), w.width, w.height, self.wkt, self.source)

    def window_of(self, xmin: float, ymin: float, xmax: float, ymax: float, tol: float = 1e-6) -> Window:
        """The smallest window covering the extent (a north-up grid; ``tol``: pixels that an edge may
        stray into a pixel without taking it); it may reach beyond the grid, or be empty."""
        ca, ra = self.pixel_of(xmin, ymax)
        cb, rb = self.pixel_of(xmax, ymin)
        c0, c1 = int(math.floor(min(ca, cb) + tol)), int(math.ceil(max(ca, cb) - tol))
        r0, r1 = int(math.floor(min(ra, rb) + tol)), int(math.ceil(max(ra, rb) - tol))
        return Window(c0, r0, c1 - c0, r1 - r0)

    def at_resolution(self, step: float) -> "Grid":
        """The grid of pixels ``step`` times as large, from the same corner (covering this one)."""
        gt = self.gt
        return Grid((gt[0], gt[1] * step, gt[2] * step, gt[3], gt[4] * step, gt[5] * step),
                    int(math.ceil(self.width / step)), int(math.ceil(self.height / step)), self.wkt, self.source)
