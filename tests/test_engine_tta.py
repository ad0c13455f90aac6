"""Engine: test-time augmentation (flipped/rotated views of each tile, averaged) maps every
view back onto the tile before blending, so it equals the average of the whole-image outputs
of the transformed images; the model's metadata sets the default number of passes."""
import json

import numpy as np
import pytest

from engine_helpers import (assert_matches_reference, blobs, conv_model, make_raster, our_meta, read, reference_prob,
                            run_cli, set_props)
from inference import Cancelled, SegmentOptions, TailingsError, read_info, segment
from inference.tiling import TTA_PASSES, check_scales, downsample2, rescale, tta_views, upsample2

RGB = ["B4", "B3", "B2"]
H, W = 150, 190


def test_views_invert_and_differ():
    a = np.random.default_rng(0).normal(size=(2, 3, 6, 6))
    for n in TTA_PASSES:
        views = tta_views(n)
        assert len(views) == n
        seen = set()
        for fwd, inv in views:
            np.testing.assert_array_equal(inv(fwd(a)), a)
            seen.add(np.ascontiguousarray(fwd(a)).tobytes())
        assert len(seen) == n                    # n different views of an asymmetric tile
    np.testing.assert_array_equal(tta_views(8)[0][0](a), a)   # the first view is the tile itself
    with pytest.raises(ValueError, match="1, 2, 4, 8"):
        tta_views(3)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("tta")
    img = blobs(H, W, seed=5, n=8)
    img[:, 100:120, 10:40] = 0                  # nodata: no class, fed as zeros in every view
    valid = (img != 0).all(axis=0)
    raster = make_raster(str(d / "scene.tif"), img, descriptions=RGB)
    rng = np.random.default_rng(3)
    w5 = rng.normal(0, 0.6, size=(1, 3, 5, 5)).astype(np.float32)
    w5[0, 0] += 40.0 / 25
    w5[0, 0, 0, :] += 1.5                       # asymmetric: flips and rotations change the output
    conv = conv_model(str(d / "conv.onnx"), weights=w5, kernel=5, bias=-8.0, tile=256, overlap=0)
    w1 = np.array([12.0, -3.0, 2.0], np.float32).reshape(1, 3, 1, 1)
    pix = conv_model(str(d / "pix.onnx"), weights=w1, kernel=1, bias=-2.2, tile=64, overlap=16)
    return dict(dir=d, img=img, valid=valid, raster=raster, conv=conv, w5=w5, pix=pix)


_done = {}


def _seg(scene, model, name, **kw):
    if name in _done:
        return _done[name]
    res = segment(scene["raster"], scene[model] if model in scene else model, str(scene["dir"] / name),
                  SegmentOptions(device="cpu", polygons=False, **kw))
    _done[name] = read(res.class_raster), read(res.confidence_raster), res
    return _done[name]


@pytest.mark.parametrize("passes", [2, 4, 8])
def test_tta_is_the_mean_of_the_transformed_whole_image_outputs(scene, passes):
    """One padded tile holds the whole raster: the result must be the mean over the views of
    the reference output of the transformed image, mapped back (a view not mapped back, or
    mapped back the wrong way, moves the blobs and fails)."""
    cls, conf, res = _seg(scene, "conv", "conv_tta%d" % passes, tta=passes)
    assert res.tiles == 1
    prob = np.zeros((1, H, W))
    for fwd, inv in tta_views(passes):
        prob += inv(reference_prob(fwd(scene["img"]), scene["w5"], -8.0, valid=fwd(scene["valid"])))
    prob /= passes
    assert_matches_reference(cls, conf, prob, scene["valid"], 0.99, positive=(0.05, 0.6))
    # ... and it is not the plain run: this network is not symmetric.
    cls1, conf1, _ = _seg(scene, "conv", "conv_tta1", tta=1)
    assert (conf1 != conf).mean() > 0.05


