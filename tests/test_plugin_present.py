"""One account of a run for every front end (``inference.output.present``): the command line, the panel
(its findings and the message bar), QGIS's log and the Processing log say the same words, on a
run that masked clouds, a run with warnings, and a run that failed."""
import os
import subprocess
import sys
import traceback
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("qgis.core")
pytest.importorskip("onnx")

from osgeo import gdal  # noqa: E402
from qgis.core import Qgis, QgsApplication, QgsProject  # noqa: E402

from qgis_helpers import s2_raster, tiny_model, wait_task  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALG = "tailings_mapper:segment"


def scl_over(raster: str, path: str) -> str:
    """A Sentinel-2 scene classification on the raster's grid: cloud (9) over its top left
    quarter, cloud shadow (3) in a band below, vegetation (4) elsewhere."""
    src = gdal.Open(raster)
    n = src.RasterXSize
    scl = np.full((n, n), 4, np.uint8)
    scl[:n // 2, :n // 2] = 9
    scl[n // 2:n // 2 + 10, :] = 3
    ds = gdal.GetDriverByName("GTiff").Create(path, n, n, 1, gdal.GDT_Byte)
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    ds.GetRasterBand(1).WriteArray(scl)
    ds = src = None
    return path


@pytest.fixture
def data(tmp_path):
    model = tiny_model(str(tmp_path / "tiny_s2rgb.onnx"))
    doubtful = tiny_model(str(tmp_path / "doubtful.onnx"), unlike_everything=True)
    raster = s2_raster(str(tmp_path / "scene.tif"), squares=((40, 40, 80), (200, 180, 50)))
    return tmp_path, model, doubtful, raster, scl_over(raster, str(tmp_path / "scl.tif"))


def _engine_run(model, raster, out, **opts):
    """The run the front ends show: the engine's result for these options."""
    from tailings_mapper.inference import SegmentOptions, execute, plan
    return execute(plan(raster, model, SegmentOptions(device="cpu", **opts), str(out)))


def _cli(args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "inference"] + args, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_masked_run_reads_the_same_on_the_command_line_and_in_the_report(tm, data):
    from tailings_mapper.inference.output import present
    tmp, model, _, raster, scl = data
    proc = _cli(["segment", raster, "--model", model, "--out", str(tmp / "cli"), "--mask-raster", scl,
                 "--device", "cpu"])
    assert proc.returncode == 0, proc.stderr
    res = _engine_run(model, raster, tmp / "ref", mask_raster=scl)
    assert res.masked_ha["cloud"] > 0 and res.masked_ha["cloud shadow"] > 0
    masked = [str(ln) for ln in present.findings(res)][0]
    assert masked.startswith("masked before segmenting: cloud ") and "% of the area with data" in masked
    out = proc.stdout.splitlines()
    assert masked in out                        # the same words, same figures
    assert [ln for ln in out if ln.startswith("found ")] == [str(ln) for ln in present.found(res.stats)]
    # the report carries the same one-line summary as the panel and the message bar
    import json
    rep = json.load(open(str(tmp / "cli" / "scene_report.json")))
    assert rep["summary"].startswith("found tailings: ")
    assert rep["summary"].split(" in ")[0] == present.headline(res).split(" in ")[0]   # (times differ)


def test_the_panel_and_the_log_show_a_masked_run(tm, data, qgis_iface, qgis_new_project):
    from tailings_mapper.inference import plan
    from tailings_mapper.inference.output import present
    from tailings_mapper.qgis_glue import task as tasklib
    from tailings_mapper.qgis_glue.layer_plan import LayerPlan
    tmp, model, _, raster, scl = data
    from tailings_mapper.inference import SegmentOptions
    p = plan(raster, model, SegmentOptions(device="cpu", mask_raster=scl, prefix="scene"), str(tmp / "panel"))
    logged = []

    def received(message, tag, level):
        logged.append((message, level))
    QgsApplication.messageLog().messageReceived.connect(received)
    qgis_iface.messageBar().clear_messages()
    task = tasklib.start(LayerPlan(p, "", "scene"), qgis_iface.messageBar())
    try:
        ok, outcome = wait_task(task)
    finally:
        QgsApplication.messageLog().messageReceived.disconnect(received)
    assert ok, outcome
    res = task.result
    assert outcome == present.headline(res)
    from tailings_mapper.qgis_glue.results import findings_html
    html = findings_html(res)
    for line in present.findings(res):
        assert str(line) in html.replace("&#x27;", "'")
    msgs = qgis_iface.messageBar().get_messages(Qgis.Success)
    assert msgs and msgs[-1].endswith(present.headline(res))
    texts = [m for m, _ in logged]
    for line in present.run_lines(res):
        assert "scene: %s" % line in texts, line
    QgsProject.instance().removeAllMapLayers()


def test_a_run_with_warnings_says_them_everywhere(tm, data, qgis_iface, qgis_processing, qgis_new_project):
    from tailings_mapper.inference.output import present
    tmp, _, doubtful, raster, _ = data
    proc = _cli(["segment", raster, "--model", doubtful, "--out", str(tmp / "cli"), "--device", "cpu"])
    assert proc.returncode == 0, proc.stderr
    warned = [ln[len("warning: "):] for ln in proc.stdout.splitlines() if ln.startswith("warning: ")]
    assert any("unlike the images the model learnt from" in w for w in warned)
    res = _engine_run(doubtful, raster, tmp / "ref")
    assert list(res.warnings) == warned
    # Processing: each warning as a warning, the findings and the summary as information
    from qgis.core import QgsProcessingContext
    from qgis_helpers import processing_with_provider, recording_feedback
    processing, reg = processing_with_provider()
    fb = recording_feedback()
    out = processing.run(ALG, {"INPUT": raster, "MODEL_FILE": doubtful, "DEVICE": "cpu",
                               "OUTPUT_CLASSES": str(tmp / "p_classes.tif"),
                               "OUTPUT_POLYGONS": str(tmp / "p_polys.gpkg")}, context=QgsProcessingContext(),
                         feedback=fb)
    assert ["Warning: %s" % w for w in warned] == fb.warn
    for line in present.findings(res):
        assert str(line) in fb.info
    assert out["SUMMARY"] in fb.info and out["SUMMARY"].split(" in ")[0] == present.headline(res).split(" in ")[0]
    reg.removeProvider(reg.providerById("tailings_mapper"))


def test_a_failed_run_is_one_line_everywhere(tm, data, qgis_iface, qgis_new_project):
    """A raster that vanishes after planning: the command line's error line, the panel's outcome
    and the message bar carry the engine's one message."""
    from tailings_mapper.inference import SegmentOptions, execute, plan
    from tailings_mapper.inference.output import present
    from tailings_mapper.inference.errors import TailingsError
    from tailings_mapper.qgis_glue import task as tasklib
    from tailings_mapper.qgis_glue.layer_plan import LayerPlan
    tmp, model, _, raster, _ = data
    broken = str(tmp / "broken.tif")
    with open(broken, "wb") as fh:
        fh.write(open(raster, "rb").read()[:2000])    # a GeoTIFF cut short: header, no pixels
    proc = _cli(["segment", broken, "--model", model, "--out", str(tmp / "cli"), "--device", "cpu"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(err) == 1
    # the panel: plan a good raster, then it is cut short before the run
    p = plan(raster, model, SegmentOptions(device="cpu"), str(tmp / "panel"))
    bad = replace(p, input=broken, raster=replace(p.raster, path=broken))
    try:
        execute(bad)
        raise AssertionError("the run did not fail")
    except TailingsError as e:
        said = present.failure(e)
        traceback.clear_frames(e.__traceback__)   # (its frames hold GDAL datasets: none may outlive QGIS)
    qgis_iface.messageBar().clear_messages()
    task = tasklib.start(LayerPlan(bad, "", "scene"), qgis_iface.messageBar())
    ok, outcome = wait_task(task)
    assert not ok and outcome == said
    crit = qgis_iface.messageBar().get_messages(Qgis.Critical)
    assert crit and "scene: %s" % outcome in crit[-1]
    assert not os.path.exists(str(tmp / "panel"))     # nothing left of the failed run, not even its folder


def test_the_panel_is_told_even_when_showing_a_run_fails(tm, data, qgis_iface, qgis_new_project, monkeypatch):
    """A bug in showing a finished run (the README's demo once crashed there) still ends the task
    for the panel, with one line in the message bar and the traceback in the log."""
    from tailings_mapper.inference import SegmentOptions, plan
    from tailings_mapper.inference.output import present
    from tailings_mapper.qgis_glue import task as tasklib
    from tailings_mapper.qgis_glue.layer_plan import LayerPlan
    tmp, model, _, raster, _ = data

    def broken(res):
        raise TypeError("must be real number, not str")
    monkeypatch.setattr(present, "headline", broken)
    p = plan(raster, model, SegmentOptions(device="cpu"), str(tmp / "panel"))
    task = tasklib.start(LayerPlan(p, "", "scene"), qgis_iface.messageBar())
    ok, outcome = wait_task(task)
    assert ok is False and task.ok is False
    assert outcome == "the run ended but could not be shown: internal error (TypeError: must be real number, not str)"
    QgsProject.instance().removeAllMapLayers()


def test_a_broken_onnxruntime_is_not_called_missing(tm, qgis_iface, monkeypatch):
    """onnxruntime installed but failing to load (a library it needs): the panel, the message bar
    and Processing say so, with the reason, and still offer the installer."""
    from tailings_mapper.qgis_glue import deps

    class Broken:   # what the import system does when the package's native library fails to load
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "onnxruntime":
                raise ImportError("libonnxruntime.so.1: cannot open shared object file")
            return None
    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken()] + sys.meta_path)
    problem = deps.onnxruntime_problem()
    assert problem == deps.BROKEN_MESSAGE % "libonnxruntime.so.1: cannot open shared object file"
    assert "found the Python package onnxruntime, but it cannot be loaded" in problem
    p = tm.classFactory(qgis_iface)
    p.initGui()
    try:
        p.show_panel(True)
        assert not p.dock.validate() and p.dock.problem == problem and not p.dock.deps_button.isHidden()
        ok, why = p.provider.algorithm("segment").canExecute()
        assert not ok and why.startswith(problem)
    finally:
        p.unload()
