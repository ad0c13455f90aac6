"""The plugin under PyQt6 with stand-in QGIS 4 modules (see conftest.py and the README's testing part):
every module imports; the panel, every dialog, the toolbar actions and every Processing algorithm's
parameters are really constructed, their signals connected, and the actions triggered."""
import importlib
import os
import sys

import pytest

from conftest import COMPILED_RESOURCES, ROOT, Qt6Breakage, reraise_slot_errors

PACKAGES = ("ui", "qgis_glue", "processing_provider")
MODULES = [""] + ["plugin"] + sorted("%s.%s" % (p, f[:-3]) for p in PACKAGES for f in os.listdir(os.path.join(ROOT, p))
                                     if f.endswith(".py") and f != "__init__.py") + list(PACKAGES)
ALGORITHMS = {"segment": ("segment_algorithm", "SegmentAlgorithm"), "fit": ("fit_algorithm", "FitAlgorithm"),
              "change": ("change_algorithm", "ChangeAlgorithm"), "batch": ("batch_algorithm", "BatchAlgorithm")}


def connected(obj, signal) -> bool:
    return obj.receivers(signal) > 0


# ------------------------------------------------------------------------------------------- the ground
def test_pyqt6_only_and_strict_standins(tm):
    """The suite runs what it says: PyQt6 behind qgis.PyQt, no Qt 5 anywhere, stand-ins without the QGIS 3
    spellings (else it would prove nothing)."""
    from qgis.core import Qgis, QgsMapLayerProxyModel, QgsProcessing, QgsProcessingParameterNumber, QgsTask
    from qgis.gui import QgsFileWidget
    from qgis.PyQt import QtCore, QtWidgets
    assert QtCore.QT_VERSION_STR.startswith("6.") and QtCore.__name__ == "qgis.PyQt.QtCore"
    assert QtCore.Qt is sys.modules["PyQt6.QtCore"].Qt
    assert QtWidgets.QAction is sys.modules["PyQt6.QtGui"].QAction
    assert not any(m.split(".")[0] in ("PyQt5", "sip") for m in sys.modules)
    for owner, name in ((Qgis, "Warning"), (QgsProcessing, "TypeVectorPolygon"), (QgsTask, "CanCancel"),
                        (QgsProcessingParameterNumber, "Double"), (QgsMapLayerProxyModel, "RasterLayer"),
                        (QgsFileWidget, "GetDirectory"), (QtCore.Qt, "RightDockWidgetArea")):
        assert not hasattr(owner, name), "%s.%s exists in the stand-ins" % (owner.__name__, name)
    with pytest.raises(TypeError):   # an int where QGIS 4 declares an enum
        QgsProcessingParameterNumber("N", "n", 1)
    assert Qgis.MessageLevel.Warning and Qgis.ProcessingSourceType.VectorPolygon == 2


@pytest.mark.parametrize("module", MODULES)
def test_module_imports(tm, module):
    importlib.import_module("tailings_mapper" + ("." + module if module else ""))


def test_no_compiled_resources(tm):
    """Qt 6 has no pyrcc: icons come from their files (the plugin is asked for one to find out)."""
    from tailings_mapper.qgis_glue.icons import icon
    ic = icon("run.svg")
    assert not ic.isNull()
    if COMPILED_RESOURCES:
        where = "%s:%d" % COMPILED_RESOURCES[0]
        raise Qt6Breakage(where, "imports resources_rc (compiled Qt resources; none on Qt 6: load icons by path)")


# ------------------------------------------------------------------------------------------- the plugin
@pytest.fixture
def plugin(tm, iface):
    p = tm.classFactory(iface)
    p.initGui()
    yield p
    p.unload()


def test_toolbar_and_menu(plugin, iface):
    assert [a.objectName() for a in plugin.toolbar.actions()] == ["TailingsMapperSegment", "TailingsMapperPanel"]
    assert len(iface.raster_menu) == 9
    for _, action in iface.raster_menu:
        assert connected(action, action.toggled if action.isCheckable() else action.triggered), action.objectName()
    assert iface.messageBar().pushed, "the missing onnxruntime is announced"
    from qgis.core import QgsApplication
    assert QgsApplication.processingRegistry().providerById("tailings_mapper") is plugin.provider


