"""Engine: models made the way the Deepness plugin's are (each shape its format allows) run here
unchanged, and our exported models read right by Deepness's loader rules."""
import json
import os

import numpy as np
import pytest
from osgeo import gdal

import deepness_rules
from deepness_rules import net
from engine_helpers import make_raster, read, set_props
from inference import ModelError, SegmentOptions, plan, read_info, segment

W = np.array([[0.004, -0.002, 0.001], [-0.003, 0.004, 0.0], [0.0, -0.002, 0.005]], np.float32)


@pytest.fixture
def rgb(tmp_path):
    """An 8-bit RGB orthophoto-like raster, 0.5 m pixels, no band names."""
    rng = np.random.default_rng(0)
    data = np.clip(rng.normal(128, 60, (3, 96, 128)), 0, 255).astype(np.uint8)
    path = make_raster(str(tmp_path / "ortho.tif"), data, pixel=0.5, nodata=None, dtype=gdal.GDT_Byte)
    return path, data.astype(np.float64)


def _prob(data, w, b, mean=0.0, std=1.0):
    x = (data / 255.0 - np.asarray(mean, float).reshape(-1, 1, 1)) / np.asarray(std, float).reshape(-1, 1, 1)
    z = np.tensordot(np.asarray(w, float).reshape(len(b), -1), x, axes=1) + np.asarray(b, float)[:, None, None]
    return z


def _sig(z):
    return 1 / (1 + np.exp(-z))


def _run(raster, model, out, **opts):
    return segment(raster, model, str(out), SegmentOptions(device="cpu", **opts))


def test_class_names_as_a_list_of_one_dict_sigmoid_output_implies_background(tmp_path, rgb):
    raster, data = rgb
    w, b = [[5.0, -3.0, 1.0]], [-1.5]
    m = net(str(tmp_path / "coffee.onnx"), [("out", w, b, "sigmoid", False)], {
        "model_type": '"Segmentor"', "class_names": '[{"0": "Coffee"}]', "resolution": "50",
        "tiles_size": "64", "tiles_overlap": "25", "seg_thresh": "0.5"})
    info = read_info(m)
    assert [c.name for c in info.classes] == ["background", "Coffee"] and info.task == "binary"
    assert (info.tile_size, info.tile_overlap) == (64, 16)      # tiles_size; overlap 25 % of 64
    assert deepness_rules.read(m)["classes"] == [["background", "Coffee"]]
    res = _run(raster, m, tmp_path / "o")
    p = _sig(_prob(data, w, b))[0]
    safe = np.abs(p - 0.5) > 1e-3
    cls = read(res.class_raster)
    np.testing.assert_array_equal(cls[safe], (p[safe] > 0.5).astype(np.uint8))
    assert 0.1 < cls.mean() < 0.9


def test_python_literal_class_names_with_integer_keys_softmax(tmp_path, rgb):
    raster, data = rgb
    b = [0.0, 0.2, -0.1]
    m = net(str(tmp_path / "three.onnx"), [("out", W * 1000, b, "softmax", False)], {
        "model_type": '"Segmentor"', "class_names": "{0: 'soil', 1: 'water', 2: 'trees'}", "resolution": "50",
        "tile_size": "64", "tiles_overlap": "10"})
    info = read_info(m)
    assert [c.name for c in info.classes] == ["soil", "water", "trees"] and info.task == "multiclass"
    assert deepness_rules.read(m)["classes"] == [["soil", "water", "trees"]]
    cls = read(_run(raster, m, tmp_path / "o").class_raster)
    z = _prob(data, W * 1000, b)
    top2 = np.sort(z, axis=0)
    safe = top2[-1] - top2[-2] > 1e-3
    np.testing.assert_array_equal(cls[safe], np.argmax(z, axis=0)[safe])
    assert len(np.unique(cls)) == 3


def test_no_resolution_runs_at_the_rasters_own_or_the_chosen_gsd(tmp_path, rgb):
    raster, _ = rgb
    m = net(str(tmp_path / "nores.onnx"), [("out", [[0.05, -0.03, 0.01]], [-1.0], "sigmoid", False)], {
        "model_type": '"Segmentor"', "class_names": '{"0": "background", "1": "pond"}', "tile_size": "64"})
    info = read_info(m)
    assert info.gsd_m == 0.0
    p = plan(raster, m, SegmentOptions(device="cpu"))
    assert not p.resample and p.work_gsd_m == pytest.approx(0.5)
    assert any("states no resolution" in n for n in p.notes)
    p = plan(raster, m, SegmentOptions(device="cpu", gsd=1.0))
    assert p.resample and p.work_gsd_m == pytest.approx(1.0)
    res = _run(raster, m, tmp_path / "o", gsd=1.0)
    ds = gdal.Open(res.class_raster)
    assert (ds.RasterXSize, ds.RasterYSize) == (128, 96)         # results back on the source grid
    ds = None


