"""Engine: georeferencing, resampling to the model's GSD, nodata, colour table, true areas,
and agreement between the sieved class raster and the polygons."""
import glob
import math
import os

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from engine_helpers import (SHARED_TILES, blobs, needs_shared_tiles, features, labels4, make_raster, pixel_model, read,
                            true_m2)
from inference import SegmentOptions, segment

RGB = ["B4", "B3", "B2"]
FG, BG = 3000, 1000   # DN of band 1 that the pixel model calls tailings / background


def _model(tmp_path, **kw):
    # sigmoid(10 * DN * 1e-4 - 2): DN 3000 -> p 0.73, DN 1000 -> p 0.27
    return pixel_model(str(tmp_path / "m.onnx"), [10, 0, 0], -2.0, **kw)


def _image(mask):
    img = np.full((3,) + mask.shape, BG, np.uint16)
    img[0][mask] = FG
    return img


def _srs(epsg):
    s = osr.SpatialReference()
    s.ImportFromEPSG(epsg)
    s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return s


def _same_grid(out_path, src_path):
    o, s = gdal.Open(out_path), gdal.Open(src_path)
    assert (o.RasterXSize, o.RasterYSize) == (s.RasterXSize, s.RasterYSize)
    np.testing.assert_allclose(o.GetGeoTransform(), s.GetGeoTransform(), rtol=0, atol=1e-9)
    so, ss = osr.SpatialReference(wkt=o.GetProjection()), osr.SpatialReference(wkt=s.GetProjection())
    assert so.IsSame(ss), (o.GetProjection(), s.GetProjection())


