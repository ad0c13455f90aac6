"""Models from elsewhere in QGIS: a Deepness model (its keys, one sigmoid output), a model with no
metadata at all, and a STAC MLM item with its ONNX asset, through Processing and the panel."""
import json

import pytest

pytest.importorskip("qgis.core")
pytest.importorskip("onnx")

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer  # noqa: E402

from deepness_rules import net  # noqa: E402
from engine_helpers import true_m2  # noqa: E402
from qgis_helpers import s2_raster, tiny_model, wait_task  # noqa: E402

SQUARES = ((40, 40, 80), (200, 180, 50))
# raw / 255 (Deepness's scaling): DN 8000 in the red band inside the squares is 31.4, DN 1000 is 3.9
W, B = [[1.0, 0.0, 0.0]], [-15.0]


@pytest.fixture(scope="module")
def provider(tm, qgis_processing):
    from tailings_mapper.processing_provider.provider import TailingsProvider
    reg = QgsApplication.processingRegistry()
    if reg.providerById("tailings_mapper") is None:
        reg.addProvider(TailingsProvider())
    yield reg.providerById("tailings_mapper")
    p = reg.providerById("tailings_mapper")
    if p is not None:
        reg.removeProvider(p)


def _deepness(path):
    return net(path, [("mask", W, B, "sigmoid", False)], {
        "model_type": '"Segmentor"', "class_names": '[{"0": "tailings"}]', "resolution": "1000",
        "tile_size": "64", "tiles_overlap": "15", "seg_thresh": "0.5"})


def _mlm_item(tmp_path):
    """The tiny model's network without metadata, described only by its MLM item."""
    import onnx
    from tailings_mapper.inference.model import mlm
    from tailings_mapper.inference import read_info
    src = tiny_model(str(tmp_path / "tiny.onnx"))
    proto = onnx.load(src)
    del proto.metadata_props[:]
    bare = str(tmp_path / "bare.onnx")
    onnx.save(proto, bare)
    path = str(tmp_path / "tiny.stac.json")
    with open(path, "w") as fh:
        json.dump(mlm.item(read_info(src), bare), fh)
    return path


@pytest.mark.parametrize("kind", ["deepness", "no_metadata", "mlm"])
def test_processing_runs_models_from_elsewhere(provider, tmp_path, kind):
    import processing
    raster = s2_raster(str(tmp_path / "scene.tif"), squares=SQUARES)
    params = {"INPUT": raster, "DEVICE": "cpu", "OUTPUT_CLASSES": str(tmp_path / "c.tif"),
              "OUTPUT_POLYGONS": str(tmp_path / "p.gpkg"), "OUTPUT_REPORT": str(tmp_path / "r.json")}
    if kind == "deepness":
        params["MODEL_FILE"] = _deepness(str(tmp_path / "deep.onnx"))
    elif kind == "no_metadata":
        params.update(MODEL_FILE=net(str(tmp_path / "bare.onnx"), [("mask", W, B, "sigmoid", True)]),
                      TILE_SIZE=64, GSD=10.0)
    else:
        params["MODEL_FILE"] = _mlm_item(tmp_path)
    out = processing.run("tailings_mapper:segment", params)
    poly = QgsVectorLayer(out["OUTPUT_POLYGONS"], "p", "ogr")
    assert poly.isValid() and poly.featureCount() == 2
    assert out["AREA_HA"] == pytest.approx(true_m2((80 * 80 + 50 * 50) * 100.0, raster) / 1e4, abs=0.005)
    del poly
    with open(out["OUTPUT_REPORT"]) as fh:
        report = json.load(fh)
    notes = " ".join(report.get("notes", []))
    if kind == "no_metadata":
        assert "no metadata" in notes and "first 3 bands" in notes
