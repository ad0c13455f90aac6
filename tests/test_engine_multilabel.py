"""Multilabel models (a sigmoid per class; labels overlap) and the ten-class schema."""
from __future__ import annotations

import json

import numpy as np
import pytest
from osgeo import gdal, ogr

from engine_helpers import conv_model, make_raster, true_m2
from inference import SegmentOptions, execute, open_model, plan
from inference.errors import ModelError

RGB = ("B4", "B3", "B2")


def _labels_model(path, classes=("background", "excavation", "transport slope"), **kw):
    w = np.zeros((2, 3, 1, 1), np.float32)
    w[0, 0] = 20.0     # label 1 where the red band is bright
    w[1, 1] = 20.0     # label 2 where the green band is bright
    return conv_model(path, n_out=2, kernel=1, weights=w, bias=-10.0, activation_in_graph=False,
                      classes=list(classes), info_overrides=dict(task="multilabel", activation="sigmoid", **kw))


def _scene(path):
    img = np.full((3, 120, 120), 1000, np.uint16)
    img[0, 10:70, 10:70] = 8000      # excavation: rows/cols 10-69
    img[1, 40:100, 40:100] = 8000    # transport slope: rows/cols 40-99, overlapping 40-69
    return make_raster(path, img, descriptions=RGB)


def test_overlapping_labels_in_raster_and_polygons(tmp_path):
    model = _labels_model(str(tmp_path / "ml.onnx"))
    info = open_model(model).info
    assert info.task == "multilabel" and info.channels == 2
    res = execute(plan(_scene(str(tmp_path / "s.tif")), model,
                       SegmentOptions(device="cpu", cloud_mask="off", tta=1, scales=(1.0,)), str(tmp_path / "o")))
    ds = gdal.Open(res.class_raster)
    assert ds.RasterCount == 3 and "multilabel" in ds.GetMetadata()["TM_LAYOUT"]
    top, a, b = (ds.GetRasterBand(k).ReadAsArray() for k in (1, 2, 3))
    assert [ds.GetRasterBand(k).GetDescription() for k in (2, 3)] == ["excavation", "transport slope"]
    exp_a = np.zeros((120, 120), bool)
    exp_a[10:70, 10:70] = True
    exp_b = np.zeros((120, 120), bool)
    exp_b[40:100, 40:100] = True
    np.testing.assert_array_equal(a == 1, exp_a)
    np.testing.assert_array_equal(b == 1, exp_b)
    assert ((a == 1) & (b == 1)).sum() == 30 * 30                 # the overlap is kept
    assert set(np.unique(top[exp_a & ~exp_b])) == {1} and set(np.unique(top[exp_b & ~exp_a])) == {2}
    assert (top[~exp_a & ~exp_b] == 0).all()
    ds = None
    qml = open(res.class_raster[:-4] + ".qml").read()     # band 1 styled by the classes' colours
    assert 'label="excavation"' in qml and info.label_classes()[0].color in qml.lower()
    conf = gdal.Open(res.confidence_raster)
    assert conf.RasterCount == 3 and conf.GetRasterBand(2).ReadAsArray()[20, 20] == 100
    conf = None
    # polygons: one per label, overlapping; areas per label
    src = ogr.Open(res.polygons)
    feats = [(f["class_id"], f["class_name"], f["area_ha"], f["mean_confidence"], f.GetGeometryRef().Clone())
             for f in src.GetLayer(0)]
    src = None
    ha = round(true_m2(36e4, res.class_raster) / 1e4, 2)   # (60 x 60 pixels of 10 m: true hectares)
    assert sorted((c, n, ha) for c, n, ha, _, _ in feats) == [(1, "excavation", ha), (2, "transport slope", ha)]
    assert all(mc == 100.0 for _, _, _, mc, _ in feats)
    ga, gb = feats[0][4], feats[1][4]
    assert ga.Intersection(gb).GetArea() == pytest.approx(30 * 30 * 100.0)
    assert res.stats[1]["area_ha"] == pytest.approx(ha, abs=0.005) and res.stats[2]["area_ha"] == pytest.approx(ha, abs=0.005)
    assert json.load(open(res.report))["found"]["transport slope"]["area_ha"] == pytest.approx(ha, abs=0.005)