def test_model_without_any_metadata_runs_on_the_given_settings(tmp_path, rgb):
    raster, data = rgb
    w, b = [[5.0, -3.0, 1.0]], [-1.5]
    m = net(str(tmp_path / "bare.onnx"), [("out", w, b, "sigmoid", True)])     # and an (N, H, W) output
    info = read_info(m)
    assert info.source_format == "none"
    assert info.bands == ["band1", "band2", "band3"]
    assert [c.name for c in info.classes] == ["background", "channel_0"]
    assert (info.tile_size, info.tile_overlap) == (512, 77)     # Deepness's defaults
    p = plan(raster, m, SegmentOptions(device="cpu", tile_size=64, overlap=8))
    assert list(p.mapping.source_bands) == [1, 2, 3]
    notes = " ".join(p.notes)
    assert "no metadata" in notes and "first 3 bands" in notes and "channel" in notes
    res = _run(raster, m, tmp_path / "o", tile_size=64, overlap=8)
    pr = _sig(_prob(data, w, b))[0]
    safe = np.abs(pr - 0.5) > 1e-3
    np.testing.assert_array_equal(read(res.class_raster)[safe], (pr[safe] > 0.5).astype(np.uint8))
    # another band order by the band mapping
    p = plan(raster, m, SegmentOptions(device="cpu", tile_size=64, bands="3,2,1"))
    assert list(p.mapping.source_bands) == [3, 2, 1]


def test_two_sigmoid_heads_are_two_classes_each_with_its_band(tmp_path, rgb):
    raster, data = rgb
    w1, b1 = [[5.0, -3.0, 1.0]], [-1.5]
    w2, b2 = [[-2.0, 4.0, 0.0]], [-1.0]
    m = net(str(tmp_path / "two.onnx"), [("roads", w1, b1, "sigmoid", False), ("roofs", w2, b2, "sigmoid", False)], {
        "model_type": '"Segmentor"', "class_names": '[{"0": "road"}, {"0": "roof"}]', "resolution": "50",
        "tile_size": "64"})
    info = read_info(m)
    assert info.task == "multilabel" and [c.name for c in info.label_classes()] == ["road", "roof"]
    assert deepness_rules.read(m)["classes"] == [["background", "road"], ["background", "roof"]]
    res = _run(raster, m, tmp_path / "o")
    ds = gdal.Open(res.class_raster)
    assert ds.RasterCount == 3
    bands = [ds.GetRasterBand(i + 1).ReadAsArray() for i in range(3)]
    ds = None
    for band, (w, b) in zip(bands[1:], [(w1, b1), (w2, b2)]):
        pr = _sig(_prob(data, w, b))[0]
        safe = np.abs(pr - 0.5) > 1e-3
        np.testing.assert_array_equal(band[safe] > 0, pr[safe] > 0.5)
        assert 0.05 < (band > 0).mean() < 0.95


def test_two_softmax_heads_are_refused_with_a_clear_message(tmp_path):
    m = net(str(tmp_path / "two_soft.onnx"), [("a", W[:2], [0, 0], "softmax", False),
                                              ("b", W, [0, 0, 0], "softmax", False)], {
        "model_type": '"Segmentor"', "class_names": '[{"0": "x", "1": "y"}, {"0": "p", "1": "q", "2": "r"}]',
        "resolution": "50"})
    with pytest.raises(ModelError) as e:
        read_info(m)
    assert "2 outputs" in str(e.value) and "2, 3 channels" in str(e.value) and "sigmoid" in str(e.value)


@pytest.mark.parametrize("names, words", [
    ('{"0": "a", "2": "b"}', "not numbered 0, 1, 2"),
    ('[{"0": "a"}, {"0": "b"}]', "2 outputs but the network has 1"),
    ('{"0": "a", "1": "b", "2": "c"}', "3 classes for output 1"),
])
def test_inconsistent_class_names_are_clear_errors(tmp_path, names, words):
    m = net(str(tmp_path / "bad.onnx"), [("out", W[:2], [0, 0], "softmax", False)], {
        "model_type": '"Segmentor"', "class_names": names, "resolution": "50"})
    with pytest.raises(ModelError, match=words):
        read_info(m)


def test_our_shipped_model_read_by_deepness_rules():
    from inference.model.registry import resolve_model
    path = resolve_model("tailings")
    info = read_info(path)
    got = deepness_rules.read(path)
    assert got["model_type"] == "Segmentor"
    assert got["classes"] == [[c.name for c in info.classes]] == [["background", "tailings"]]
    assert got["resolution_cm"] == pytest.approx(info.gsd_m * 100) == pytest.approx(1000)
    assert got["tile_size"] == info.tile_size
    assert got["tiles_overlap_pct"] == round(100 * info.tile_overlap / info.tile_size)
    assert got["input_channels"] == len(info.bands) == len(got["mean"]) == len(got["std"])
    assert 0 < got["seg_thresh"] < 1
    # Deepness's preprocessing (raw / 255, then its standardisation) equals ours
    raw = np.array([[300.0], [800.0], [1500.0]])
    ours = (raw * np.array(info.scale)[:, None] + np.array(info.offset)[:, None] - np.array(info.mean)[:, None]) \
        / np.array(info.std)[:, None]
    theirs = (raw / 255.0 - np.array(got["mean"])[:, None]) / np.array(got["std"])[:, None]
    np.testing.assert_allclose(theirs, ours, rtol=1e-6)


def test_deepness_keys_of_an_edited_file_keep_their_json(tmp_path):
    """``set_props`` (how Deepness users add metadata: onnx metadata_props) then our reader."""
    m = net(str(tmp_path / "m.onnx"), [("out", W[:2], [0, 0], "softmax", False)])
    set_props(m, {"model_type": json.dumps("Segmentor"), "class_names": json.dumps({"0": "bg", "1": "dam"}),
                  "resolution": json.dumps(1000)})
    info = read_info(m)
    assert info.gsd_m == 10.0 and [c.name for c in info.classes] == ["bg", "dam"]
    assert os.path.getsize(m) > 0