def test_tta_leaves_a_per_pixel_model_unchanged_across_tiles(scene):
    """A 1 x 1 network is equivariant: with several tiles, overlap and a batch, every view mapped
    back gives the same probability, so TTA changes nothing beyond float rounding."""
    c1, f1, r1 = _seg(scene, "pix", "pix_1", tta=1, batch=3)
    c8, f8, r8 = _seg(scene, "pix", "pix_8", tta=8, batch=3)
    assert r1.tiles == r8.tiles > 4
    assert (c1 == c8).mean() > 0.999
    assert np.abs(f1.astype(int) - f8).max() <= 1
    assert (c1 == 255).sum() == (~scene["valid"]).sum()


def test_model_metadata_sets_the_default_and_options_override(scene, tmp_path):
    path = str(tmp_path / "conv_tta4.onnx")
    conv_model(path, weights=scene["w5"], kernel=5, bias=-8.0, tile=256, overlap=0)
    d = our_meta(path)
    d["tta"] = 4
    set_props(path, {"tailings_mapper": json.dumps(d)}, keep=True)
    assert read_info(path).tta == 4
    _, f_default, _ = _seg(scene, path, "default_from_meta")
    _, f4, _ = _seg(scene, "conv", "conv_tta4_opt", tta=4)
    _, f1, _ = _seg(scene, path, "override_off", tta=1)
    np.testing.assert_array_equal(f_default, f4)
    from osgeo import gdal
    ds = gdal.Open(_seg(scene, path, "default_from_meta")[2].class_raster)
    assert ds.GetMetadataItem("TM_TTA") == "4"                 # recorded with the run
    ds = None
    assert (f1 != f_default).mean() > 0.05
    with pytest.raises(TailingsError, match="1, 2, 4, 8"):
        _seg(scene, path, "bad", tta=5)
    # The command line: --tta, and `models` says what the default is.
    out = tmp_path / "cli"
    r = run_cli(["segment", scene["raster"], "--model", path, "--out", str(out), "--tta", "1", "--device", "cpu"])
    assert r.returncode == 0, r.stderr
    cli = read(str(next(out.glob("*classes*.tif"))))
    np.testing.assert_array_equal(cli, _seg(scene, path, "override_off2", tta=1)[0])


# --------------------------------------------------------------------------------------
# Multi-scale inference
# --------------------------------------------------------------------------------------

def test_rescale_helpers():
    a = np.array([[0.0, 4.0], [8.0, 12.0]], np.float32)
    # bilinear x2 with pixel centres aligned and edges held: 0, 4 -> 0, 1, 3, 4
    np.testing.assert_allclose(upsample2(a)[0], [0, 1, 3, 4])
    np.testing.assert_allclose(upsample2(a)[:, 0], [0, 2, 6, 8])
    np.testing.assert_allclose(downsample2(np.arange(16, dtype=np.float32).reshape(4, 4)), [[2.5, 4.5], [10.5, 12.5]])
    assert rescale(np.zeros((2, 1, 16, 16), np.float32), 0.25).shape == (2, 1, 4, 4)
    assert rescale(np.zeros((2, 1, 4, 4), np.float32), 0.25, up=True).shape == (2, 1, 16, 16)
    assert check_scales([1, 0.5, 1], 64) == (1.0, 0.5)
    with pytest.raises(ValueError, match="1, 0.5, 0.25"):
        check_scales([0.75], 64)
    with pytest.raises(ValueError, match="divisible by 4"):
        check_scales([0.25], 66)