@pytest.mark.parametrize("action", ["Panel", "Segment", "Change", "Batch", "Improve", "Fit", "Models", "Deps"])
def test_toolbar_action_triggered(plugin, iface, action):
    """Each action run as a click runs it (a modal dialog is closed as soon as it shows)."""
    from qgis.PyQt.QtCore import QTimer
    from qgis.PyQt.QtWidgets import QApplication
    a = next(a for a in plugin.actions if a.objectName() == "TailingsMapper" + action)

    def close_modal(tries=[50]):
        w = QApplication.activeModalWidget()
        if w is not None:
            w.reject()
        elif tries[0] > 0:
            tries[0] -= 1
            QTimer.singleShot(100, close_modal)
    QTimer.singleShot(100, close_modal)
    a.trigger()
    reraise_slot_errors()
    if action == "Panel":
        assert plugin.dock is not None and plugin.dock in iface.docks and plugin.panel_action.isChecked()


def test_panel(plugin, iface, layers):
    """The dock panel with a raster layer: band mapping rows for the model's inputs, the checks shown."""
    from tailings_mapper.ui.dock import TailingsDock
    dock = TailingsDock(iface, plugin)
    dock.set_layer(layers[0])
    assert dock.layer() is layers[0]
    assert dock.mapping_box.rows, "one band picker per model input"
    assert dock.validate() is False and dock.problem
    for button in (dock.run_button, dock.cancel_button, dock.deps_button, dock.zoom_button, dock.folder_button,
                   dock.improve_button, dock.fit_button):
        assert connected(button, button.clicked), button.text()
    assert connected(dock.layer_combo, dock.layer_combo.layerChanged)
    assert connected(dock.out_dir, dock.out_dir.fileChanged)
    dock.reset_settings()
    assert dock.models.show_card() is not None, "the shipped model's card"
    dock.cleanup()


# ------------------------------------------------------------------------------------------- the dialogs
def test_dependency_dialog(tm):
    from tailings_mapper.qgis_glue import deps
    from tailings_mapper.ui.deps_dialog import DependencyDialog
    dlg = DependencyDialog(deps.check())
    assert connected(dlg.install_button, dlg.install_button.clicked) and connected(dlg.cpu, dlg.cpu.toggled)
    assert "deps.py" in dlg.manual.text() and "--target" in dlg.manual.text()   # the installer, by hand


def test_fit_dialog(tm, iface, layers):
    from tailings_mapper.ui.fit_dialog import FitDialog
    dlg = FitDialog(iface, iface.mainWindow())
    assert dlg.rasters.count() == 1 and dlg.rasters.chosen() == [layers[0]]
    assert dlg.labels.currentLayer() is layers[1]
    assert connected(dlg.run_button, dlg.run_button.clicked)


def test_change_dialog(tm, iface, layers, tmp_path):
    from tailings_mapper.ui.change_dialog import ChangeDialog
    dlg = ChangeDialog(iface, iface.mainWindow(), out_dir=str(tmp_path))
    assert dlg.results.count() == 2 and dlg.out.filePath() == str(tmp_path)
    assert connected(dlg.facilities, dlg.facilities.layerChanged)
    assert dlg.start() is None and "two or more" in dlg.status.text()


def test_models_dialog(tm):
    from tailings_mapper.ui.models_dialog import ModelsDialog
    dlg = ModelsDialog()
    assert dlg.table.rowCount() >= 1
    dlg.select(dlg.models[0].name)
    assert dlg.selected() is dlg.models[0]
    assert dlg.show_card() is not None


# ------------------------------------------------------------------------------------------- Processing
def test_provider_loads_every_algorithm(tm):
    from qgis.core import QgsApplication
    from tailings_mapper.processing_provider.provider import TailingsProvider
    provider = TailingsProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    assert sorted(a.name() for a in provider.algorithms()) == sorted(ALGORITHMS)
    QgsApplication.processingRegistry().removeProvider(provider)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_algorithm_parameters(tm, name):
    module, cls = ALGORITHMS[name]
    alg = getattr(importlib.import_module("tailings_mapper.processing_provider." + module), cls)()
    alg.initAlgorithm({})
    params = alg.parameterDefinitions()
    assert params and len({p.name() for p in params}) == len(params)
    assert alg.outputDefinitions()
    assert type(alg.createInstance()) is type(alg) and alg.name() == name
    assert not alg.icon().isNull() and alg.shortHelpString() and alg.displayName()
    ok, why = alg.canExecute()
    assert ok or why
