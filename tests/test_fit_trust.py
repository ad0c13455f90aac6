"""An improved model is never silently worse (issue 27, item 4): corrections count only where the
user corrected, every fit is compared with the model it started from on ground the user did not
touch, a threshold chosen on too little validation data falls back to the base model's, and the
card states the threshold used and the epochs run."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from osgeo import gdal, ogr, osr  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from engine_helpers import make_raster  # noqa: E402
from inference import open_model  # noqa: E402
from inference.errors import InputError  # noqa: E402
from training import chips as C  # noqa: E402
from training import labels as L  # noqa: E402
from training.fit import MIN_THRESHOLD_PIXELS, _threshold, export_network, fit  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RGB = ("B4", "B3", "B2")
ORIGIN = (500000.0, 7700000.0)
FAST = dict(chip=64, batch=4, chips_per_epoch=4, register=False, log=lambda *a: None)


def _box(x, y, w, h=None, px=10.0):
    h = w if h is None else h
    x0, y0 = ORIGIN[0] + x * px, ORIGIN[1] - y * px
    return "POLYGON((%r %r,%r %r,%r %r,%r %r,%r %r))" % (x0, y0, x0 + w * px, y0, x0 + w * px, y0 - h * px,
                                                        x0, y0 - h * px, x0, y0)


def _gpkg(path, wkts):
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32723)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lyr = ds.CreateLayer("scene_polygons", srs, ogr.wkbPolygon)
    for w in wkts:
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(ogr.CreateGeometryFromWkt(w))
        lyr.CreateFeature(f)
    ds = None
    return str(path)


def _run_map(path, cls):
    """A run's classes raster as the engine writes it: uint8 class ids, 255 outside the run."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32723)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), cls.shape[1], cls.shape[0], 1, gdal.GDT_Byte)
    ds.SetGeoTransform((ORIGIN[0], 10.0, 0, ORIGIN[1], 0, -10.0))
    ds.SetProjection(srs.ExportToWkt())
    ds.GetRasterBand(1).SetNoDataValue(255)
    ds.GetRasterBand(1).WriteArray(cls)
    ds = None
    return str(path)


