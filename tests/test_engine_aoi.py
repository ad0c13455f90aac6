"""Engine: an area of interest (polygons) limits a run to the pixels inside it."""
import json

import numpy as np
import pytest
from osgeo import gdal, osr

from engine_helpers import features, make_raster, pixel_model, read, run_cli, true_m2
from inference import SegmentOptions, TailingsError, segment

RGB = ["B4", "B3", "B2"]
X0, Y0 = 300000.0, 9000000.0   # raster origin (EPSG:32723), 10 m pixels
W, H = 120, 90


def _raster(tmp_path, nodata_rows=0):
    rng = np.random.default_rng(5)
    cells = rng.random((H // 6 + 1, W // 6 + 1)) < 0.5
    mask = np.kron(cells, np.ones((6, 6), bool))[:H, :W]
    img = np.full((3, H, W), 1000, np.uint16)
    img[0][mask] = 3000
    if nodata_rows:
        img[:, :nodata_rows] = 0
    return make_raster(str(tmp_path / "r.tif"), img, descriptions=RGB, origin=(X0, Y0)), mask


def _model(tmp_path):
    return pixel_model(str(tmp_path / "m.onnx"), [10, 0, 0], -2.0, tile=32, overlap=8)


# a triangle whose vertices sit off pixel centres and edges (pixel col, row)
TRI = [(12.3, 8.6), (101.7, 20.2), (40.4, 80.9)]


def _wkt(pts):
    ring = ", ".join("%r %r" % (X0 + 10 * c, Y0 - 10 * r) for c, r in pts + pts[:1])
    return "POLYGON((%s))" % ring


def _inside(pts, shape, c0, r0):
    """Pixels of the window at (c0, r0) whose centre lies inside the triangle."""
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]]
    px, py = cc + c0 + 0.5, rr + r0 + 0.5
    (ax, ay), (bx, by), (cx, cy) = pts
    def side(x1, y1, x2, y2):
        return (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    s1, s2, s3 = side(ax, ay, bx, by), side(bx, by, cx, cy), side(cx, cy, ax, ay)
    return ((s1 > 0) & (s2 > 0) & (s3 > 0)) | ((s1 < 0) & (s2 < 0) & (s3 < 0))


def test_pixels_outside_the_area_get_no_class(tmp_path):
    r, mask = _raster(tmp_path)
    m = _model(tmp_path)
    res = segment(r, m, str(tmp_path / "out"), SegmentOptions(device="cpu", aoi=[_wkt(TRI)], min_area_ha=0))
    ds = gdal.Open(res.class_raster)
    # the run covers the area's bounding box, on the source grid
    c0, r0 = 12, 8
    assert (ds.RasterXSize, ds.RasterYSize) == (102 - c0, 81 - r0)
    assert ds.GetGeoTransform() == pytest.approx((X0 + 10 * c0, 10.0, 0.0, Y0 - 10 * r0, 0.0, -10.0))
    ds = None
    cls = read(res.class_raster)
    inside = _inside(TRI, cls.shape, c0, r0)
    assert inside.sum() > 1000
    np.testing.assert_array_equal(cls[~inside], 255)
    np.testing.assert_array_equal(cls[inside], mask[r0:81, c0:102][inside].astype(np.uint8))
    conf = read(res.confidence_raster)
    assert (conf[~inside] == 255).all() and (conf[inside] != 255).all()
    assert res.valid_pixels == int(inside.sum())
    # polygons: the classified pixels, nothing outside the area
    feats, _ = features(res.polygons)
    assert sum(a for _, a, _, _ in feats) == pytest.approx(true_m2((cls == 1).sum() * 100.0, res.class_raster), rel=1e-5)


def test_area_from_a_vector_file_in_another_crs(tmp_path):
    """The command line's --aoi: a GeoJSON in EPSG:4326, reprojected onto the raster's CRS."""
    r, mask = _raster(tmp_path)
    m = _model(tmp_path)
    utm, geo = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(32723)
    geo.ImportFromEPSG(4326)
    for s in (utm, geo):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(utm, geo)
    lonlat = [ct.TransformPoint(X0 + 10 * c, Y0 - 10 * rw)[:2] for c, rw in TRI + TRI[:1]]
    gj = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [lonlat]}}]}
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps(gj))
    out = tmp_path / "out"
    p = run_cli(["segment", r, "--model", m, "--out", str(out), "--aoi", str(path), "--min-area", "0"])
    assert p.returncode == 0, p.stderr
    cls = read(str(out / "r_classes.tif"))
    assert cls.shape == (73, 90)
    # as the same triangle given in the raster's CRS, but for pixel centres that the
    # reprojection moved across an edge (a km-long edge bends by far less than a pixel)
    expected = np.where(_inside(TRI, cls.shape, 12, 8), mask[8:81, 12:102], 255).astype(np.uint8)
    assert (cls != expected).sum() <= 3


