"""Engine: model metadata (our schema, Deepness-only models, bad models) and execution providers."""
import json
import os

import numpy as np
import onnx
import pytest
from osgeo import gdal

from engine_helpers import (conv_model, get_props, make_raster, our_meta, pixel_model, read, reference_classes,
                            reference_prob, rounding_safe, set_props)
from inference import ModelError, ProviderError, SegmentOptions, read_info, segment
from inference.model import runtime
from inference.model import deepness
from inference.model.metadata import ClassInfo, ModelInfo, parse_ours
from inference.model.formats import write_metadata
from inference.model.onnx_header import ValueInfo

RGB = ["B4", "B3", "B2"]


# --------------------------------------------------------------------------------------
# Our schema
# --------------------------------------------------------------------------------------

def test_metadata_round_trip(tmp_path):
    path = conv_model(str(tmp_path / "m.onnx"), meta=False, n_out=3, bands=("S2:B02", "S2:B03", "S2:B04"))
    info = ModelInfo(
        name="Round Trip", bands=["S2:B02", "S2:B03", "S2:B04"], gsd_m=8.5, tile_size=96, tile_overlap=24,
        classes=[ClassInfo(0, "background", "#000000"), ClassInfo(1, "tailings", "#E6550D"),
                 ClassInfo(2, "water", "#3182bd")],
        task="multiclass", units="reflectance", scale=[0.0001, 0.0002, 0.0003], offset=[-0.1, 0.0, 0.1],
        mean=[0.1, 0.2, 0.3], std=[0.5, 0.6, 0.7], activation="none", threshold=0.35, min_area_ha=0.25,
        description="a test model", version="1.2.3", license="CC-BY-4.0",
        extra={"training": {"tiles": 87, "sites": ["a", "b"]}, "metrics": {"iou": 0.61}})
    model = onnx.load(path)
    write_metadata(model, info)
    onnx.save(model, path)
    got = read_info(path)
    for f in ("name", "bands", "gsd_m", "tile_size", "tile_overlap", "task", "units", "scale", "offset", "mean",
              "std", "activation", "threshold", "min_area_ha", "description", "version", "license", "extra"):
        assert getattr(got, f) == getattr(info, f), f
    assert [(c.id, c.name, c.color) for c in got.classes] == [
        (0, "background", "#000000"), (1, "tailings", "#e6550d"), (2, "water", "#3182bd")]
    assert got.source_format == "tailings_mapper"
    assert got.output_channels == 3 and got.fixed_input_size is None
    assert got.path == path and got.input_name == "input"
    # The Deepness keys are written next to ours.
    props = get_props(path)
    assert json.loads(props["model_type"]) == "Segmentor"
    assert json.loads(props["resolution"]) == pytest.approx(850.0)
    assert json.loads(props["tiles_overlap"]) == 25
    # Writing again replaces, it does not duplicate.
    model = onnx.load(path)
    write_metadata(model, info)
    keys = [p.key for p in model.metadata_props]
    assert len(keys) == len(set(keys))


def _deepness_model(path, w, bias, extra=None, n_out=1):
    conv_model(path, meta=False, kernel=1, weights=np.asarray(w, np.float32).reshape(n_out, 3, 1, 1), bias=bias,
               n_out=n_out)
    props = {
        "model_type": '"Segmentor"',
        "class_names": "{0: 'background', 1: 'tailings'}",   # Python-literal form, as some exports write it
        "resolution": "1000",                                # cm per pixel -> 10 m
        "tiles_size": "64",
        "tiles_overlap": "25",                               # percent -> 16 px
        "standardization_mean": "[0.4, 0.5, 0.6]",
        "standardization_std": "[0.2, 0.25, 0.3]",
        "seg_thresh": "0.6",
    }
    props.update(extra or {})
    return set_props(path, props)


def test_deepness_only_model_reads_and_runs(tmp_path):
    w, bias = [1.5, -1.0, 0.7], 0.2
    path = _deepness_model(str(tmp_path / "deep.onnx"), w, bias)
    info = read_info(path)
    assert info.source_format == "deepness"
    assert info.bands == ["red", "green", "blue"]
    assert info.gsd_m == pytest.approx(10.0)
    assert (info.tile_size, info.tile_overlap) == (64, 16)
    assert info.threshold == pytest.approx(0.6)
    assert info.units == "raw"
    assert [c.name for c in info.classes] == ["background", "tailings"]

    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, size=(3, 70, 90)).astype(np.uint8)
    r = make_raster(str(tmp_path / "rgb.tif"), raw, dtype=gdal.GDT_Byte, nodata=None)
    res = segment(r, path, str(tmp_path / "out"), SegmentOptions(device="cpu"))
    # Deepness: raw / 255, then (x - mean) / std; output already a probability; seg_thresh.
    prob = reference_prob(raw, np.asarray(w).reshape(1, 3, 1, 1), bias, scale=1 / 255.0,
                          mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3])
    cls_ref, conf_ref = reference_classes(prob, 0.6)
    safe = rounding_safe(prob, 0.6)
    cls, conf = read(res.class_raster), read(res.confidence_raster)
    assert safe.mean() > 0.99
    np.testing.assert_array_equal(cls[safe], cls_ref[safe])
    np.testing.assert_array_equal(conf[safe], conf_ref[safe])
    # The threshold really is 0.6, not 0.5: pixels with 0.5 <= p < 0.6 exist and are background.
    between = (prob[0] >= 0.5) & (prob[0] < 0.6) & safe
    assert between.sum() > 50
    assert (cls[between] == 0).all()