def test_labels_are_sieved_one_by_one_and_band_one_follows(tmp_path):
    model = _labels_model(str(tmp_path / "ml.onnx"))
    img = np.full((3, 100, 100), 1000, np.uint16)
    img[0, 10:60, 10:60] = 8000       # 25 ha of excavation
    img[1, 80:83, 80:83] = 8000       # 9 px (0.09 ha) of transport slope: under the minimum area
    img[1, 30:35, 30:35] = 8000       # 25 px inside the excavation: under it too
    r = make_raster(str(tmp_path / "s.tif"), img, descriptions=RGB)
    res = execute(plan(r, model, SegmentOptions(device="cpu", cloud_mask="off", tta=1, scales=(1.0,), min_area_ha=0.5),
                       str(tmp_path / "o")))
    ds = gdal.Open(res.class_raster)
    top, a, b = (ds.GetRasterBand(k).ReadAsArray() for k in (1, 2, 3))
    ds = None
    assert (b == 1).sum() == 0 and (a == 1).sum() == 2500
    assert set(np.unique(top)) == {0, 1}
    assert res.stats[2]["count"] == 0 and res.stats[1]["count"] == 1


def test_multilabel_metadata_is_checked(tmp_path):
    with pytest.raises(ModelError, match="one per label class"):
        open_model(_labels_model(str(tmp_path / "bad.onnx"), classes=("background", "a", "b", "c")))
    with pytest.raises(ModelError, match="thresholds"):
        open_model(_labels_model(str(tmp_path / "bad2.onnx"), thresholds=[0.5]))
    with pytest.raises(ModelError, match="not softmax"):
        w = np.zeros((2, 3, 1, 1), np.float32)
        open_model(conv_model(str(tmp_path / "bad3.onnx"), n_out=2, kernel=1, weights=w, activation_in_graph=False,
                              classes=["background", "a", "b"],
                              info_overrides=dict(task="multilabel", activation="softmax")))


def test_per_label_thresholds(tmp_path):
    model = _labels_model(str(tmp_path / "ml.onnx"), thresholds=[0.5, 0.99999])
    res = execute(plan(_scene(str(tmp_path / "s.tif")), model,
                       SegmentOptions(device="cpu", cloud_mask="off", tta=1, scales=(1.0,), polygons=False),
                       str(tmp_path / "o")))
    ds = gdal.Open(res.class_raster)
    a, b = ds.GetRasterBand(2).ReadAsArray(), ds.GetRasterBand(3).ReadAsArray()
    ds = None
    assert (a == 1).sum() == 3600 and (b == 1).sum() == 0      # sigmoid(6) = 0.9975 < 0.99999


def test_multilabel_at_another_gsd_comes_back_on_the_source_grid(tmp_path):
    model = _labels_model(str(tmp_path / "ml20.onnx"), gsd_m=20.0)
    res = execute(plan(_scene(str(tmp_path / "s.tif")), model,
                       SegmentOptions(device="cpu", cloud_mask="off", tta=1, scales=(1.0,)), str(tmp_path / "o")))
    ds = gdal.Open(res.class_raster)
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (120, 120, 3)
    a, b = ds.GetRasterBand(2).ReadAsArray(), ds.GetRasterBand(3).ReadAsArray()
    assert ds.GetRasterBand(3).GetDescription() == "transport slope"
    ds = None
    assert abs(int((a == 1).sum()) - 3600) <= 240 and abs(int((b == 1).sum()) - 3600) <= 240
    assert ((a == 1) & (b == 1)).sum() > 700
