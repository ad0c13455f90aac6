"""Learning from the user in QGIS: the training front ends (Processing, the dialog, "Improve the
model from my edits"), model management, the ten-class entry.  Real PyQGIS, real training (a few
steps)."""
import os
import sys

import pytest

pytest.importorskip("qgis.core")
pytest.importorskip("torch")

from osgeo import ogr, osr  # noqa: E402
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer  # noqa: E402
from qgis.PyQt.QtCore import Qt  # noqa: E402

from qgis_helpers import panel_run_network, plugin_env, s2_raster, tiny_model, wait_for  # noqa: E402


def test_loading_the_plugin_imports_no_training(tm, qgis_iface):
    p = tm.classFactory(qgis_iface)
    p.initGui()
    p.show_panel(True)
    try:
        loaded = {m for m in sys.modules if m.startswith("tailings_mapper.training")}   # the option table only
        assert loaded <= {"tailings_mapper.training", "tailings_mapper.training.engine",
                          "tailings_mapper.training.fit_options", "tailings_mapper.training.fit_present"}, loaded
    finally:
        p.unload()


@pytest.fixture
def env(tm, tmp_path, monkeypatch, qgis_iface, qgis_new_project):
    with plugin_env(tmp_path, monkeypatch, qgis_iface, "tailings"):
        yield tmp_path


