"""Engine: input scaling (declared scale, float rasters, model DN scale, overrides, raw units),
where the activation is applied, two-channel binary and multi-class models, geographic resampling."""
import numpy as np
import pytest
from osgeo import gdal, osr

from engine_helpers import (true_m2, blobs, conv_model, features, labels4, make_raster, pixel_model, read, reference_classes,
                            reference_prob, rounding_safe, set_bias)
from inference import SegmentOptions, segment

RGB = ["B4", "B3", "B2"]
W1 = np.array([10.0, -2.0, 1.0], np.float32).reshape(1, 3, 1, 1)


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    return tmp_path_factory.mktemp("inputs")


@pytest.fixture(scope="module")
def img():
    return blobs(60, 70, seed=3)


@pytest.fixture(scope="module")
def model(d):
    return conv_model(str(d / "m.onnx"), weights=W1, kernel=1, bias=-1.5)


def _expect(img_reflectance):
    prob = reference_prob(img_reflectance, W1, -1.5, scale=1.0)
    cls, conf = reference_classes(prob)
    return cls, conf, rounding_safe(prob)


def _check(res, img_reflectance):
    cls_ref, conf_ref, safe = _expect(img_reflectance)
    assert 0.02 < cls_ref.mean() < 0.9
    cls, conf = read(res.class_raster), read(res.confidence_raster)
    np.testing.assert_array_equal(cls[safe], cls_ref[safe])
    np.testing.assert_array_equal(conf[safe], conf_ref[safe])


def test_integer_raster_uses_the_models_dn_scale(d, img, model):
    r = make_raster(str(d / "dn.tif"), img, descriptions=RGB)
    res = segment(r, model, str(d / "o_dn"), SegmentOptions(device="cpu"))
    assert any("DN x 0.0001" in n for n in res.notes)
    _check(res, img * 1e-4)