def _scene(tmp_path, size=256, west=1000.0, east=1000.0):
    rng = np.random.default_rng(0)
    img = np.empty((3, size, size))
    img[:, :, :size // 2], img[:, :, size // 2:] = west, east
    img = (img + rng.normal(0, 40, img.shape)).clip(1, None).astype(np.uint16)
    return make_raster(str(tmp_path / "scene.tif"), img, descriptions=RGB)


def _labels_of(tmp_path, raster, labels, area=None, original=None):
    info = open_model("tailings").info
    polys = L.read_labels(labels, None, info.classes)
    ar = L.read_area(area) if area else None
    sc = C.open_scene(raster, open_model("tailings"), polys, ar, str(tmp_path), None, 64, 0.0, 0, 0, original)
    lab = sc.labels.ReadAsArray()
    sc.close()
    return lab


def test_untouched_detections_are_ignored_deleted_are_background_added_are_tailings(tmp_path):
    """The run found A and B; the user deleted A, left B, added C: A background, C tailings, B and
    the rest ignored -- unless inside an area the user drew."""
    raster = _scene(tmp_path)
    cls = np.zeros((256, 256), np.uint8)
    cls[20:60, 20:60] = 1      # A (deleted)
    cls[150:200, 150:200] = 1  # B (left as it was)
    run = _run_map(tmp_path / "scene_classes.tif", cls)
    gpkg = _gpkg(tmp_path / "scene.gpkg", [_box(150, 150, 50)])            # the run's layer (B only now)
    from training.corrections import run_map
    assert run_map(gpkg) == run                                            # the GeoPackage finds its map
    edited = _gpkg(tmp_path / "edited.gpkg", [_box(150, 150, 50), _box(100, 20, 30)])   # B, and C added
    lab = _labels_of(tmp_path, raster, edited, original=run)
    assert (lab[25:55, 25:55] == 0).all()                                  # A deleted: background
    assert (lab[25:45, 105:125] == 1).all()                                # C added: tailings
    assert (lab[155:195, 155:195] == L.IGNORE).all()                       # B untouched: ignored
    assert (lab[100:140, 200:250] == L.IGNORE).all()                       # empty ground: ignored
    # without the run, as before: B confirmed
    assert (_labels_of(tmp_path, raster, edited) == 1).sum() == 50 * 50 + 30 * 30
    # an area the user drew over B: inside it, everything as without a run
    area = _gpkg(tmp_path / "area.gpkg", [_box(140, 140, 80)])
    lab = _labels_of(tmp_path, raster, edited, area=area, original=run)
    assert (lab[155:195, 155:195] == 1).all() and (lab[142:148, 142:218] == 0).all()
    assert (lab[25:55, 25:55] == 0).all() and (lab[100:130, 20:60] == L.IGNORE).all()
    # nothing changed and no area: said, not trained on nothing
    with pytest.raises(InputError, match="as the run left them"):
        _labels_of(tmp_path, raster, _gpkg(tmp_path / "same.gpkg", [_box(20, 20, 40), _box(150, 150, 50)]),
                   original=run)


def test_threshold_falls_back_to_the_base_models_on_too_little_validation():
    base = open_model("tailings").info
    th, why = _threshold(base, base, 0.1, {"threshold": 0.1, "positive_pixels": MIN_THRESHOLD_PIXELS - 1})
    assert th == base.threshold and "too few" in why and "tailings" in why
    th, why = _threshold(base, base, 0.3, {"threshold": 0.3, "positive_pixels": MIN_THRESHOLD_PIXELS * 3})
    assert th == 0.3 and "chosen on the part held back" in why
    th, _ = _threshold(base, base, None, {})
    assert th == base.threshold


def _flag_all(tmp_path):
    """The shipped network (without the shipped veto), made to flag every pixel: a base whose
    detections can be lost."""
    from training.from_onnx import load_network
    from training.veto import Vetoed
    net, _, info = load_network(open_model("tailings").path)
    inner = net.net if isinstance(net, Vetoed) else net
    with torch.no_grad():
        inner.head.bias.fill_(30.0)
    from dataclasses import replace
    path = str(tmp_path / "flagall.onnx")
    export_network(inner, replace(info, name="flagall", extra={k: v for k, v in info.extra.items() if k != "veto"}),
                   path)
    return path


def test_a_fit_that_loses_the_bases_detections_says_so(tmp_path):
    """The base flags everything; the user deletes the western half of its detection and leaves the
    eastern half, which looks the same: the veto takes the eastern detections too -- a warning in
    the CLI and the card."""
    base = _flag_all(tmp_path)
    cls = np.ones((256, 256), np.uint8)
    run = _run_map(tmp_path / "scene_classes.tif", cls)
    east = _gpkg(tmp_path / "east.gpkg", [_box(128, 0, 128, 256)])   # the western half deleted

    same = _scene(tmp_path)                                           # east like west
    out = tmp_path / "lost.onnx"
    p = subprocess.run([sys.executable, "-m", "training", "fit", "--raster", same, "--labels", east, "--init", base,
                        "--corrections-of", run, "--epochs", "10", "--chip", "64", "--chips-per-epoch", "4",
                        "--out", str(out), "--no-register", "--device", "cpu"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1 and "less tailings than flagall on ground you did not correct" in lines[0], p.stdout
    card = open(str(out)[:-5] + ".md").read()
    assert "## Compared with flagall" in card and "**Warning:** the new model finds" in card
    assert "0 of 10 run" in card and "veto only" in card      # nothing drawn: the network unchanged
    info = open_model(str(out)).info
    assert info.extra["compared"]["untouched"]["lost_share"] > 0.1
    assert info.threshold == open_model(base).info.threshold          # nothing to choose one on: the base's
    assert "Threshold the model uses: %g" % info.threshold in card


def test_card_says_the_epochs_run(tmp_path):
    raster = _scene(tmp_path)
    cls = np.zeros((256, 256), np.uint8)
    run = _run_map(tmp_path / "scene_classes.tif", cls)
    added = _gpkg(tmp_path / "added.gpkg", [_box(20, 20, 40), _box(150, 150, 50)])
    res = fit([raster], added, init="tailings", epochs=10, out=str(tmp_path / "ten.onnx"), corrections_of=run, **FAST)
    card = open(res.card).read()
    assert "- epochs: 10 of 10 run" in card, card
    assert res.info.extra["fit"]["epochs_run"] == 10
    assert "## Compared with tailings" in card and "**Warning:**" not in card