@pytest.mark.parametrize("aoi, message", [
    (["POLYGON((0 0, 10 0, 10 10, 0 0))"], "does not overlap the raster"),
    (["LINESTRING(300100 8999900, 300500 8999500)"], "not a polygon"),
    (["POLYGON((300100 8999900, 300500"], "not valid WKT"),
    ([], "holds no polygon"),
])
def test_bad_areas_are_clear_errors(tmp_path, aoi, message):
    r, _ = _raster(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(TailingsError, match=message):
        segment(r, _model(tmp_path), str(out), SegmentOptions(device="cpu", aoi=aoi))
    assert not out.exists() or not any(out.iterdir())


def test_area_over_nodata_only_is_an_error(tmp_path):
    r, _ = _raster(tmp_path, nodata_rows=40)
    out = tmp_path / "out"
    aoi = _wkt([(10.2, 5.1), (60.3, 5.2), (30.1, 30.3)])   # rows 5..31: all nodata
    with pytest.raises(TailingsError, match="no valid pixels inside the area of interest"):
        segment(r, _model(tmp_path), str(out), SegmentOptions(device="cpu", aoi=[aoi]))
    assert not out.exists() or not any(out.iterdir())


def test_area_on_a_resampled_run(tmp_path):
    """A 20 m raster runs on the model's 10 m grid: the area is burnt on that grid and the
    result comes back on the source grid, outside pixels without a class."""
    rng = np.random.default_rng(7)
    mask = np.kron(rng.random((10, 12)) < 0.5, np.ones((6, 6), bool))[:57, :66]
    img = np.full((3,) + mask.shape, 1000, np.uint16)
    img[0][mask] = 3000
    r = make_raster(str(tmp_path / "r20.tif"), img, descriptions=RGB, origin=(X0, Y0), pixel=20.0)
    tri = [(3.3, 2.6), (60.7, 10.2), (20.4, 50.9)]   # in 20 m pixels
    ring = ", ".join("%r %r" % (X0 + 20 * c, Y0 - 20 * rw) for c, rw in tri + tri[:1])
    res = segment(r, _model(tmp_path), str(tmp_path / "out"),
                  SegmentOptions(device="cpu", aoi=["POLYGON((%s))" % ring], min_area_ha=0))
    assert any("resampled" in n for n in res.notes)
    cls = read(res.class_raster)
    ds = gdal.Open(res.class_raster)
    assert ds.GetGeoTransform() == pytest.approx((X0 + 20 * 3, 20.0, 0.0, Y0 - 20 * 2, 0.0, -20.0))
    ds = None
    inside = _inside(tri, cls.shape, 3, 2)
    # away from the edges (where a 20 m pixel straddles the 10 m mask's border) all is exact
    edge = np.zeros_like(inside)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            edge |= np.roll(np.roll(inside, dy, 0), dx, 1) != inside
    far_in, far_out = inside & ~edge, ~inside & ~edge
    assert far_in.sum() > 500 and far_out.sum() > 500
    np.testing.assert_array_equal(cls[far_out], 255)
    blocks = mask[2:2 + cls.shape[0], 3:3 + cls.shape[1]]
    np.testing.assert_array_equal(cls[far_in], blocks[far_in].astype(np.uint8))