def test_declared_scale_tag_wins(d, img, model):
    half = (img // 2).astype(np.uint16)
    r = make_raster(str(d / "tag.tif"), half, descriptions=RGB, scale_tag=0.0002)
    res = segment(r, model, str(d / "o_tag"), SegmentOptions(device="cpu"))
    assert any("raster declares scale 0.0002" in n for n in res.notes)
    _check(res, half * 2e-4)


def test_gdal_band_scale_offset(d, img, model):
    r = make_raster(str(d / "bandscale.tif"), img, descriptions=RGB)
    ds = gdal.Open(r, gdal.GA_Update)
    for i in range(3):
        ds.GetRasterBand(i + 1).SetScale(0.0001)
        ds.GetRasterBand(i + 1).SetOffset(-0.1)
    ds = None
    res = segment(r, model, str(d / "o_bs"), SegmentOptions(device="cpu"))
    _check(res, img * 1e-4 - 0.1)


def test_float_raster_is_reflectance(d, img, model):
    refl = (img * 1e-4).astype(np.float32)
    r = make_raster(str(d / "float.tif"), refl, descriptions=RGB, dtype=gdal.GDT_Float32, nodata=None)
    res = segment(r, model, str(d / "o_f"), SegmentOptions(device="cpu"))
    assert any("floating-point" in n for n in res.notes)
    _check(res, refl.astype(np.float64))


def test_input_scale_override(d, img, model):
    r = make_raster(str(d / "ovr.tif"), (img // 4).astype(np.uint16), descriptions=RGB, scale_tag=0.5)
    res = segment(r, model, str(d / "o_ovr"), SegmentOptions(device="cpu", input_scale=0.0004))
    _check(res, (img // 4) * 4e-4)


def test_raw_units_ignore_the_raster_scale(d, img):
    m = conv_model(str(d / "raw.onnx"), weights=W1, kernel=1, bias=-1.5,
                   info_overrides=dict(units="raw", scale=[1e-4] * 3))
    r = make_raster(str(d / "rawtag.tif"), img, descriptions=RGB, scale_tag=0.5)
    res = segment(r, m, str(d / "o_raw"), SegmentOptions(device="cpu"))
    _check(res, img * 1e-4)


def test_mean_std_standardisation(d, img):
    mean, std = [0.1, 0.12, 0.09], [0.05, 0.02, 0.04]
    m = conv_model(str(d / "std.onnx"), weights=W1 / 20, kernel=1, bias=-1.0, mean=mean, std=std)
    r = make_raster(str(d / "std.tif"), img, descriptions=RGB)
    res = segment(r, m, str(d / "o_std"), SegmentOptions(device="cpu"))
    prob = reference_prob(img, W1 / 20, -1.0, scale=1e-4, mean=mean, std=std)
    cls_ref, conf_ref = reference_classes(prob)
    safe = rounding_safe(prob)
    np.testing.assert_array_equal(read(res.class_raster)[safe], cls_ref[safe])
    np.testing.assert_array_equal(read(res.confidence_raster)[safe], conf_ref[safe])


def test_activation_from_metadata_equals_activation_in_graph(d, img):
    w = np.random.default_rng(0).normal(0, 4, size=(1, 3, 3, 3)).astype(np.float32)
    a = conv_model(str(d / "act_graph.onnx"), weights=w, kernel=3, bias=-0.5)
    b = conv_model(str(d / "act_meta.onnx"), weights=w, kernel=3, bias=-0.5, activation_in_graph=False)
    r = make_raster(str(d / "act.tif"), img, descriptions=RGB)
    opts = SegmentOptions(device="cpu", tile_size=32, overlap=8)
    ra = segment(r, a, str(d / "o_act_a"), opts)
    rb = segment(r, b, str(d / "o_act_b"), opts)
    assert (read(ra.class_raster) == read(rb.class_raster)).mean() > 0.999
    assert np.abs(read(ra.confidence_raster).astype(int) - read(rb.confidence_raster)).max() <= 1


def test_two_channel_binary_model_and_threshold(d):
    """softmax([2, l]) class 1 = sigmoid(l - 2): the same as a one-channel sigmoid(l - 2) model."""
    w2 = np.zeros((2, 3, 1, 1), np.float32)
    w2[1] = W1[0]
    two = set_bias(conv_model(str(d / "two.onnx"), weights=w2, kernel=1, n_out=2, threshold=0.7), [1.5, 0.0])
    img = np.random.default_rng(1).integers(500, 3500, size=(3, 50, 60)).astype(np.uint16)
    r = make_raster(str(d / "two.tif"), img, descriptions=RGB)
    res = segment(r, two, str(d / "o_two"), SegmentOptions(device="cpu"))
    prob = reference_prob(img, W1, -1.5)
    cls_ref, conf_ref = reference_classes(prob, 0.7)
    safe = rounding_safe(prob, 0.7)
    assert ((prob[0] >= 0.5) & (prob[0] < 0.7)).sum() > 20
    np.testing.assert_array_equal(read(res.class_raster)[safe], cls_ref[safe])
    np.testing.assert_array_equal(read(res.confidence_raster)[safe], conf_ref[safe])


def test_multiclass_argmax_polygons_per_class(d):
    w3 = np.zeros((3, 3, 1, 1), np.float32)
    w3[1, 1] = 20.0
    w3[2, 2] = 20.0
    m = set_bias(conv_model(str(d / "mc.onnx"), weights=w3, kernel=1, n_out=3,
                            classes=["background", "tailings", "water"]), [3.0, 0.0, 0.0])
    img = np.full((3, 50, 60), 1000, np.uint16)
    img[1, 5:15, 5:20] = 3000
    img[1, 30:35, 5:10] = 3000
    img[2, 30:45, 30:50] = 3000
    img[:, 0:3, 50:60] = 0
    r = make_raster(str(d / "mc.tif"), img, descriptions=RGB)
    res = segment(r, m, str(d / "o_mc"), SegmentOptions(device="cpu"))
    cls = read(res.class_raster)
    exp = np.zeros((50, 60), np.uint8)
    exp[5:15, 5:20] = 1
    exp[30:35, 5:10] = 1
    exp[30:45, 30:50] = 2
    exp[0:3, 50:60] = 255
    np.testing.assert_array_equal(cls, exp)
    ds = gdal.Open(res.class_raster)
    band = ds.GetRasterBand(1)
    assert band.GetNoDataValue() == 255   # (GDAL 3.6 GTiff loads the .aux.xml lazily: not on GetCategoryNames)
    assert band.GetCategoryNames()[:3] == ["background", "tailings", "water"]
    band = ds = None
    feats, _ = features(res.polygons)
    got = sorted((c, a, f["class_name"]) for c, a, _, f in feats)
    assert [(c, n) for c, _, n in got] == [(1, "tailings"), (1, "tailings"), (2, "water")]
    k = true_m2(1.0, r)   # (true areas: a UTM grid's square metres are off by its scale factor)
    assert [a for _, a, _ in got] == pytest.approx([2500.0 * k, 15000.0 * k, 30000.0 * k], abs=0.006)
    assert res.stats[1]["count"] == 2 and res.stats[2]["count"] == 1
    assert res.stats[2]["area_ha"] == pytest.approx(3.0 * k, rel=1e-5)
    assert 0 not in res.stats   # background is not reported


def test_geographic_raster_resampled_back_to_its_grid(d):
    """A ~5 m EPSG:4326 raster with a 10 m model: the result is on the source grid and right."""
    h, w = 80, 90
    mask = np.zeros((h, w), bool)
    mask[10:40, 20:60] = True
    mask[55:75, 5:30] = True
    img = np.full((3, h, w), 1000, np.uint16)
    img[0][mask] = 3000
    r = make_raster(str(d / "geo5.tif"), img, descriptions=RGB, epsg=4326, origin=(-56.5, -16.3), pixel=4.6e-5,
                    pixel_y=4.5e-5)
    m = pixel_model(str(d / "px.onnx"), [10, 0, 0], -2.0)
    res = segment(r, m, str(d / "o_geo5"), SegmentOptions(device="cpu"))
    assert any("resampled" in n for n in res.notes)
    o, s = gdal.Open(res.class_raster), gdal.Open(r)
    assert (o.RasterXSize, o.RasterYSize) == (w, h)
    assert o.GetGeoTransform() == pytest.approx(s.GetGeoTransform(), abs=1e-12)
    cls = read(res.class_raster)
    assert (cls != 255).all()
    assert (cls == mask).mean() > 0.97
    assert labels4(cls == 1)[0] == 2


@pytest.mark.parametrize("layout", [["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256"], ["TILED=NO"]])
def test_dn_shifted_by_1000_are_warned_of_in_tiled_and_striped_rasters(d, model, layout):
    """The check samples places spread over the raster (a window in each of 4 x 4 blocks of a
    tiled raster, a 6 x 6 grid of windows otherwise): DN all above 1000 are warned of; the same
    scene with its dark pixels (water, shadow: here a field of them in every block row) is not."""
    from inference import plan
    rng = np.random.default_rng(5)
    h, w = 1100, 1300
    scene = rng.integers(300, 4000, (3, h, w)).astype(np.uint16)
    scene[:, ::7, :] = rng.integers(1, 200, (3, len(range(0, h, 7)), w))   # dark rows, everywhere
    name = "t" if "TILED=YES" in layout else "s"
    for shift, warned in ((0, False), (1000, True)):
        path = str(d / ("shift_%s_%d.tif" % (name, shift)))
        ds = gdal.GetDriverByName("GTiff").Create(path, w, h, 3, gdal.GDT_UInt16, options=layout)
        ds.SetGeoTransform((500000.0, 10.0, 0, 7700000.0, 0, -10.0))
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(32723)
        ds.SetProjection(srs.ExportToWkt())
        for i in range(3):
            ds.GetRasterBand(i + 1).SetDescription(RGB[i])
            ds.GetRasterBand(i + 1).WriteArray(scene[i] + shift)
        assert (ds.GetRasterBand(1).GetBlockSize()[0] < w) == (name == "t")
        ds = None
        p = plan(path, model, SegmentOptions(device="cpu"))
        assert any("look shifted by +1000" in x for x in p.warnings) == warned, p.warnings