def test_deepness_props_give_our_normalisation():
    info = ModelInfo(name="m", bands=["S2:B04", "S2:B03", "S2:B02"], gsd_m=10.0, tile_size=256, tile_overlap=32,
                     classes=[ClassInfo(0, "background", "#000000"), ClassInfo(1, "tailings", "#ff0000")],
                     scale=[0.0001, 0.0002, 0.00005], offset=[0.01, -0.02, 0.0], mean=[0.1, 0.2, 0.3],
                     std=[0.05, 0.1, 0.2], threshold=0.4)
    deep = deepness.read(deepness.props(info), [ValueInfo("input", (None, 3, None, None))],
                         [ValueInfo("output", (None, 1, None, None))], "m")
    assert deep.source_format == "deepness"
    assert deep.tile_size == 256 and deep.gsd_m == pytest.approx(10.0)
    # Deepness stores the overlap as a whole percentage: 32 px of 256 = 12.5 % comes back within 1 %.
    assert abs(deep.tile_overlap - 32) <= 256 // 100
    assert deep.threshold == pytest.approx(0.4)
    raw = np.random.default_rng(0).integers(0, 10000, size=(3, 1000)).astype(np.float64)

    def norm(i):
        s, o, m, sd = (np.asarray(getattr(i, k), np.float64)[:, None] for k in ("scale", "offset", "mean", "std"))
        return (raw * s + o - m) / sd
    ours, theirs = norm(info), norm(deep)
    np.testing.assert_allclose(theirs, ours, rtol=1e-9, atol=1e-9)
    # Deepness reads raw / 255 exactly.
    assert deep.scale == pytest.approx([1 / 255.0] * 3) and deep.offset == [0.0] * 3


def test_deepness_export_runs_like_ours(tmp_path):
    """The same network with our metadata and with only the derived Deepness keys gives the same result."""
    w = np.random.default_rng(1).normal(0, 3, size=(1, 3, 3, 3)).astype(np.float32)
    kw = dict(weights=w, bias=-1.0, mean=[0.1, 0.1, 0.1], std=[0.05, 0.08, 0.1])
    ours = conv_model(str(tmp_path / "ours.onnx"), **kw)
    deep = conv_model(str(tmp_path / "deep.onnx"), deepness_only=True, **kw)
    assert "tailings_mapper" not in get_props(deep) and read_info(deep).source_format == "deepness"
    raw = np.random.default_rng(2).integers(500, 2500, size=(3, 60, 80)).astype(np.uint16)
    r = make_raster(str(tmp_path / "r.tif"), raw, descriptions=RGB, nodata=None)
    a = segment(r, ours, str(tmp_path / "a"), SegmentOptions(device="cpu"))
    b = segment(r, deep, str(tmp_path / "b"), SegmentOptions(device="cpu"))
    ca, cb = read(a.class_raster), read(b.class_raster)
    assert 0.05 < (ca == 1).mean() < 0.95
    assert (ca == cb).mean() > 0.999
    assert np.abs(read(a.confidence_raster).astype(int) - read(b.confidence_raster)).max() <= 1


# --------------------------------------------------------------------------------------
# Bad and foreign models
# --------------------------------------------------------------------------------------

def _ours_without(path, *keys, **changes):
    conv_model(path)
    d = our_meta(path)
    for k in keys:
        d.pop(k)
    d.update(changes)
    return set_props(path, {"tailings_mapper": json.dumps(d)})