def _labels(path, squares=((40, 40, 80),), epsg=32723, origin=(500000.0, 7700000.0)):
    """Polygons over ``s2_raster``'s squares (row, col, side in 10 m pixels), field kind = tailings."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lyr = ds.CreateLayer("labels", srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("kind", ogr.OFTString))
    for r, c, s in squares:
        x0, y0 = origin[0] + c * 10, origin[1] - r * 10
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetField("kind", "tailings")
        f.SetGeometry(ogr.CreateGeometryFromWkt("POLYGON((%r %r,%r %r,%r %r,%r %r,%r %r))" % (
            x0, y0, x0 + s * 10, y0, x0 + s * 10, y0 - s * 10, x0, y0 - s * 10, x0, y0)))
        lyr.CreateFeature(f)
    ds = None
    return str(path)


def _wait(task, timeout=300):
    assert wait_for(lambda: task.ok is not None, timeout), "training did not finish"
    return task.ok, task.outcome


def test_processing_trains_a_model_that_segment_then_runs(tm, qgis_processing, env):
    import processing
    from qgis.core import QgsApplication
    from tailings_mapper.processing_provider.provider import TailingsProvider
    reg = QgsApplication.processingRegistry()
    mine = reg.providerById("tailings_mapper") is None
    if mine:
        reg.addProvider(TailingsProvider())
    raster = s2_raster(str(env / "scene.tif"), squares=((40, 40, 80), (180, 160, 60)))
    out = processing.run("tailings_mapper:fit", {
        "RASTERS": [raster], "LABELS": _labels(env / "labels.gpkg", ((40, 40, 80), (180, 160, 60))),
        "FIELD": "kind", "CLASSES": "tailings", "INIT": "scratch", "EPOCHS": 2, "DEVICE": "cpu", "NAME": "from_qgis",
        "CHIP": 128, "CHIPS_PER_EPOCH": 8})
    assert out["OUTPUT"] == str(env / "models" / "from_qgis.onnx") and os.path.isfile(out["OUTPUT"])
    assert out["MODEL_NAME"] == "from_qgis" and os.path.isfile(out["CARD"])
    seg = processing.run("tailings_mapper:segment", {"INPUT": raster, "MODEL": "from_qgis", "DEVICE": "cpu",
                                                      "OUTPUT_CLASSES": str(env / "c.tif")})
    assert os.path.isfile(seg["OUTPUT_CLASSES"])
    with pytest.raises(Exception, match="classes the model does not have: 'tailings'"):   # the engine's words
        processing.run("tailings_mapper:fit", {"RASTERS": [raster], "LABELS": str(env / "labels.gpkg"),
                                               "FIELD": "kind", "CLASSES": "pit,dump", "INIT": "scratch",
                                               "EPOCHS": 1, "CHIP": 128, "CHIPS_PER_EPOCH": 4, "NAME": "x"})
    if mine:
        reg.removeProvider(reg.providerById("tailings_mapper"))


def test_improve_from_edits_learns_where_there_is_nothing_and_changes_nothing_of_the_users(plugin, env):
    """The panel runs the shipped network (loaded as a file: the shipped model's veto leaves these
    synthetic squares unflagged); the analyst deletes every polygon (unsaved edits); one action
    trains a new model in the list; the layer keeps its edits, the shipped model is as it was."""
    from tailings_mapper.inference import open_model
    _, poly = panel_run_network(plugin, env, ((40, 40, 120), (250, 200, 90)))
    n = poly.featureCount()
    assert n > 0
    before = os.path.getmtime(open_model("tailings").path)
    assert poly.startEditing()
    assert poly.deleteFeatures([f.id() for f in poly.getFeatures()])
    plugin.iface.setActiveLayer(poly)
    fit = plugin.dock.improve()
    assert fit is not None
    ok, outcome = _wait(fit)
    assert ok, outcome
    res = fit.result
    assert res.info.extra["trained_from"]["name"] == "tailings" and os.path.dirname(res.path) == str(env / "models")
    assert "veto" in res.info.extra and res.info.extra["fit"]["label_pixels"]["tailings"] == 0
    # the user's layer: still editing, its deletions pending, its file untouched
    assert poly.isEditable() and poly.featureCount() == 0
    assert QgsVectorLayer(poly.source(), "again", "ogr").featureCount() == n
    assert os.path.getmtime(open_model("tailings").path) == before
    # the new model is in the panel's list
    assert wait_for(lambda: plugin.dock.models.combo.findData(res.info.name) >= 0, 10)
    poly.rollBack()


def test_improve_refuses_a_layer_that_is_not_a_result(plugin, env):
    other = QgsVectorLayer(_labels(env / "mine.gpkg"), "mine", "ogr")
    QgsProject.instance().addMapLayer(other)
    assert plugin.improve_from_edits(layer=other) is None
    msgs = " ".join(plugin.iface.messageBar().get_messages(1) + plugin.iface.messageBar().get_messages(0))
    assert "is not the polygon layer of a Tailings Mapper run" in msgs


def test_fit_dialog_trains_in_the_task_manager(plugin, env):
    from tailings_mapper.ui.fit_dialog import FitDialog
    raster = s2_raster(str(env / "scene.tif"), squares=((40, 40, 80),))
    QgsProject.instance().addMapLayer(QgsRasterLayer(raster, "scene"))
    labels = QgsVectorLayer(_labels(env / "labels.gpkg"), "labels", "ogr")
    QgsProject.instance().addMapLayer(labels)
    added = []
    dlg = FitDialog(plugin.iface, on_model=added.append)
    assert dlg.rasters.count() == 1 and dlg.rasters.item(0).checkState() == Qt.Checked
    dlg.labels.setLayer(labels)
    dlg.field.setField("kind")
    dlg.classes.setCurrentIndex(dlg.classes.findData("tailings"))
    dlg.init.setCurrentIndex(dlg.init.findData("scratch"))
    dlg.epochs.setValue(1)
    dlg.name.setText("dialog_model")
    task = dlg.start()
    assert task is not None
    ok, outcome = _wait(task)
    assert ok, outcome
    assert "dialog_model is in your model list" in dlg.status.text() and added and added[0].info.name == "dialog_model"
    dlg.close()


def test_fit_dialog_says_what_is_missing(plugin, env, monkeypatch):
    from tailings_mapper.qgis_glue import deps
    from tailings_mapper.ui.fit_dialog import FitDialog
    dlg = FitDialog(plugin.iface)
    assert dlg.start() is None and "tick at least one raster" in dlg.status.text()
    monkeypatch.setattr(deps, "torch_missing", lambda: True)
    dlg2 = FitDialog(plugin.iface)
    assert not dlg2.run_button.isEnabled() and "needs PyTorch" in dlg2.status.text()


def test_my_models_rename_export_delete(plugin, env):
    from tailings_mapper.inference import open_model
    from tailings_mapper.ui.models_dialog import ModelsDialog
    tiny_model(str(env / "models" / "mine.onnx"))
    changed = []
    dlg = ModelsDialog(on_change=lambda: changed.append(1))
    names = [m.name for m in dlg.models]
    assert "tailings" in names and "mine" in names
    dlg.select("tailings")
    assert not dlg.delete_button.isEnabled() and not dlg.rename_button.isEnabled()   # shipped: never changed
    dlg.select("mine")
    assert dlg.rename("pond finder") == str(env / "models" / "pond finder.onnx")
    assert open_model(str(env / "models" / "pond finder.onnx")).info.name == "pond finder" and changed
    dlg.select("pond finder")
    out = dlg.export(str(env / "share.onnx"))
    assert os.path.isfile(out)
    dlg.select("pond finder")
    assert dlg.delete(confirm=False) and not os.path.exists(env / "models" / "pond finder.onnx")
    assert "pond finder" not in [m.name for m in dlg.models]


def test_the_ten_class_entry_says_how_to_get_a_model(plugin, env):
    from tailings_mapper.ui.model_picker import NO_MINING10
    lyr = QgsRasterLayer(s2_raster(str(env / "scene.tif")), "scene")
    QgsProject.instance().addMapLayer(lyr)
    plugin.show_panel(True)
    d = plugin.dock
    d.set_layer(lyr)
    combo = d.models.combo
    i = combo.findData(NO_MINING10)
    assert i >= 0 and "transport slope" in combo.itemData(i, Qt.ToolTipRole)
    combo.setCurrentIndex(i)
    d.validate()
    assert not d.run_button.isEnabled() and "Train one from your own polygons" in d.problem_label.text()
    assert d.run() is None


def test_inside_a_plugin_folder_training_shares_the_plugins_engine(tmp_path):
    """As QGIS imports it (the plugin package only, no checkout on the path): training's engine
    is the plugin's, one set of modules and error classes, under the plugin's name only."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.symlink(root, tmp_path / "tailings_mapper")
    code = ("import sys; sys.path = [p for p in sys.path if p not in ('', %r)]; sys.path.insert(0, %r);"
            "import tailings_mapper.qgis_glue.training_bridge as b; m = b.fit_module();"
            "import tailings_mapper.inference.errors as E;"
            "assert not [k for k in sys.modules if k == 'inference' or k.startswith('inference.')];"
            "assert m.InputError is E.InputError and m.__name__ == 'tailings_mapper.training.fit'; print('ok')"
            % (root, str(tmp_path)))
    out = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
