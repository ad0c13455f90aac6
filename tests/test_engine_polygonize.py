"""Polygonising in bands of rows on worker threads gives GDAL's Polygonize of the whole raster:
the same regions, the same vertices, the same coordinates."""
import collections

import numpy as np
import pytest
from osgeo import gdal, ogr

from inference.errors import Cancelled
from inference.output.polygons import BandPolygonizer

gdal.UseExceptions()
ogr.UseExceptions()

NORTH_UP = (300000.0, 10.0, 0.0, 7800000.0, 0.0, -10.0)


def _rings(g):
    """A polygon's rings, each as its vertices from the smallest on, in one turning direction
    (Polygonize's shells turn either way), and the sign each ring really turns."""
    out = []
    for i in range(g.GetGeometryCount()):
        pts = g.GetGeometryRef(i).GetPoints()[:-1]
        area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]))
        k = pts.index(min(pts))
        pts = pts[k:] + pts[:k]
        pts = min(pts, [pts[0]] + pts[1:][::-1])
        out.append((tuple(pts), area > 0))
    return out[0][0], tuple(sorted(r for r, _ in out[1:])), [s for _, s in out[1:]]


def _layer(path=None):
    ds = (ogr.GetDriverByName("GPKG").CreateDataSource(str(path)) if path else
          ogr.GetDriverByName("Memory").CreateDataSource(""))
    lyr = ds.CreateLayer("p", None, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
    return ds, lyr


def _features(lyr):
    """Polygons by (value, shell, holes), and the turning of every hole."""
    regions, holes = collections.Counter(), set()
    for f in lyr:
        g = f.GetGeometryRef()
        assert g.GetGeometryType() == ogr.wkbPolygon and g.IsValid()
        shell, hs, signs = _rings(g)
        regions[(f.GetField(0), shell, hs)] += 1
        holes.update(signs)
    return regions, holes


def _whole(values, fg, gt):
    """GDAL's Polygonize of the whole raster."""
    d = gdal.GetDriverByName("MEM").Create("", values.shape[1], values.shape[0], 2, gdal.GDT_Byte)
    d.SetGeoTransform(gt)
    d.GetRasterBand(1).WriteArray(values)
    d.GetRasterBand(2).WriteArray(fg)
    ds, lyr = _layer()
    gdal.Polygonize(d.GetRasterBand(1), d.GetRasterBand(2), lyr, 0, [])
    return _features(lyr)


def _banded(values, fg, gt, tmp_path, piece_rows, workers, push_rows):
    pz = BandPolygonizer(values.shape[1], values.shape[0], gt, str(tmp_path), workers=workers, piece_rows=piece_rows)
    try:
        for y in range(0, values.shape[0], push_rows):
            pz.push(values[y:y + push_rows], fg[y:y + push_rows], y)
        ds, lyr = _layer(tmp_path / "out.gpkg")
        pz.finish(ds, lyr)
    finally:
        pz.close()
    return _features(lyr)


def _blobs(rng, shape, classes=3, cell=6, noise=0.15):
    """Smooth regions of a few classes (large regions across many bands, holes, regions touching
    themselves at corners) with pixel noise, a little nodata, and their foreground mask."""
    base = rng.integers(0, classes, (shape[0] // cell + 2, shape[1] // cell + 2))
    v = np.kron(base, np.ones((cell, cell), np.int64))[:shape[0], :shape[1]]
    flip = rng.random(shape) < noise
    v[flip] = rng.integers(0, classes, flip.sum())
    v = v.astype(np.uint8)
    v[rng.random(shape) < 0.005] = 255
    return v, ((v > 0) & (v < 255)).astype(np.uint8)


@pytest.mark.parametrize("seed,piece_rows,workers,push_rows", [
    (0, 7, 2, 50), (1, 1, 2, 13), (2, 32, 1, 200), (3, 3, 2, 1), (4, 1000, 2, 97)])
def test_bands_give_the_whole_rasters_polygons(tmp_path, seed, piece_rows, workers, push_rows):
    rng = np.random.default_rng(seed)
    values, fg = _blobs(rng, (203, 157))
    whole, whole_holes = _whole(values, fg, NORTH_UP)
    banded, banded_holes = _banded(values, fg, NORTH_UP, tmp_path, piece_rows, workers, push_rows)
    assert sum(whole.values()) > 50 and any(h for _, _, h in whole)        # holes, many regions
    assert banded == whole
    assert banded_holes <= whole_holes                                    # holes turn as GDAL's do


def test_one_region_across_every_band_with_a_hole_across_seams_and_a_corner_touch(tmp_path):
    values = np.zeros((40, 30), np.uint8)
    values[2:38, 2:28] = 1          # a frame of class 1 over all bands...
    values[8:30, 8:22] = 0          # ...around a hole that several seams cut
    values[30, 7] = 0               # the hole's corner touches ... (diagonal)
    values[12:16, 12:16] = 1        # an island in the hole
    values[20, 22] = 1
    fg = (values == 1).astype(np.uint8)
    whole, _ = _whole(values, fg, NORTH_UP)
    for rows in (1, 2, 5, 9):
        (tmp_path / str(rows)).mkdir()
        banded, _ = _banded(values, fg, NORTH_UP, tmp_path / str(rows), rows, 2, 40)
        assert banded == whole, rows


def test_coordinates_follow_gdals_formula_on_a_rotated_grid(tmp_path):
    rng = np.random.default_rng(7)
    values, fg = _blobs(rng, (90, 70), classes=2, cell=9, noise=0.05)
    gt = (-48.123456789, 0.000089831528, 0.0000123, -20.987654321, 0.0000071, -0.000089831528)
    whole, _ = _whole(values, fg, gt)
    banded, _ = _banded(values, fg, gt, tmp_path, 11, 2, 30)
    assert banded == whole


def test_cancel_stops_the_join(tmp_path):
    values, fg = _blobs(np.random.default_rng(1), (60, 40))
    pz = BandPolygonizer(40, 60, NORTH_UP, str(tmp_path), piece_rows=8)
    try:
        pz.push(values, fg, 0)
        ds, lyr = _layer(tmp_path / "out.gpkg")
        with pytest.raises(Cancelled):
            pz.finish(ds, lyr, cancel=lambda: True)
    finally:
        pz.close()


def test_rows_out_of_order_are_refused(tmp_path):
    pz = BandPolygonizer(10, 10, NORTH_UP, str(tmp_path))
    try:
        with pytest.raises(ValueError):
            pz.push(np.zeros((2, 10), np.uint8), np.zeros((2, 10), np.uint8), 3)
    finally:
        pz.close()


def test_a_run_polygonised_in_small_bands_gives_the_polygons_of_its_class_raster(tmp_path, monkeypatch):
    """End to end: the bands the streamed sieve hands out, polygonised as they come, give one
    Polygonize of the class raster the run wrote (its foreground: not background, not nodata)."""
    from engine_helpers import blobs, make_raster, pixel_model
    from inference import SegmentOptions, execute, open_model, plan
    monkeypatch.setenv("TM_POLYGONIZE_PIECE_ROWS", "9")
    model = open_model(pixel_model(str(tmp_path / "m.onnx"), [10, 0, 0], -2.0))
    raster = make_raster(str(tmp_path / "r.tif"), blobs(230, 180, seed=3), descriptions=["B4", "B3", "B2"])
    r = execute(plan(raster, model, SegmentOptions(device="cpu", min_area_ha=0.0), str(tmp_path / "out")))
    ds = gdal.Open(r.class_raster)
    values = ds.ReadAsArray()
    gt = ds.GetGeoTransform()
    ds = None
    whole, _ = _whole(values, ((values > 0) & (values < 250)).astype(np.uint8), gt)
    out = ogr.Open(r.polygons)
    lyr = out.GetLayer(0)
    got, _ = _features(lyr)
    assert len(whole) > 5 and got == whole
    lyr = out = None


def test_geos_join_where_the_edge_join_gives_up_gives_the_same_polygons(tmp_path, monkeypatch):
    """The fallback for a region whose seam edges do not chain: GEOS's union of its pieces."""
    import inference.output.polygons as pz_mod
    monkeypatch.setattr(pz_mod, "_merge", lambda parts: None)
    values, fg = _blobs(np.random.default_rng(5), (120, 90))
    whole, whole_holes = _whole(values, fg, NORTH_UP)
    banded, banded_holes = _banded(values, fg, NORTH_UP, tmp_path, 13, 2, 40)
    assert banded == whole and banded_holes <= whole_holes


@pytest.mark.parametrize("height,piece_rows,workers,want", [
    (300, 1024, 2, [(0, 150), (150, 150)]),           # the last band, in two halves for two workers
    (2500, 1024, 2, [(0, 1024), (1024, 1024), (2048, 226), (2274, 226)]),
    (100, 1024, 2, [(0, 100)]),                       # too few rows for a seam
    (300, 1024, 1, [(0, 300)])])                      # one worker: nothing to share
def test_the_band_that_ends_the_raster_is_shared_by_two_workers(tmp_path, height, piece_rows, workers, want):
    rng = np.random.default_rng(5)
    values, fg = _blobs(rng, (height, 40))
    pz = BandPolygonizer(40, height, NORTH_UP, str(tmp_path), workers=workers, piece_rows=piece_rows)
    try:
        for y in range(0, height, 250):
            pz.push(values[y:y + 250], fg[y:y + 250], y)
        assert [(y0, n) for y0, n, _ in pz.pieces] == want
        ds, lyr = _layer(tmp_path / "out.gpkg")
        pz.finish(ds, lyr)
    finally:
        pz.close()
    assert _features(lyr) == _whole(values, fg, NORTH_UP)
