"""One equal-area measure for every area the product reports: true areas on the ellipsoid, on a
Lambert azimuthal equal-area projection centred on the ground measured (a UTM grid's own square
metres are off by its scale factor, up to about 0.1 %; a geographic grid's are square degrees).

:class:`EqualArea` measures polygons (a run's regions, a change map's) and a grid's pixels (a
class raster's statistics, a change map's areas) alike, so that the same polygon gets the same
hectares whichever of them reports it; :func:`hectares` turns its square metres into what is
reported.  Pixel areas: each pixel's corners on a lattice every ``AREA_STEP`` pixels are
projected, the cell areas interpolated in between (smooth on any grid; exact on a projected one
to a few parts in a billion).
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
from osgeo import ogr, osr

from .grid import Grid

_A = 6378137.0
_F = 1 / 298.257223563
_E2 = _F * (2 - _F)

M2_PER_HA = 1e4
AREA_STEP = 64


def metres_per_degree(lat_deg: float) -> Tuple[float, float]:
    """(east-west, north-south) metres per degree on the WGS84 ellipsoid at ``lat``."""
    phi = math.radians(lat_deg)
    s = math.sin(phi)
    w = math.sqrt(1 - _E2 * s * s)
    n = _A / w                          # prime vertical radius
    m = _A * (1 - _E2) / w ** 3         # meridional radius
    return math.radians(1) * n * math.cos(phi), math.radians(1) * m


def hectares(m2: float) -> float:
    """Square metres (of :class:`EqualArea`) as hectares."""
    return m2 / M2_PER_HA


def _srs(srs_or_wkt) -> osr.SpatialReference:
    if isinstance(srs_or_wkt, osr.SpatialReference):
        return srs_or_wkt
    s = osr.SpatialReference()
    s.ImportFromWkt(srs_or_wkt)
    s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return s


def equal_area_at(geom: ogr.Geometry, srs: osr.SpatialReference) -> osr.SpatialReference:
    """A Lambert azimuthal equal-area projection centred on ``geom`` (in ``srs``): true areas
    and buffers in metres, wherever on Earth it lies."""
    c = geom.Centroid().Clone()
    wgs = osr.SpatialReference()
    wgs.ImportFromEPSG(4326)
    wgs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    c.Transform(osr.CoordinateTransformation(srs, wgs))
    laea = osr.SpatialReference()
    laea.SetWellKnownGeogCS("WGS84")
    laea.SetLAEA(c.GetY(), c.GetX(), 0.0, 0.0)
    laea.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return laea


class EqualArea:
    """True areas (m2) of geometries and pixels in one CRS (``srs``: an SRS or WKT), on an
    equal-area projection centred at ``centre`` (x, y in that CRS: the ground measured)."""

    def __init__(self, srs, centre: Tuple[float, float]):
        self.srs = _srs(srs)
        self.laea = equal_area_at(ogr.Geometry(wkt="POINT (%r %r)" % tuple(centre)), self.srs)
        self.to_laea = osr.CoordinateTransformation(self.srs, self.laea)

    @classmethod
    def of_grid(cls, grid: Grid) -> "EqualArea":
        return cls(grid.wkt, grid.center)

    def area_m2(self, geom: ogr.Geometry) -> float:
        g = geom.Clone()
        g.Transform(self.to_laea)
        return g.GetArea()

    def pixel_areas(self, grid: Grid) -> "PixelAreas":
        return PixelAreas(grid, self)


def mean_pixel_m2(grid: Grid) -> float:
    """The mean true area (m2) of a grid's pixels (for pixels counted, not placed)."""
    return EqualArea.of_grid(grid).area_m2(ogr.CreateGeometryFromWkt(grid.box_wkt())) / float(grid.width * grid.height)


class PixelAreas:
    """The true area (m2) of a grid's pixels, for any rows."""

    def __init__(self, grid: Grid, measure: EqualArea = None):
        self.grid = grid
        ct = (measure or EqualArea.of_grid(grid)).to_laea
        cols = np.unique(np.r_[np.arange(0, grid.width, AREA_STEP), grid.width - 1])
        rows = np.unique(np.r_[np.arange(0, grid.height, AREA_STEP), grid.height - 1])
        self.cols, self.rows = cols, rows
        lattice = np.zeros((len(rows), len(cols)))
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                pts = [grid.xy(c + dx, r + dy) for dx, dy in ((0, 0), (1, 0), (1, 1), (0, 1))]
                xy = [ct.TransformPoint(x, y)[:2] for x, y in pts]
                lattice[i, j] = 0.5 * abs(sum(xy[k][0] * xy[(k + 1) % 4][1] - xy[(k + 1) % 4][0] * xy[k][1]
                                              for k in range(4)))
        self.lattice = lattice

    def rows_of(self, y0: int, n: int) -> np.ndarray:
        """(n, width) areas of rows y0..y0+n."""
        ys = np.arange(y0, y0 + n)
        by_row = np.stack([np.interp(ys, self.rows, self.lattice[:, j]) for j in range(len(self.cols))], axis=1)
        xs = np.arange(self.grid.width)
        return np.stack([np.interp(xs, self.cols, by_row[i]) for i in range(n)])

    def total_m2(self, mask_rows) -> float:
        return float(sum((self.rows_of(y, m.shape[0]) * m).sum() for y, m in mask_rows))

    def by_value_m2(self, band, rows: int = 256, minlength: int = 256) -> np.ndarray:
        """The area (m2) of each value of a GDAL band on this grid: ``[value] -> m2``."""
        out = np.zeros(minlength)
        for y in range(0, self.grid.height, rows):
            n = min(rows, self.grid.height - y)
            a = band.ReadAsArray(0, y, self.grid.width, n)
            out += np.bincount(a.ravel(), weights=self.rows_of(y, n).ravel(), minlength=minlength)[:minlength]
        return out


def area_perimeter_m(geom, srs, measure: EqualArea) -> tuple:
    """True area (m2: ``measure``'s, :mod:`areas`) and perimeter (m) of ``geom`` in ``srs`` (a
    geographic CRS's: on an equal-area projection centred on it)."""
    if srs.IsGeographic():
        g = geom.Clone()
        g.Transform(osr.CoordinateTransformation(srs, equal_area_at(geom, srs)))
        return measure.area_m2(geom), g.Boundary().Length()
    unit = srs.GetLinearUnits() or 1.0
    return measure.area_m2(geom), geom.Boundary().Length() * unit


def simplified(geom, tol_m: float, srs):
    """``geom`` simplified by ``tol_m`` metres (topology kept); ``geom`` itself when that fails or
    gives no valid single polygon."""
    if tol_m <= 0:
        return geom
    if srs.IsGeographic():
        tol = tol_m / max(metres_per_degree(geom.Centroid().GetY()))
    else:
        tol = tol_m / (srs.GetLinearUnits() or 1.0)
    g = geom.SimplifyPreserveTopology(tol)
    if g is None or g.IsEmpty():
        return geom
    if not g.IsValid():
        try:
            g = g.MakeValid()
        except RuntimeError:  # GEOS could not repair it: keep the unsimplified polygon
            return geom
        if g is None or g.IsEmpty() or not g.IsValid() or g.GetGeometryType() != ogr.wkbPolygon:
            return geom   # (a repair that split it, or made it something else: kept as it was)
    return g