def _block_mask(h, w, block, seed=0):
    rng = np.random.default_rng(seed)
    cells = rng.random(((h + block - 1) // block, (w + block - 1) // block)) < 0.4
    return np.kron(cells, np.ones((block, block), bool))[:h, :w], block


def _dilate(mask, r):
    h, w = mask.shape
    p = np.pad(mask, r)
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= p[dy:dy + h, dx:dx + w]
    return out


def _interior(mask, margin):
    """Pixels at least ``margin`` px from a change of ``mask`` (and from the raster edge)."""
    h, w = mask.shape
    ok = np.ones(mask.shape, bool)
    for dy in range(-margin, margin + 1):
        for dx in range(-margin, margin + 1):
            shifted = np.roll(np.roll(mask, dy, 0), dx, 1)
            ok &= shifted == mask
    ok[:margin] = ok[-margin:] = False
    ok[:, :margin] = ok[:, -margin:] = False
    return ok


# --------------------------------------------------------------------------------------
# Grid, CRS, nodata, colour table
# --------------------------------------------------------------------------------------

def _compressed_and_tiled(path):
    """Delivered rasters are compressed (ZSTD where this GDAL has it, else DEFLATE) and tiled
    (only the run's scratch files are not)."""
    has_zstd = "ZSTD" in gdal.GetDriverByName("GTiff").GetMetadataItem("DMD_CREATIONOPTIONLIST")
    ds = gdal.Open(path)
    assert ds.GetMetadata("IMAGE_STRUCTURE").get("COMPRESSION") == ("ZSTD" if has_zstd else "DEFLATE"), path
    assert ds.GetRasterBand(1).GetBlockSize() == [256, 256], path
    ds = None


def test_outputs_on_the_source_grid_with_nodata_colours_and_names(tmp_path):
    mask, _ = _block_mask(90, 110, 10, seed=1)
    img = _image(mask)
    img[:, 30:50, 60:85] = 0                      # nodata block, overlapping foreground and background
    nod = (img == 0).all(axis=0)
    assert (mask & nod).any() and (~mask & nod).any()
    r = make_raster(str(tmp_path / "r.tif"), img, descriptions=RGB, epsg=32723)
    m = _model(tmp_path)
    res = segment(r, m, str(tmp_path / "out"), SegmentOptions(device="cpu"))
    for p in (res.class_raster, res.confidence_raster):
        _same_grid(p, r)
        _compressed_and_tiled(p)
    cls, conf = read(res.class_raster), read(res.confidence_raster)
    expected = np.where(mask, 1, 0).astype(np.uint8)
    expected[nod] = 255
    np.testing.assert_array_equal(cls, expected)
    assert ((conf == 255) == nod).all() and conf[~nod].max() <= 100 and conf[~nod].min() >= 50

    ds = gdal.Open(res.class_raster)
    b = ds.GetRasterBand(1)
    assert b.GetNoDataValue() == 255
    assert b.DataType == gdal.GDT_Byte
    assert b.GetCategoryNames()[:2] == ["background", "tailings"]
    ct = b.GetRasterColorTable()
    assert ct is not None and b.GetRasterColorInterpretation() == gdal.GCI_PaletteIndex
    from engine_helpers import our_meta
    for c in our_meta(m)["classes"]:
        col = c["color"]
        assert ct.GetColorEntry(c["id"])[:3] == tuple(int(col[k:k + 2], 16) for k in (1, 3, 5))
        assert ct.GetColorEntry(c["id"])[3] == 255
    assert ct.GetColorEntry(255)[3] == 0
    md = ds.GetMetadata()
    assert md["CLASS_0"] == "background" and md["CLASS_1"] == "tailings" and md["TM_MODEL"] == "m"
    assert gdal.Open(res.confidence_raster).GetRasterBand(1).GetNoDataValue() == 255
    ds = None

    # Polygons: same CRS, nothing over the nodata block, exactly the foreground pixels.
    feats, srs = features(res.polygons)
    assert srs.IsSame(_srs(32723))
    gt = gdal.Open(r).GetGeoTransform()
    hole = ogr.CreateGeometryFromWkt("POLYGON((%f %f,%f %f,%f %f,%f %f,%f %f))" % (
        gt[0] + 60 * 10 + 1, gt[3] - 30 * 10 - 1, gt[0] + 85 * 10 - 1, gt[3] - 30 * 10 - 1,
        gt[0] + 85 * 10 - 1, gt[3] - 50 * 10 + 1, gt[0] + 60 * 10 + 1, gt[3] - 50 * 10 + 1,
        gt[0] + 60 * 10 + 1, gt[3] - 30 * 10 - 1))
    for cid, area, geom, fields in feats:
        assert cid == 1 and fields["class_name"] == "tailings"
        assert geom.Intersection(hole).GetArea() == 0
    assert sum(a for _, a, _, _ in feats) == pytest.approx(true_m2((cls == 1).sum() * 100.0, r), rel=1e-5)


def test_extent_window_keeps_georeferencing(tmp_path):
    mask, _ = _block_mask(80, 100, 8, seed=2)
    r = make_raster(str(tmp_path / "r.tif"), _image(mask), descriptions=RGB, origin=(300000.0, 9000000.0))
    # columns 20..69, rows 10..39
    ext = (300000.0 + 200, 9000000.0 - 400, 300000.0 + 700, 9000000.0 - 100)
    res = segment(r, _model(tmp_path), str(tmp_path / "out"), SegmentOptions(device="cpu", extent=ext))
    ds = gdal.Open(res.class_raster)
    assert (ds.RasterXSize, ds.RasterYSize) == (50, 30)
    assert ds.GetGeoTransform() == pytest.approx((300200.0, 10.0, 0.0, 8999900.0, 0.0, -10.0))
    np.testing.assert_array_equal(read(res.class_raster), mask[10:40, 20:70].astype(np.uint8))


@pytest.mark.parametrize("pixel, shape, block", [
    (20.0, (41, 53), 6),     # coarser raster than the 10 m model: upsampled for inference
    (5.0, (45, 37), 8),      # finer raster: averaged down, odd size (not a whole number of 10 m pixels)
    (2.5, (61, 70), 12),
])
def test_resampled_run_returns_on_the_source_grid(tmp_path, pixel, shape, block):
    mask, _ = _block_mask(*shape, block=block, seed=int(pixel * 10))
    img = _image(mask)
    img[:, :block, -block:] = 0                  # a nodata corner block
    nod = (img == 0).all(axis=0)
    r = make_raster(str(tmp_path / "r.tif"), img, descriptions=RGB, pixel=pixel, epsg=32618,
                    origin=(400000.0 + 3.0, 4100000.0 - 7.0))
    res = segment(r, _model(tmp_path), str(tmp_path / "out"), SegmentOptions(device="cpu"))
    assert any("resampled" in n for n in res.notes), res.notes
    for p in (res.class_raster, res.confidence_raster):
        _same_grid(p, r)
        _compressed_and_tiled(p)
    cls = read(res.class_raster)
    truth = np.where(mask, 1, 0)
    truth[nod] = 255
    # Away from block edges the classes are exact; near edges resampling may move a boundary by a
    # fraction of a model pixel.
    margin = max(1, int(math.ceil(10.0 / pixel)) + 1)
    inner = _interior(truth, margin)
    assert inner.sum() > 200
    np.testing.assert_array_equal(cls[inner], truth[inner])
    assert (cls == truth).mean() > 0.85
    # Nodata stays nodata, and no valid source pixel is left without a result (the working grid
    # covers the whole raster, last rows and columns included).
    assert (cls[nod & ~_dilate(~nod, margin)] == 255).all()
    assert (cls[~_dilate(nod, margin)] != 255).all()
    feats, _ = features(res.polygons)
    assert sum(a for _, a, _, _ in feats) == pytest.approx(true_m2((cls == 1).sum() * pixel * pixel, r), rel=1e-5)


# --------------------------------------------------------------------------------------
# True areas
# --------------------------------------------------------------------------------------

_A, _F = 6378137.0, 1 / 298.257223563
_E2 = _F * (2 - _F)
_E = math.sqrt(_E2)


def _q(phi):
    s = math.sin(phi)
    return (1 - _E2) * (s / (1 - _E2 * s * s) - 1 / (2 * _E) * math.log((1 - _E * s) / (1 + _E * s)))


def ellipsoid_quad_area(lon0, lon1, lat0, lat1):
    """Exact area (m2) of a longitude/latitude quadrangle on the WGS84 ellipsoid (Snyder)."""
    return _A * _A * abs(math.radians(lon1 - lon0)) * abs(_q(math.radians(lat1)) - _q(math.radians(lat0))) / 2


def equal_area_m2(geom, srs):
    """Area of ``geom`` after transforming it to EPSG:6933 (EASE-Grid 2.0, equal area)."""
    g = geom.Clone()
    src = srs.Clone()
    src.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    g.Transform(osr.CoordinateTransformation(src, _srs(6933)))
    return g.GetArea()


@pytest.mark.parametrize("lat", [-16.3, 55.0, 0.2])
def test_geographic_areas(tmp_path, lat):
    d = 8.928162255785108e-05
    h, w = 120, 140
    mask = np.zeros((h, w), bool)
    mask[10:50, 20:100] = True                                # a 80 x 40 px rectangle
    yy, xx = np.mgrid[0:h, 0:w]
    mask |= (yy - 90) ** 2 + (xx - 70) ** 2 < 18 ** 2           # a disc
    dx = d / math.cos(math.radians(lat))        # ~10 m east-west too: no resampling
    origin = (-56.58, lat)
    r = make_raster(str(tmp_path / "geo.tif"), _image(mask), descriptions=RGB, epsg=4326, origin=origin,
                    pixel=dx, pixel_y=d)
    res = segment(r, _model(tmp_path), str(tmp_path / "out"), SegmentOptions(device="cpu"))
    assert not any("resampled" in n for n in res.notes)
    cls = read(res.class_raster)
    np.testing.assert_array_equal(cls, mask.astype(np.uint8))
    feats, srs = features(res.polygons)
    assert len(feats) == 2
    for cid, area, geom, fields in feats:
        ref = equal_area_m2(geom, srs)
        assert area == pytest.approx(ref, rel=0.005), (area, ref)
        assert fields["area_ha"] == pytest.approx(area / 1e4, abs=0.005)   # hectares to 2 decimals
    # The rectangle against the exact ellipsoidal formula.
    lon0, lat0 = origin[0] + 20 * dx, lat - 10 * d
    rect = min(feats, key=lambda f: abs(f[2].GetEnvelope()[3] - lat0))
    lon1, lat1 = origin[0] + 100 * dx, lat - 50 * d
    exact = ellipsoid_quad_area(lon0, lon1, lat0, lat1)
    assert rect[2].GetEnvelope() == pytest.approx((lon0, lon1, lat1, lat0), abs=1e-9)
    assert rect[1] == pytest.approx(exact, rel=0.005), (rect[1], exact)
    # Whole foreground: sum of exact pixel areas row by row.
    total = 0.0
    for row in range(h):
        n = int(mask[row].sum())
        if n:
            total += n * ellipsoid_quad_area(0, dx, lat - row * d, lat - (row + 1) * d)
    assert sum(f[1] for f in feats) == pytest.approx(total, rel=0.005)


def test_projected_areas_are_pixel_counts(tmp_path):
    img = blobs(110, 120, seed=4, n=8)
    r = make_raster(str(tmp_path / "r.tif"), img, descriptions=RGB, pixel=10.0, pixel_y=10.0, epsg=32618)
    res = segment(r, _model(tmp_path), str(tmp_path / "out"), SegmentOptions(device="cpu"))
    cls = read(res.class_raster)
    feats, _ = features(res.polygons)
    n_regions, sizes = labels4(cls == 1)
    assert len(feats) == n_regions > 3
    assert sorted(a for _, a, _, _ in feats) == pytest.approx(sorted(true_m2(s * 100.0, r) for s in sizes), rel=1e-5)
    assert res.stats[1]["count"] == n_regions
    assert res.stats[1]["area_ha"] == pytest.approx(true_m2((cls == 1).sum() * 100.0, r) / 1e4, rel=1e-5)


def test_projected_areas_in_feet(tmp_path):
    """A CRS in US survey feet: areas are still square metres."""
    mask = np.zeros((40, 50), bool)
    mask[5:15, 5:25] = True
    r = make_raster(str(tmp_path / "ft.tif"), _image(mask), descriptions=RGB, epsg=2263, pixel=32.8,
                    origin=(980000.0, 200000.0))
    # the model's GSD matches 32.8 ft = 10.0 m
    res = segment(r, _model(tmp_path), str(tmp_path / "out"), SegmentOptions(device="cpu"))
    assert not any("resampled" in n for n in res.notes)
    feats, _ = features(res.polygons)
    ft = 1200 / 3937
    assert len(feats) == 1
    assert feats[0][1] == pytest.approx(true_m2(200 * (32.8 * ft) ** 2, r), rel=1e-5)
    assert feats[0][3]["perimeter_m"] == pytest.approx(60 * 32.8 * ft, abs=0.01)


@needs_shared_tiles()
def test_shared_brazil_tile_areas(tmp_path):
    tile = sorted(glob.glob(os.path.join(SHARED_TILES, "images", "*.tif")))[0]
    ds = gdal.Open(tile)
    b1 = ds.GetRasterBand(3).ReadAsArray()      # B4 (red): the model below reads it
    ds = None
    thr = float(np.percentile(b1[b1 > 0], 80))
    # fires where red > thr (reflectance = DN x 0.0001 from the SCALE tag)
    m = pixel_model(str(tmp_path / "m.onnx"), [200.0, 0, 0], -200.0 * thr * 1e-4)
    res = segment(tile, m, str(tmp_path / "out"), SegmentOptions(device="cpu", min_area_ha=0.5))
    _same_grid(res.class_raster, tile)
    feats, srs = features(res.polygons)
    assert feats
    for _, area, geom, _ in feats:
        assert area >= 0.5e4 * 0.999
        assert area == pytest.approx(equal_area_m2(geom, srs), rel=0.005)


# --------------------------------------------------------------------------------------
# Class raster and polygons agree
# --------------------------------------------------------------------------------------

def _shapes():
    """Foreground shapes; with a 10-pixel minimum (0.1 ha at 10 m) the kept ones are known."""
    m = np.zeros((70, 90), bool)
    keep = np.zeros_like(m)

    def put(sl, kept):
        m[sl] = True
        if kept:
            keep[sl] = True
    put(np.s_[2:3, 2:3], False)                 # 1 px
    put(np.s_[2:4, 6:8], False)                 # 4 px
    put(np.s_[2:5, 12:15], False)               # 9 px
    put(np.s_[20:23, 2:5], False)               # two 9 px squares touching at a corner:
    put(np.s_[23:26, 5:8], False)               # 8-connected 18 px, 4-connected 2 x 9 px
    put(np.s_[2:6, 20:24], True)                # 16 px
    put(np.s_[10:20, 20:30], True)              # 10 x 10 ...
    m[14:16, 24:26] = False                     # ... with a 4 px hole (sieved: filled)
    put(np.s_[10:22, 40:52], True)              # 12 x 12 ...
    m[14:18, 44:48] = False                     # ... with a 16 px hole (kept)
    keep[14:18, 44:48] = False
    put(np.s_[40:41, 10:22], True)              # a 12 px line
    put(np.s_[40:50, 40:41], True)              # a 10 px line (exactly the minimum)
    put(np.s_[55:58, 60:63], False)             # 9 px next to a nodata block
    return m, keep


def test_min_area_removes_regions_from_raster_and_polygons(tmp_path):
    mask, keep = _shapes()
    img = _image(mask)
    img[:, 52:62, 63:75] = 0                    # nodata touching the 9 px square
    nod = (img == 0).all(axis=0)
    r = make_raster(str(tmp_path / "r.tif"), img, descriptions=RGB)
    res = segment(r, _model(tmp_path), str(tmp_path / "out"), SegmentOptions(device="cpu", min_area_ha=0.1))
    cls = read(res.class_raster)
    expected = keep.astype(np.uint8)
    expected[nod] = 255
    np.testing.assert_array_equal(cls, expected)
    feats, _ = features(res.polygons)
    n, sizes = labels4(cls == 1)
    assert n == 5 == len(feats)
    assert sorted(a for _, a, _, _ in feats) == pytest.approx(sorted(true_m2(s * 100.0, r) for s in sizes), rel=1e-5)
    assert min(a for _, a, _, _ in feats) >= 1000.0
    holes = sorted(f[2].GetGeometryCount() - 1 for f in feats)
    assert holes == [0, 0, 0, 0, 1]
    assert sum(a for _, a, _, _ in feats) == pytest.approx(true_m2((cls == 1).sum() * 100.0, r), rel=1e-5)
    assert res.stats[1]["count"] == 5
    for _, _, geom, fields in feats:
        assert geom.IsValid()
        assert 50 <= fields["mean_confidence"] <= 100     # percent, like the confidence raster
        assert fields["model"] == "m" and fields["source"] == os.path.abspath(r)


def test_min_area_zero_keeps_everything(tmp_path):
    mask, _ = _shapes()
    r = make_raster(str(tmp_path / "r.tif"), _image(mask), descriptions=RGB)
    res = segment(r, _model(tmp_path), str(tmp_path / "out"), SegmentOptions(device="cpu", min_area_ha=0))
    cls = read(res.class_raster)
    np.testing.assert_array_equal(cls, mask.astype(np.uint8))
    feats, _ = features(res.polygons)
    assert len(feats) == labels4(mask)[0]


def test_simplified_polygons_stay_valid(tmp_path):
    img = blobs(150, 160, seed=9, n=12)
    yy, xx = np.mgrid[0:150, 0:160]
    ring = ((yy - 75) ** 2 + (xx - 80) ** 2 < 30 ** 2) & ((yy - 75) ** 2 + (xx - 80) ** 2 >= 22 ** 2)
    img[0][ring] = FG                          # an annulus: a polygon with a hole
    r = make_raster(str(tmp_path / "r.tif"), img, descriptions=RGB)
    m = _model(tmp_path)
    plain = segment(r, m, str(tmp_path / "a"), SegmentOptions(device="cpu", min_area_ha=0.05))
    simple = segment(r, m, str(tmp_path / "b"), SegmentOptions(device="cpu", min_area_ha=0.05, simplify_m=10.0))
    fa, _ = features(plain.polygons)
    fb, _ = features(simple.polygons)
    assert len(fa) == len(fb) > 3
    verts = lambda g: sum(g.GetGeometryRef(i).GetPointCount() for i in range(g.GetGeometryCount()))  # noqa: E731
    assert sum(verts(f[2]) for f in fb) < 0.7 * sum(verts(f[2]) for f in fa)
    for _, b, gb, _ in fb:
        # its unsimplified original: the polygon it overlaps most
        _, a, ga, _ = max(fa, key=lambda f: f[2].Intersection(gb).GetArea())
        assert gb.IsValid() and gb.GetGeometryName() == "POLYGON"
        assert gb.GetGeometryCount() == ga.GetGeometryCount()          # holes are kept
        assert b == pytest.approx(true_m2(gb.GetArea(), r), rel=1e-5)
        assert b == pytest.approx(a, rel=0.1)
    # simplifying never touches the class raster
    np.testing.assert_array_equal(read(plain.class_raster), read(simple.class_raster))
