"""The QGIS plugin: toolbar action, menu, dock panel, Processing provider, runs."""
from __future__ import annotations

import os
from typing import Optional

from qgis.core import Qgis, QgsApplication, QgsRasterLayer
from qgis.PyQt.QtCore import Qt, QUrl
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import QAction, QPushButton

from .qgis_glue import deps
from .qgis_glue.icons import PLUGIN_DIR, icon
from .qgis_glue.log import log
from .qgis_glue.settings import Settings

MENU = "&Tailings Mapper"
RUN_TEXT = "Segment tailings"
HELP_URL = "https://github.com/tailings-mapper/tailings_mapper#readme"


class TailingsMapperPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.dock = None
        self.toolbar = None
        self.actions = []
        self.tasks = []
        self.missing = []
        self.run_action: Optional[QAction] = None
        self._missing_item = None
        self.panel_action: Optional[QAction] = None

    # ------------------------------------------------------------------ load / unload
    def initProcessing(self):  # noqa: N802 (QGIS API; qgis_process calls it without initGui)
        from .processing_provider.provider import TailingsProvider
        if self.provider is None:
            self.provider = TailingsProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()
        mw = self.iface.mainWindow()
        self.run_action = QAction(icon("run.svg"), RUN_TEXT, mw)
        self.run_action.setObjectName("TailingsMapperSegment")
        self.run_action.setToolTip("Segment tailings: run on the current raster layer now, with the panel's settings")
        self.run_action.triggered.connect(self.segment_current)
        self.panel_action = QAction(icon("panel.svg"), "Tailings Mapper panel", mw)
        self.panel_action.setObjectName("TailingsMapperPanel")
        self.panel_action.setToolTip("Show or hide the Tailings Mapper panel (layer, bands, model, options)")
        self.panel_action.setCheckable(True)
        self.panel_action.toggled.connect(self.show_panel)
        self.deps_action = QAction("Python packages (onnxruntime)…", mw)
        self.deps_action.setObjectName("TailingsMapperDeps")
        self.deps_action.triggered.connect(self.show_dependencies)
        self.fit_action = QAction("Train a model from polygons…", mw)
        self.fit_action.setObjectName("TailingsMapperFit")
        self.fit_action.triggered.connect(self.show_fit_dialog)
        self.improve_action = QAction("Improve the model from my edits", mw)
        self.improve_action.setObjectName("TailingsMapperImprove")
        self.improve_action.setToolTip("Train a new model from the current result polygon layer as you corrected it "
                                       "(deleted, reshaped, added polygons); the layer and the model stay as they are")
        self.improve_action.triggered.connect(self.improve_from_edits)
        self.change_action = QAction("Change map…", mw)
        self.change_action.setObjectName("TailingsMapperChange")
        self.change_action.setToolTip("Compare results of different years: a transition map, change polygons, tables "
                                      "and a report")
        self.change_action.triggered.connect(self.show_change_dialog)
        self.batch_action = QAction("Batch over facilities…", mw)
        self.batch_action.setObjectName("TailingsMapperBatch")
        self.batch_action.setToolTip("Every facility of a layer, every year of a folder of scenes: a time series")
        self.batch_action.triggered.connect(self.show_batch_dialog)
        self.models_action = QAction("My models…", mw)
        self.models_action.setObjectName("TailingsMapperModels")
        self.models_action.triggered.connect(self.show_models)
        self.help_action = QAction(QgsApplication.getThemeIcon("/mActionHelpContents.svg"), "Help", mw)
        self.help_action.setObjectName("TailingsMapperHelp")
        self.help_action.triggered.connect(self.show_help)

        self.toolbar = self.iface.addToolBar("Tailings Mapper")
        self.toolbar.setObjectName("TailingsMapperToolbar")
        self.toolbar.addAction(self.run_action)
        self.toolbar.addAction(self.panel_action)
        for a in (self.panel_action, self.run_action, self.change_action, self.batch_action, self.improve_action,
                  self.fit_action, self.models_action, self.deps_action, self.help_action):
            self.iface.addPluginToRasterMenu(MENU, a)
            self.actions.append(a)

        self.missing = deps.check()
        if self.missing:
            self._announce_missing()
        if Settings().get("panel_visible"):
            self.panel_action.setChecked(True)

    def unload(self):
        for t in list(self.tasks):
            try:
                t.cancel()
            except RuntimeError:
                pass
        self.tasks = []
        if self.dock is not None:
            Settings().set("panel_visible", self.dock.isVisible())
            self.dock.cleanup()
            self.iface.removeDockWidget(self.dock)
            self.dock.setParent(None)
            self.dock.deleteLater()
            self.dock = None
        for a in self.actions:
            self.iface.removePluginRasterMenu(MENU, a)
            a.deleteLater()
        self.actions = []
        if self.toolbar is not None:
            self.toolbar.clear()
            self.iface.mainWindow().removeToolBar(self.toolbar)
            self.toolbar.setParent(None)
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # ------------------------------------------------------------------ panel
    def get_dock(self, create: bool = True):
        if self.dock is None and create:
            from .ui.dock import TailingsDock
            self.dock = TailingsDock(self.iface, self)
            self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
            self.dock.visibilityChanged.connect(self._dock_visibility)
            for t in self.tasks:
                self.dock.track(t)
        return self.dock

    def show_panel(self, visible: bool = True):
        if visible:
            d = self.get_dock()
            d.show()
            d.raise_()
            active = self.iface.activeLayer()
            if isinstance(active, QgsRasterLayer):
                d.set_layer(active)
        elif self.dock is not None:
            self.dock.hide()

    def _dock_visibility(self, visible):
        if self.panel_action is not None and self.panel_action.isChecked() != visible:
            self.panel_action.blockSignals(True)
            self.panel_action.setChecked(visible)
            self.panel_action.blockSignals(False)

    # ------------------------------------------------------------------ dependencies, help
    def _announce_missing(self):
        """One message with an Install… button in the message bar (once; removed when fixed)."""
        bar = self.iface.messageBar()
        if self._missing_item is not None:
            try:
                if self._missing_item in bar.items():
                    return          # still shown
            except (AttributeError, RuntimeError):  # no items() (a stub), or the item was deleted
                pass
            self._missing_item = None
        text = deps.onnxruntime_problem(self.missing)
        if text is None:
            text = "needs Python packages that are missing: %s" % ", ".join(m.requirement.module for m in self.missing)
        try:
            widget = bar.createMessage("Tailings Mapper", text)
            button = QPushButton("Install…", widget)
            button.clicked.connect(self.show_dependencies)
            widget.layout().addWidget(button)
            self._missing_item = bar.pushWidget(widget, Qgis.MessageLevel.Warning, 0)
        except (AttributeError, TypeError):  # a message bar without widgets (a stub): text only
            bar.pushMessage("Tailings Mapper", text, Qgis.MessageLevel.Warning, 0)
        log("missing Python packages: %s" % deps.missing_text(self.missing), Qgis.MessageLevel.Warning)

    def show_dependencies(self, *_):
        from .ui.deps_dialog import DependencyDialog
        dlg = DependencyDialog(deps.check(), self.iface.mainWindow())
        dlg.exec()
        self.missing = deps.check()
        if not self.missing and self._missing_item is not None:
            try:
                self.iface.messageBar().popWidget(self._missing_item)
            except (RuntimeError, TypeError):  # already closed by the user
                pass
            self._missing_item = None
        if self.dock is not None:
            self.dock.populate_models(refresh=True)
            self.dock.schedule_validation()
        return dlg

    def show_help(self):
        """The user's help page (shipped with the plugin), in the browser."""
        page = os.path.join(PLUGIN_DIR, "help", "index.html")
        url = QUrl.fromLocalFile(page) if os.path.isfile(page) else QUrl(HELP_URL)
        QDesktopServices.openUrl(url)
        return url

    # ------------------------------------------------------------------ runs
    def start_run(self, layer_plan):
        """Run a ``qgis_glue.layer_plan.LayerPlan`` as a background task (shown in the panel)."""
        from .qgis_glue import task as tasklib
        try:
            view = self.iface.layerTreeView()
        except AttributeError:  # an iface without a layer tree view (tests, qgis_process)
            view = None
        task = tasklib.start(layer_plan, self.iface.messageBar(), layer_tree_view=view)
        self.tasks.append(task)
        task.done.connect(lambda ok, outcome, t=task: self._forget(t))
        if self.dock is not None:
            self.dock.track(task)
        return task

    # ------------------------------------------------------------------ training
    def _model_added(self, *_):
        if self.dock is not None:
            self.dock.populate_models(refresh=True)

    def show_fit_dialog(self, *_):
        from .ui.fit_dialog import FitDialog
        self._fit_dialog = FitDialog(self.iface, self.iface.mainWindow(), on_model=self._model_added)
        self._fit_dialog.show()
        return self._fit_dialog

    def show_change_dialog(self, *_):
        import datetime
        from .qgis_glue.layer_plan import default_out_dir
        from .ui.change_dialog import ChangeDialog
        folder = os.path.join(default_out_dir(), "change-%s" % datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
        self._change_dialog = ChangeDialog(self.iface, self.iface.mainWindow(), out_dir=folder)
        self._change_dialog.show()
        return self._change_dialog

    def show_batch_dialog(self, *_):
        """Processing's own dialog of the batch algorithm (progress, cancel, the log)."""
        import processing
        return processing.execAlgorithmDialog("tailings_mapper:batch", {})

    def show_models(self, *_):
        from .ui.models_dialog import ModelsDialog
        self._models_dialog = ModelsDialog(self.iface.mainWindow(), on_change=self._model_added)
        self._models_dialog.show()
        return self._models_dialog

    def improve_from_edits(self, *_, layer=None, epochs: int = 10, review: bool = False):
        """Train a new model from a corrected result polygon layer (the current layer by default);
        ``review``: from the decisions of its review queue only (``qgis_glue.review``)."""
        from .qgis_glue import edits, fit_task
        bar = self.iface.messageBar()
        layer = layer or self.iface.activeLayer()
        if deps.torch_missing():
            bar.pushMessage("Tailings Mapper", "Improving a model needs PyTorch: install it with Raster > Tailings "
                            "Mapper > Python packages…", Qgis.MessageLevel.Warning, 10)
            return None
        try:
            req = (edits.from_review if review else edits.improvement)(layer, epochs=epochs)
        except ValueError as e:
            bar.pushMessage("Tailings Mapper", "Cannot improve the model: %s" % e, Qgis.MessageLevel.Warning, 10)
            return None
        bar.pushMessage("Tailings Mapper", "Learning from your %s in %s: a new model %s (the task manager shows "
                        "its progress)" % ("review" if review else "edits", layer.name(), req.name),
                        Qgis.MessageLevel.Info, 8)
        task = fit_task.start(req, bar, self._model_added)
        self.tasks.append(task)
        task.done.connect(lambda ok, outcome, t=task: self._forget(t))
        return task

    def _forget(self, task):
        if task in self.tasks:
            self.tasks.remove(task)

    def segment_current(self, *_):
        """The toolbar action: the current raster layer, the panel's settings (or the defaults)."""
        from .inference import TailingsError
        from .qgis_glue.layer_plan import plan_for_layer
        bar = self.iface.messageBar()
        layer = self.iface.activeLayer()
        if not isinstance(layer, QgsRasterLayer):
            layer = self.dock.layer() if self.dock is not None else None
        if not isinstance(layer, QgsRasterLayer):
            bar.pushMessage("Tailings Mapper", "Select a raster layer to segment first.", Qgis.MessageLevel.Warning, 6)
            return None
        if deps.onnxruntime_missing():
            self.missing = deps.check()
            self._announce_missing()
            return None
        d = self.dock
        try:
            run = plan_for_layer(layer, Settings(), canvas=self.iface.mapCanvas(),
                                 mapping=d.mapping_for(layer) if d is not None else None,
                                 extent_layer=d.extent_layer_combo.currentLayer() if d is not None else None,
                                 model=d.current_model() if d is not None else None)
        except (ValueError, TailingsError) as e:
            bar.pushMessage("Tailings Mapper", "Cannot run on %s: %s" % (layer.name(), e), Qgis.MessageLevel.Critical, 10)
            return None
        return self.start_run(run)
