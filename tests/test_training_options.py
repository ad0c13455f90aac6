"""Training's options declared once (``training.fit_options``): the command line, Processing and the
dialog offer the same options with the same defaults; the batch command reads the run's option
table as ``segment`` does; the engine is imported under one name; one wording of a fit's result."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from engine_helpers import REPO, run_cli  # noqa: E402
from inference.run.options import OPTIONS, OptionError  # noqa: E402
from training import fit_present  # noqa: E402
from training.fit_options import FIT_OPTIONS, values, values_from_arguments  # noqa: E402

# What users typed before the table: every flag and Processing parameter name stays.
CLI_FLAGS = ("--raster", "--labels", "--layer", "--field", "--classes", "--multilabel", "--aoi", "--corrections-of",
             "--review", "--init", "--epochs", "--device", "--out", "--name", "--chip", "--batch",
             "--chips-per-epoch", "--lr", "--train-encoder", "--seed", "--no-register")
PROCESSING = ("RASTERS", "LABELS", "FIELD", "CLASSES", "MULTILABEL", "AOI", "INIT", "EPOCHS", "DEVICE", "NAME", "CHIP",
              "CHIPS_PER_EPOCH", "OUTPUT")


def _fit_parser():
    from training.fit_cli import add_parsers
    ap = argparse.ArgumentParser()
    add_parsers(ap.add_subparsers(dest="cmd"))
    return ap


def test_the_command_line_is_the_table():
    ap = _fit_parser()
    fit_parser = ap._subparsers._group_actions[0].choices["fit"]
    flags = {s for a in fit_parser._actions for s in a.option_strings} - {"-h", "--help"}
    assert flags == set(CLI_FLAGS) == {o.flag_name for o in FIT_OPTIONS if "cli" in o.fronts}
    got = values_from_arguments(ap.parse_args(["fit", "--raster", "a.tif", "--raster", "b.tif", "--labels", "l.gpkg"]))
    assert got["rasters"] == ["a.tif", "b.tif"] and got["labels"] == "l.gpkg"
    assert {k: v for k, v in got.items() if k not in ("rasters", "labels")} == {
        o.name: o.default for o in FIT_OPTIONS if o.name not in ("rasters", "labels")}
    assert (got["init"], got["epochs"], got["device"], got["chip"], got["batch"], got["chips_per_epoch"], got["seed"],
            got["register"], got["train_encoder"]) == ("tailings", 10, "auto", 256, 4, 64, 0, True, None)
    flagged = values_from_arguments(ap.parse_args(["fit", "--raster", "a", "--labels", "l", "--no-register",
                                                   "--train-encoder", "--epochs", "3", "--lr", "1e-4"]))
    assert (flagged["register"], flagged["train_encoder"], flagged["epochs"], flagged["lr"]) == (False, True, 3, 1e-4)
    with pytest.raises(SystemExit):   # still required
        ap.parse_args(["fit", "--labels", "l.gpkg"])


def test_training_names_its_bad_option_in_one_line():
    e = dict(os.environ, PYTHONPATH=REPO)
    p = subprocess.run([sys.executable, "-m", "training", "fit", "--raster", "a.tif", "--labels", "l.gpkg",
                        "--epochs", "0"], cwd=REPO, env=e, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip() == "error: --epochs: epochs must be between 1 and 500, got 0"
    with pytest.raises(OptionError, match="device must be one of auto, cpu, cuda, got 'tpu'"):
        values({"device": "tpu"})


def test_processing_offers_the_tables_options(tm, qgis_processing):
    from tailings_mapper.processing_provider.fit_algorithm import FitAlgorithm
    from tailings_mapper.processing_provider.parameters import parameter_name
    from tailings_mapper.training.fit_options import FIT_OPTIONS as PLUGIN_TABLE
    alg = FitAlgorithm()
    alg.initAlgorithm()
    names = [p.name() for p in alg.parameterDefinitions()]
    assert names == [parameter_name(o) for o in PLUGIN_TABLE if "processing" in o.fronts]
    assert set(names) == set(PROCESSING)
    for o in PLUGIN_TABLE:
        if "processing" not in o.fronts or o.kind in ("files", "vector", "field", "model_file"):
            continue
        assert alg.parameterDefinition(parameter_name(o)).defaultValue() == o.default, o.name
    assert alg.parameterDefinition("DEVICE").options() == ["auto", "cpu", "cuda"]
    assert not alg.parameterDefinition("LABELS").flags() & 8   # (required, as the command line's --labels)
    epochs = alg.parameterDefinition("EPOCHS")
    assert (epochs.minimum(), epochs.maximum()) == (1, 500)


def test_the_dialog_shows_the_tables_defaults(tm, qgis_iface):
    from tailings_mapper.training.fit_options import BY_NAME
    from tailings_mapper.ui.fit_dialog import FitDialog
    dlg = FitDialog(qgis_iface)
    assert dlg.epochs.value() == BY_NAME["epochs"].default == 10
    assert dlg.epochs.maximum() == BY_NAME["epochs"].maximum
    assert [dlg.device.itemData(i) for i in range(dlg.device.count())] == list(BY_NAME["device"].choices)
    assert dlg.device.currentData() == "auto" and not dlg.multilabel.isChecked() and dlg.name.text() == ""
    dlg.epochs.setValue(3)
    dlg.device.setCurrentIndex(1)
    dlg.name.setText(" mine ")
    assert values(dlg.options.texts(), names=dlg.options.options) == {
        "multilabel": False, "epochs": 3, "device": "cpu", "name": "mine"}


def test_a_qgis_request_is_checked_by_the_table(tm, qgis_iface):
    from tailings_mapper.qgis_glue.fit_task import FitRequest
    from tailings_mapper.inference.errors import OptionError as PluginOptionError
    r = FitRequest(rasters=["a.tif"], labels="l.gpkg", review=True, epochs=2)
    assert r.arguments()["epochs"] == 2 and r.review is True and r.init == "tailings" and r.register is True
    with pytest.raises(PluginOptionError, match="epochs must be between 1 and 500"):
        FitRequest(rasters=["a.tif"], labels="l.gpkg", epochs=0)
    with pytest.raises(TypeError, match="not training options: epoch"):
        FitRequest(rasters=["a.tif"], labels="l.gpkg", epoch=2)


def test_batch_takes_the_run_options_from_the_table():
    p = run_cli(["batch", "--help"])
    assert p.returncode == 0
    for o in OPTIONS:
        if o.name in ("bands", "tile_size", "tta", "scales", "min_area_ha", "cloud_mask", "mask_snow", "ood_check",
                      "confidence", "polygons", "input_scale", "calibration"):
            assert o.flag_name in p.stdout, o.flag_name
    for flag in ("--workers", "--scheduler", "--resume", "--buffer-m", "--no-changes"):
        assert flag in p.stdout
    bad = run_cli(["batch", "jobs.csv", "--out", "/nonexistent/out", "--tile", "17"])
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --tile: tile size must be a multiple of 8")
    workers = run_cli(["batch", "jobs.csv", "--out", "/nonexistent/out", "--workers", "-1"])
    assert workers.returncode == 2 and workers.stderr.strip() == "error: --workers: workers must be at least 0, got -1"


def test_the_plugins_training_imports_the_engine_once(tmp_path):
    """After the training bridge loads ``training.fit`` as QGIS would, no engine module is in
    ``sys.modules`` under two names, and there is no top-level ``inference``."""
    pytest.importorskip("torch")
    root = REPO
    os.symlink(root, tmp_path / "tailings_mapper")
    code = ("import sys; sys.path = [p for p in sys.path if p not in ('', %r)]; sys.path.insert(0, %r);"
            "import tailings_mapper.qgis_glue.training_bridge as b; m = b.fit_module();"
            "eng = [(k, v) for k, v in sys.modules.items() if v is not None and "
            "(getattr(v, '__file__', None) or '').startswith(%r + '/inference')];"
            "assert len(eng) > 20, len(eng);"
            "assert len({id(v) for k, v in eng}) == len(eng), [k for k, v in eng];"
            "assert all(k.startswith('tailings_mapper.inference') for k, v in eng), [k for k, v in eng];"
            "import tailings_mapper.training.engine as te; assert te.open_model.__module__ == "
            "'tailings_mapper.inference.model.opened'; print('ok')" % (root, str(tmp_path), str(tmp_path / "tailings_mapper")))
    out = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def _result(warning=None, cancelled=False, iou=0.8123):
    info = SimpleNamespace(name="mine", threshold=0.45, extra={
        "compared": {"warning": warning} if warning else None,
        "validation_fit": {"iou": iou, "per_class": {"tailings": iou}},
        "fit": {"epochs_run": 2, "epochs": 2, "threshold_why": "best on the part held back"}})
    return SimpleNamespace(info=info, path="/m/mine.onnx", card="/m/mine.md", registered="/u/mine.onnx",
                           cancelled=cancelled, seconds=12.4, best_epoch=2,
                           warnings=[warning] if warning else [])


def test_one_wording_of_a_fit_for_every_front_end():
    worse = "the new model finds 40 % less tailings than tailings on ground you did not correct; check it before use"
    assert fit_present.outcome(_result()) == ("model mine is in your model list; on the part held back: IoU 0.81 "
                                              "(12 s)")
    out = fit_present.outcome(_result(worse, cancelled=True))
    assert out.startswith("model mine is in your model list (cancelled: the best epoch so far)")
    assert out.endswith(" — warning: " + worse)
    lines = fit_present.lines(_result(worse))
    assert lines[0] == "warning: " + worse and lines.count("warning: " + worse) == 1
    assert "model: /m/mine.onnx" in lines and "in your model list: /u/mine.onnx" in lines
    assert "time: 12 s, 2 of 2 epochs run, best epoch 2" in lines
    assert fit_present.validation(_result()) == "tailings IoU 0.812"
    # the front ends say these lines, not their own
    for path in ("training/fit_cli.py", "qgis_glue/fit_task.py", "processing_provider/fit_algorithm.py"):
        text = open(os.path.join(REPO, path)).read()
        assert "fit_present" in text and "is in your model list" not in text and "IoU %" not in text, path