BAD_MODELS = {
    "random_bytes": (lambda p: open(p, "wb").write(np.random.default_rng(0).bytes(3000)),
                     ["not a valid ONNX model"]),
    "text_file": (lambda p: open(p, "w").write("this is a README, not a network\n" * 20),
                  ["not a valid ONNX model"]),
    "no_bands": (lambda p: _ours_without(p, "bands"), ["lacks", "'bands'"]),
    "no_classes": (lambda p: _ours_without(p, "classes"), ["lacks", "'classes'"]),
    "bad_json": (lambda p: set_props(conv_model(p), {"tailings_mapper": "{bands: [S2:B04"}),
                 ["not valid JSON"]),
    "unknown_band": (lambda p: _ours_without(p, bands=["S2:B04", "S2:B03", "S2:B99"]), ["S2:B99"]),
    "bands_vs_channels": (lambda p: conv_model(p, info_overrides=dict(
        bands=["S2:B04", "S2:B03", "S2:B02", "S2:B08"], scale=[1e-4] * 4, offset=[0.0] * 4, mean=[0.0] * 4,
        std=[1.0] * 4)), ["3 channels", "4 bands"]),
    "classes_vs_outputs": (lambda p: conv_model(p, n_out=3, classes=["background", "tailings"]),
                           ["3 channels", "2 classes"]),
    "fixed_size_vs_tile": (lambda p: conv_model(p, fixed_hw=64, tile=128), ["64 x 64", "tile_size 128"]),
    "threshold_out_of_range": (lambda p: conv_model(p, threshold=1.5), ["threshold", "between 0 and 1"]),
    "std_zero": (lambda p: conv_model(p, std=[0.1, 0.0, 0.1]), ["std", "> 0"]),
    "tta_passes": (lambda p: _ours_without(p, tta=3), ["tta", "1, 2, 4, 8", "got 3"]),
    "tta_scale_value": (lambda p: _ours_without(p, tta_scales=[1, 0.3]), ["tta_scales", "1, 0.5, 0.25", "0.3"]),
    "tta_scale_vs_tile": (lambda p: _ours_without(p, tile_size=66, tile_overlap=8, tta_scales=[1, 0.25]),
                          ["tta_scales", "divisible by 4", "66"]),
    "tta_scales_text": (lambda p: _ours_without(p, tta_scales="half"), ["tta_scales", "list of numbers"]),
    "scale_list_length": (lambda p: _ours_without(p, scale=[1e-4, 1e-4]), ["'scale'", "2 values", "3 bands"]),
    "deepness_detector": (lambda p: set_props(conv_model(p, meta=False), {
        "model_type": '"Detector"', "class_names": '{"0": "truck"}', "resolution": "10"}),
        ["Detector", "Segmentor"]),
    "deepness_std_zero": (lambda p: _deepness_model(p, [1, 1, 1], 0.0, {"standardization_std": "[0.2, 0, 0.2]"}),
                          ["std", "> 0"]),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_is_a_clear_model_error(tmp_path, case):
    make, words = BAD_MODELS[case]
    path = str(tmp_path / "bad.onnx")
    make(path)
    with pytest.raises(ModelError) as e:
        read_info(path)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (case, msg)
    # segment() refuses it the same way, before writing anything.
    r = make_raster(str(tmp_path / "r.tif"), np.full((3, 20, 20), 1000, np.uint16), descriptions=RGB)
    out = tmp_path / "out"
    with pytest.raises(ModelError) as e2:
        segment(r, path, str(out), SegmentOptions(device="cpu"))
    assert str(e2.value) == msg
    assert not out.exists() or os.listdir(out) == []


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        read_info(str(tmp_path / "nope.onnx"))
    with pytest.raises(ModelError, match="no model named 'nonexistent_model_xyz'"):
        segment(str(tmp_path / "r.tif"), "nonexistent_model_xyz", str(tmp_path / "out"))


# --------------------------------------------------------------------------------------
# Execution providers
# --------------------------------------------------------------------------------------

@pytest.fixture
def cpu_only(monkeypatch):
    import onnxruntime
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["AzureExecutionProvider", "CPUExecutionProvider"])


def test_choose_cpu():
    c = runtime.choose_providers("cpu")
    assert c.providers == ["CPUExecutionProvider"] and c.device == "cpu"


def test_choose_auto_without_cuda(cpu_only):
    c = runtime.choose_providers("auto")
    assert c.providers == ["CPUExecutionProvider"] and c.device == "cpu"
    assert "CUDA" in c.reason


def test_choose_cuda_without_cuda(cpu_only):
    with pytest.raises(ProviderError, match="CUDA"):
        runtime.choose_providers("cuda")
    with pytest.raises(ProviderError, match="device must be"):
        runtime.choose_providers("tpu")


def test_real_providers_on_this_machine():
    import onnxruntime
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime offers CUDA")
    c = runtime.choose_providers("auto")
    assert c.device == "cpu" and "CUDA" in c.reason
    with pytest.raises(ProviderError):
        runtime.choose_providers("cuda")