def test_multiscale_is_the_mean_of_full_and_half_resolution_outputs(scene):
    """One 256 px tile: the result is the mean of the network on the tile and, brought back
    with bilinear x2, on the tile's 2 x 2 means (zero padding beyond the raster, as fed)."""
    T = 256
    cls, conf, res = _seg(scene, "conv", "conv_ms", tta=1, scales=(1.0, 0.5))
    assert res.tiles == 1
    img = np.zeros((3, T, T)); img[:, :H, :W] = scene["img"]
    valid = np.zeros((T, T), bool); valid[:H, :W] = scene["valid"]
    full = reference_prob(img, scene["w5"], -8.0, valid=valid)
    half = reference_prob(downsample2((img * valid).astype(np.float32)), scene["w5"], -8.0)
    prob = ((full + upsample2(half.astype(np.float32))) / 2)[:, :H, :W]
    assert_matches_reference(cls, conf, prob, scene["valid"], 0.98, eps=1e-3)
    cls1, conf1, _ = _seg(scene, "conv", "conv_tta1", tta=1)
    assert (conf1 != conf).mean() > 0.05          # the half-resolution pass changed the result
    from osgeo import gdal
    ds = gdal.Open(res.class_raster)
    assert ds.GetMetadataItem("TM_SCALES") == "1,0.5"
    ds = None


def test_multiscale_default_from_metadata_and_errors(scene, tmp_path):
    path = str(tmp_path / "conv_ms.onnx")
    conv_model(path, weights=scene["w5"], kernel=5, bias=-8.0, tile=256, overlap=0)
    d = our_meta(path)
    d["tta_scales"] = [1, 0.5]
    set_props(path, {"tailings_mapper": json.dumps(d)}, keep=True)
    assert read_info(path).tta_scales == [1.0, 0.5]
    _, f_default, _ = _seg(scene, path, "ms_default_from_meta", tta=1)
    _, f_opt, _ = _seg(scene, "conv", "conv_ms", tta=1, scales=(1.0, 0.5))
    np.testing.assert_array_equal(f_default, f_opt)
    _, f_one, _ = _seg(scene, path, "ms_override", tta=1, scales=(1.0,))
    np.testing.assert_array_equal(f_one, _seg(scene, "conv", "conv_tta1", tta=1)[1])
    with pytest.raises(TailingsError, match="1, 0.5, 0.25"):
        _seg(scene, "pix", "bad_scale", scales=(1.0, 0.3))
    fixed = conv_model(str(tmp_path / "fixed.onnx"), fixed_hw=64, tile=64)
    with pytest.raises(TailingsError, match="64 x 64 tiles only"):
        _seg(scene, fixed, "fixed_ms", scales=(1.0, 0.5))
    # the command line's --scales
    out = tmp_path / "cli"
    r = run_cli(["segment", scene["raster"], "--model", path, "--out", str(out), "--tta", "1", "--scales", "1",
                 "--device", "cpu"])
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(read(str(next(out.glob("*confidence*.tif")))), f_one)
    r = run_cli(["segment", scene["raster"], "--model", path, "--out", str(out), "--scales", "1,half"])
    assert r.returncode != 0 and "--scales" in r.stderr and "Traceback" not in r.stderr


def test_cancel_is_checked_between_passes(scene, tmp_path):
    """With 8 views at 2 scales one batch is 16 network passes: cancel is looked at between them,
    and a run cancelled mid-batch leaves nothing."""
    def count_checks(**kw):
        calls = []
        segment(scene["raster"], scene["conv"], str(tmp_path / ("count_%d_%d" % (kw["tta"], len(kw["scales"])))),
                SegmentOptions(device="cpu", polygons=False, **kw), cancel=lambda: calls.append(1) and False)
        return len(calls)
    one, many = count_checks(tta=1, scales=(1.0,)), count_checks(tta=8, scales=(1.0, 0.5))
    assert many - one == 15
    calls = []
    out = tmp_path / "cancelled"
    with pytest.raises(Cancelled):
        segment(scene["raster"], scene["conv"], str(out), SegmentOptions(device="cpu", tta=8, scales=(1.0, 0.5)),
                cancel=lambda: calls.append(1) or len(calls) > one + 3)
    assert not out.exists() or list(out.iterdir()) == []