def _tiny_run(tmp_path, device):
    m = pixel_model(str(tmp_path / "m.onnx"), [10, 0, 0], -2.0)
    r = make_raster(str(tmp_path / "r.tif"), np.full((3, 30, 40), 1000, np.uint16), descriptions=RGB)
    out = tmp_path / ("out_" + device)
    res = segment(r, m, str(out), SegmentOptions(device=device))
    md = gdal.Open(res.class_raster).GetMetadata()
    return res, md


def test_provider_recorded_in_class_raster(tmp_path, cpu_only):
    res, md = _tiny_run(tmp_path, "cpu")
    assert md["TM_DEVICE"] == "cpu" == res.device
    assert md["TM_PROVIDER_REASON"] == "CPU requested"
    res, md = _tiny_run(tmp_path, "auto")
    assert md["TM_DEVICE"] == "cpu" == res.device
    assert "CUDA" in md["TM_PROVIDER_REASON"] and md["TM_PROVIDER_REASON"] == res.provider_reason
    with pytest.raises(ProviderError):
        _tiny_run(tmp_path, "cuda")
    assert os.listdir(tmp_path / "out_cuda") == [] if (tmp_path / "out_cuda").exists() else True


def test_cuda_advertised_but_not_starting_falls_back(tmp_path, monkeypatch):
    """onnxruntime lists CUDA but the session runs on the CPU: 'auto' says so, 'cuda' refuses."""
    import onnxruntime
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("CUDA really is available here")
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert runtime.choose_providers("auto").device == "cuda"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res, md = _tiny_run(tmp_path, "auto")
        assert md["TM_DEVICE"] == "cpu" and "fell back to CPU" in md["TM_PROVIDER_REASON"]
        with pytest.raises(ProviderError, match="fell back"):
            _tiny_run(tmp_path, "cuda")


def test_background_is_an_explicit_flag_older_files_by_name():
    base = {"bands": ["S2:B04", "S2:B03", "S2:B02"], "gsd_m": 10, "tile_size": 64}
    old = parse_ours(json.dumps(dict(base, classes=[
        {"id": 0, "name": "background"}, {"id": 1, "name": "tailings"}])))
    assert old.background_ids() == {0}
    new = parse_ours(json.dumps(dict(base, classes=[
        {"id": 0, "name": "soil", "background": True}, {"id": 1, "name": "background", "background": False}])))
    assert new.background_ids() == {0}                      # the flag, not the name
    assert [c["background"] for c in json.loads(new.to_json())["classes"]] == [True, False]
    assert parse_ours(new.to_json()).background_ids() == {0}
    with pytest.raises(ModelError, match="'background' must be true or false"):
        parse_ours(json.dumps(dict(base, classes=[
            {"id": 0, "name": "a", "background": "yes"}, {"id": 1, "name": "b"}])))


def test_the_network_loads_beside_the_first_read_and_its_failure_fails_the_run(tmp_path, monkeypatch):
    """A run creates its session once, while it opens the raster and reads the first strip (a slow
    load does not hold the reading back); a network that onnxruntime refuses fails the run with the
    message and leaves nothing in the output folder."""
    import time
    from osgeo import gdal as gdal_module
    from inference import execute
    from inference.model import opened as modellib
    from inference import open_model, plan
    events = []
    real, real_open = modellib.create_session, gdal_module.Open

    def slow_load(*a, **k):
        events.append("load starts")
        time.sleep(0.5)
        session = real(*a, **k)
        events.append("load ends")
        return session

    def opening(path, *a, **k):
        if os.path.abspath(str(path)) == os.path.abspath(r):
            events.append("raster opened")
        return real_open(path, *a, **k)
    monkeypatch.setattr(modellib, "create_session", slow_load)
    m = pixel_model(str(tmp_path / "m.onnx"), [10, 0, 0], -2.0)
    r = make_raster(str(tmp_path / "r.tif"), np.full((3, 30, 40), 1000, np.uint16), descriptions=RGB)
    opts = SegmentOptions(device="cpu", cloud_mask="off")
    p = plan(r, open_model(m), opts, str(tmp_path / "out"))
    monkeypatch.setattr(gdal_module, "Open", opening)
    res = execute(p)
    assert events.count("load starts") == 1 and events.count("load ends") == 1 and res.tiles > 0
    start, end = events.index("load starts"), events.index("load ends")
    assert "raster opened" in events[start:end], events   # read while loading, not after
    broken = onnx.load(m)   # metadata that reads, an operator onnxruntime does not know
    broken.graph.node[0].op_type = "NoSuchOperator"
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    p = plan(r, open_model(str(tmp_path / "broken.onnx")), opts, str(tmp_path / "out_broken"))
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        execute(p)
    assert not (tmp_path / "out_broken").exists() or not os.listdir(tmp_path / "out_broken")
