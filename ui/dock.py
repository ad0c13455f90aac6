"""The Tailings Mapper dock panel.

It draws the choices (layer, sensor preset, band mapping, model, extent, output folder, the
advanced options generated from the engine's option table), keeps them in QgsSettings, and
shows what the engine's plan says of them while the user edits (problems in red before any
run).  The plan itself is made by ``qgis_glue.layer_plan``; "Segment tailings" hands the plan
of that moment to the plugin, which runs it as a task.
"""
from __future__ import annotations

import os
from typing import Optional

from qgis.core import Qgis, QgsProject, QgsRasterLayer
from qgis.gui import QgsCollapsibleGroupBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import (QComboBox, QDockWidget, QFormLayout, QHBoxLayout, QLabel, QProgressBar,
                                 QPushButton, QScrollArea, QVBoxLayout, QWidget)

from ..inference import TailingsError
from ..inference.model import bands as bandlib
from ..qgis_glue import compat, deps, results
from ..qgis_glue.layer_plan import (LayerPlan, default_out_dir, plan_for_layer, plan_for_product,
                                    project_out_dir)
from ..qgis_glue.layers import band_descriptions, band_names_and_sources, layer_path
from ..qgis_glue.settings import EXTENT_CANVAS, EXTENT_LAYER, EXTENT_SELECTION, Settings
from .band_mapping import BandMappingBox
from . import narrow
from .model_picker import ModelPicker, html
from .source_picker import DateField, ProductSource
from .option_widgets import OptionWidgets
from . import review


OK, WARN = "#2a7a2a", "#b35900"   # green: ready; orange: check first


class TailingsDock(QDockWidget):
    """The panel; ``plugin`` provides ``start_run(layer_plan)`` and ``show_dependencies()``."""

    def __init__(self, iface, plugin=None, parent=None):
        super().__init__("Tailings Mapper", parent or (iface.mainWindow() if iface else None))
        self.setObjectName("TailingsMapperDock")
        self.setMinimumWidth(360)
        self.iface = iface
        self.plugin = plugin
        self.settings = Settings()
        self._loading = False
        self.problem: Optional[str] = None
        self.plan: Optional[LayerPlan] = None    # the plan of the choices as they were last checked
        self._tasks = []
        self._build()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self.validate)
        self._load_settings()
        if iface is not None:
            iface.currentLayerChanged.connect(self._current_layer_changed)
        self._layer_changed()

    # ------------------------------------------------------------------ construction
    def _build(self):
        body = QWidget()
        lay = QVBoxLayout(body)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(compat.LAYER_RASTER)
        self.layer_combo.setAllowEmptyLayer(True)
        self.layer_combo.layerChanged.connect(self._layer_changed)
        form.addRow("Raster layer", self.layer_combo)
        self.source = ProductSource(self)     # or a product by its path, no layer
        self.source.changed.connect(self._layer_changed)
        form.addRow(self.source.widget())
        self.date_edit = DateField()
        self.date_edit.textEdited.connect(self.schedule_validation)
        form.addRow("Acquisition date", self.date_edit)

        self.preset_combo = QComboBox()
        self.preset_combo.addItem("Detect from the layer", "")
        for key, p in bandlib.PRESETS.items():
            self.preset_combo.addItem("%s (%s)" % (p.label, key), key)
        self.preset_combo.currentIndexChanged.connect(self._preset_changed)
        form.addRow("Sensor preset", self.preset_combo)
        self.preset_label = QLabel()
        self.preset_label.setWordWrap(True)
        self.preset_label.setStyleSheet("color: gray")
        # wrapped labels span the row: under an empty label, QFormLayout sizes their height for a wider field
        # than it gives them (desktop QGIS at 360 px: the last line cut; tests/test_desktop_shots.py)
        form.addRow(self.preset_label)

        self.models = ModelPicker(self.settings, self)
        self.model_combo, self.model_label = self.models.combo, self.models.label
        self.models.changed.connect(self._model_changed)
        self.models.problem.connect(self._show_problem)
        form.addRow("Model", self.models.row)
        # (the card button under the model's description: beside the list it pushed the panel past 360 px)
        self.models.row.removeWidget(self.models.card_button)
        self.models.refresh_button.setFixedWidth(max(30, self.models.refresh_button.minimumSizeHint().width()))
        form.addRow(self.model_label)
        form.addRow("", self.models.card_button)
        lay.addLayout(form)

        self.mapping_box = BandMappingBox(self.schedule_validation)
        lay.addWidget(self.mapping_box)

        form2 = QFormLayout()
        self.extent_combo = QComboBox()
        self.extent_combo.addItem("Whole layer", EXTENT_LAYER)
        self.extent_combo.addItem("Current map view", EXTENT_CANVAS)
        self.extent_combo.addItem("Selected features of", EXTENT_SELECTION)
        self.extent_combo.setToolTip("Selected features: only the pixels inside the selected polygons are "
                                     "segmented; the rest of their bounding box gets no class")
        self.extent_combo.currentIndexChanged.connect(self._extent_changed)
        self.extent_layer_combo = QgsMapLayerComboBox()
        self.extent_layer_combo.setFilters(compat.LAYER_POLYGON)
        self.extent_layer_combo.setAllowEmptyLayer(True)   # never a layer by itself (a result, say)
        self.extent_layer_combo.layerChanged.connect(self._extent_changed)
        form2.addRow("Extent", narrow.stacked(self.extent_combo, self.extent_layer_combo))

        self.out_dir = QgsFileWidget()
        self.out_dir.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.out_dir.setDialogTitle("Output folder")
        self.out_dir.fileChanged.connect(self._out_dir_changed)
        form2.addRow("Output folder", self.out_dir)
        self.out_dir_hint = QLabel()
        self.out_dir_hint.setStyleSheet("color: gray")
        self.out_dir_hint.setWordWrap(True)
        form2.addRow("", self.out_dir_hint)
        QgsProject.instance().fileNameChanged.connect(self._show_out_dir_hint)
        lay.addLayout(form2)

        adv = QgsCollapsibleGroupBox("Advanced")
        adv.setObjectName("TailingsMapperAdvanced")
        adv.setCollapsed(True)
        af = QFormLayout(adv)
        self.options = OptionWidgets(af)
        self.options.on_change(self._advanced_changed)
        reset = QPushButton("Reset to defaults")
        reset.clicked.connect(self.reset_settings)
        af.addRow("", reset)
        self.advanced = adv
        lay.addWidget(adv)

        self.problem_label = QLabel()
        self.problem_label.setWordWrap(True)
        self.problem_label.setTextFormat(Qt.TextFormat.RichText)
        self.problem_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.problem_label)
        self.deps_button = QPushButton("Install…")
        self.deps_button.setToolTip("Install onnxruntime into the plugin's own folder")
        self.deps_button.setVisible(False)
        self.deps_button.clicked.connect(self._install_deps)
        lay.addWidget(self.deps_button)

        run_row = QHBoxLayout()
        self.run_button = QPushButton("Segment tailings")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.run)
        run_row.addWidget(self.run_button, 1)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        run_row.addWidget(self.cancel_button)
        lay.addLayout(run_row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        lay.addWidget(self.progress)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        lay.addWidget(self.status_label)
        self.findings_label = QLabel()   # the last run's warnings and findings (masked, like the training data)
        self.findings_label.setWordWrap(True)
        self.findings_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.findings_label.setOpenExternalLinks(True)
        lay.addWidget(self.findings_label)
        self.zoom_button = QPushButton("Zoom to results")
        self.zoom_button.clicked.connect(self.zoom_to_results)
        self.folder_button = QPushButton("Open output folder")
        self.folder_button.clicked.connect(self.open_output_folder)
        for b in (self.zoom_button, self.folder_button):
            b.setEnabled(False)
        lay.addLayout(narrow.stacked(self.zoom_button, self.folder_button))
        self.review_button = QPushButton("Review detections")   # the review queue (ui/review.py)
        self.review_button.clicked.connect(lambda: review.show(self))
        lay.addWidget(self.review_button)
        self.improve_button = QPushButton("Improve the model from my edits")
        self.improve_button.setToolTip("After correcting a result's polygons (delete false ones, reshape, add missed "
                                       "ones): train a new model from them. The layer and the model stay as they are.")
        self.improve_button.clicked.connect(self.improve)
        self.fit_button = QPushButton("Train a model from polygons…")
        self.fit_button.setToolTip("Your own classes, region or sensor: train a model from polygons you drew")
        self.fit_button.clicked.connect(lambda: self.plugin.show_fit_dialog() if self.plugin is not None else None)
        lay.addLayout(narrow.stacked(self.improve_button, self.fit_button))
        lay.addStretch(1)
        self._last = None    # the last task that added results

        narrow.narrow_forms(body)
        for combo in body.findChildren(QComboBox):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(body)
        self.scroll = scroll
        self.setWidget(scroll)

    # ------------------------------------------------------------------ settings
    def _load_settings(self):
        self._loading = True
        try:
            s = self.settings
            self.models.populate()
            self.preset_combo.setCurrentIndex(max(0, self.preset_combo.findData(s.get("preset"))))
            self.extent_combo.setCurrentIndex(max(0, self.extent_combo.findData(s.get("extent_mode"))))
            lyr = QgsProject.instance().mapLayer(s.get("extent_layer")) if s.get("extent_layer") else None
            if lyr is not None:
                self.extent_layer_combo.setLayer(lyr)
            self.out_dir.setFilePath(s.get("out_dir"))
            for name in self.options.options:
                self.options.set_text(name, s.option_text(name))
            self.extent_layer_combo.setEnabled(self.extent_combo.currentData() == EXTENT_SELECTION)
        finally:
            self._loading = False

    def _advanced_changed(self, *_):
        if self._loading:
            return
        for name, text in self.options.texts().items():
            self.settings.set_option_text(name, text)
        self.schedule_validation()

    def reset_settings(self):
        self.settings.reset()
        self._load_settings()
        self.mapping_box.layer_id = None
        self._layer_changed()

    # ------------------------------------------------------------------ models
    def populate_models(self, refresh: bool = False):
        self.models.populate(refresh)

    def current_model(self) -> Optional[str]:
        return self.models.current()

    def add_user_model(self, path: str) -> bool:
        return self.models.add_user_model(path)

    def _model_changed(self):
        if self._loading:
            return
        self._rebuild_mapping()
        self.schedule_validation()

    # ------------------------------------------------------------------ layer, preset, mapping
    def layer(self) -> Optional[QgsRasterLayer]:
        lyr = self.layer_combo.currentLayer()
        return lyr if isinstance(lyr, QgsRasterLayer) else None

    def set_layer(self, layer):
        self.layer_combo.setLayer(layer)

    def _current_layer_changed(self, layer):
        """Follow the raster the user works on, but never the panel's own results."""
        if isinstance(layer, QgsRasterLayer) and layer.isValid() and not results.is_result(layer):
            self.layer_combo.setLayer(layer)

    def _layer_changed(self, *_):
        self.date_edit.prefill(self.source_path())
        self._update_preset_label()
        self._show_out_dir_hint()
        self._rebuild_mapping()
        self.schedule_validation()

    def _show_out_dir_hint(self, *_):
        kept = project_out_dir()
        self.out_dir_hint.setText("" if self.out_dir.filePath() else "outputs go to %s (%s)" % (kept or default_out_dir(
            ), "this project's folder: saving the project does not move it" if kept else
            "each run adds new files; the first run fixes the folder for this project"))

    def source_path(self) -> Optional[str]:
        """What is segmented: the product chosen by its path, else the layer's file (None: nothing)."""
        if self.source.path:
            return self.source.path
        try:
            return layer_path(self.layer()) if self.layer() is not None else None
        except ValueError:   # not a GDAL raster: the plan says so
            return None

    def detected_preset(self) -> Optional[str]:
        lyr = self.layer()
        return bandlib.detect_preset(band_descriptions(lyr), by_count=True) if lyr is not None else None

    def _update_preset_label(self):
        lyr = self.layer()
        if self.source.path:
            self.preset_label.setStyleSheet("color: gray")
            self.preset_label.setText("the product's bands are found by their names")
            return
        if lyr is None:
            self.preset_label.setText("")
            return
        desc, sources = band_names_and_sources(lyr)
        det = self.detected_preset()
        names = ", ".join("%d=%s" % (i + 1, d or "?") for i, d in enumerate(desc))
        where = sorted({s for s in sources if s})
        if not where:
            text = "%d band%s (%s): no band names anywhere" % (len(desc), "" if len(desc) == 1 else "s", names)
            if det:
                text += "; the usual layout for %d bands would be %s — check it" % (len(desc),
                                                                                   bandlib.PRESETS[det].label)
        elif det:
            text = "detected: %s — bands %s (from the %s)" % (bandlib.PRESETS[det].label, names, ", ".join(where))
        else:
            text = "%d band%s (%s, from the %s); no preset detected" % (
                len(desc), "" if len(desc) == 1 else "s", names, ", ".join(where))
        self.preset_label.setStyleSheet("color: %s" % (WARN if not where else "gray"))   # unnamed: a guess at best
        self.preset_label.setText(text)

    def _preset_changed(self, *_):
        if self._loading:
            return
        self.settings.set_option_text("preset", self.preset_combo.currentData() or "")
        self.mapping_box.model = None
        self._rebuild_mapping()
        self.schedule_validation()

    def _rebuild_mapping(self):
        self.mapping_box.rebuild(None if self.source.path else self.layer(), self.current_model(), self.models.info(),
                                 self.preset_combo.currentData() or None)

    def mapping(self):
        """The band mapping in the panel: model band name -> 1-based raster band (set rows only)."""
        return self.mapping_box.mapping()

    def mapping_for(self, layer):
        """The panel's mapping when it was made for ``layer`` and the current model, else None."""
        return self.mapping_box.mapping_for(layer, self.current_model())

    # ------------------------------------------------------------------ extent, output
    def _extent_changed(self, *_):
        mode = self.extent_combo.currentData()
        self.extent_layer_combo.setEnabled(mode == EXTENT_SELECTION)
        if self._loading:
            return
        self.settings.set("extent_mode", mode)
        lyr = self.extent_layer_combo.currentLayer()
        self.settings.set("extent_layer", lyr.id() if lyr else "")
        self.schedule_validation()

    def _out_dir_changed(self, path):
        if self._loading:
            return
        self.settings.set("out_dir", path or "")
        self._show_out_dir_hint()
        self.schedule_validation()

    # ------------------------------------------------------------------ checking
    def schedule_validation(self, *_):
        self._timer.start()

    def make_plan(self) -> LayerPlan:
        """The plan of the panel's choices; raises ValueError / TailingsError naming the problem."""
        lyr = self.layer()
        if lyr is None and not self.source.path:
            raise ValueError("choose a raster layer or open a Sentinel-2 product")
        model = self.current_model()
        if not model:
            raise ValueError(self.models.placeholder_problem() or "choose a model")
        date = self.date_edit.date()    # (ValueError naming the format)
        if self.source.path:
            return plan_for_product(self.source.path, self.settings, model=model, date=date)
        missing = self.mapping_box.unset()
        if missing:
            raise ValueError("no raster band chosen for model input%s %s"
                             % ("s" if len(missing) > 1 else "", ", ".join(missing)))
        canvas = self.iface.mapCanvas() if self.iface is not None else None
        return plan_for_layer(lyr, self.settings, canvas=canvas, mapping=self.mapping_for(lyr),
                              extent_layer=self.extent_layer_combo.currentLayer(), model=model, date=date)

    def validate(self) -> bool:
        """Plan the choices; show the problem, or what the plan decided (mapping, GSD, notes)."""
        self._timer.stop()
        self.plan = None
        self._show_out_dir_hint()
        problem = deps.onnxruntime_problem()
        if problem is not None:   # whatever else is chosen: the one thing to fix first
            self._show_problem(problem)
            return False
        try:
            self.plan = self.make_plan()
        except (ValueError, TailingsError) as e:
            self._show_problem(str(e))
            return False
        p = self.plan.plan
        self.problem = None
        # ready, yet orange while something (a guessed band order...) asks to be checked first
        txt = "%s: %s" % ("Ready, after checking the above" if p.warnings else "Ready",
                          html(p.mapping.as_text(p.info.bands).replace("<-", "←")))
        txt += "; working at %.1f m GSD" % p.work_gsd_m
        if p.notes:
            txt += "<br>" + "<br>".join(html(n) for n in p.notes)
        txt += "<br>" + html(self.size_text(p))
        warn = "".join("<p style='color:#b35900'><b>Check:</b> %s</p>" % html(w) for w in p.warnings)
        self.problem_label.setText(warn + "<span style='color:%s'>%s</span>" % (WARN if p.warnings else OK, txt))
        self.deps_button.setVisible(False)
        self.run_button.setEnabled(True)
        return True

    def size_text(self, p) -> str:
        """How big the run is, and how long it should take on this machine and in how much memory
        (the plan's estimate: the engine keeps each device's measured speed per model)."""
        w, h = p.window[2], p.window[3]
        km2 = w * h * p.src_gsd_m ** 2 / 1e6
        text = "size: %d x %d px (%.1f km²), %d tiles x %g passes" % (w, h, km2, p.tile_count, p.passes)
        if p.estimate is not None:
            text += "; " + p.estimate.describe()
        return text

    def _show_problem(self, text: str):
        self.problem = text
        self.problem_label.setText("<span style='color:#c00'><b>Cannot run:</b> %s</span>" % html(text))
        self.run_button.setEnabled(False)
        self.deps_button.setVisible(deps.onnxruntime_missing())

    # ------------------------------------------------------------------ running
    def run(self):
        """Plan the choices as they are now and start the plan (None, with the problem shown, when
        it cannot run)."""
        if not self.validate():
            if self.iface is not None:
                self.iface.messageBar().pushMessage("Tailings Mapper", "Cannot run: %s" % self.problem,
                                                    Qgis.MessageLevel.Warning, 8)
            return None
        if self.plugin is not None:
            return self.plugin.start_run(self.plan)
        from ..qgis_glue import task as tasklib
        task = tasklib.start(self.plan, self.iface.messageBar() if self.iface else None)
        self.track(task)
        return task

    def track(self, task):
        """Show a task's progress in the panel."""
        self._tasks.append(task)
        self._show_running()
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status_label.setText("%s: queued" % task.source_name)
        task.progressChanged.connect(lambda v: self.progress.setValue(int(v)))
        task.statusChanged.connect(lambda m, t=task: self.status_label.setText("%s: %s" % (t.source_name, m)))
        task.done.connect(lambda ok, outcome, t=task: self._task_done(t, ok, outcome))

    def _task_done(self, task, ok, outcome):
        if task in self._tasks:
            self._tasks.remove(task)
        self.status_label.setText("%s: %s" % (task.source_name, outcome))
        self.progress.setValue(100 if ok else 0)
        if ok and task.result is not None:
            self._last = task
        self.findings_label.setText(results.findings_html(task.result) if ok and task.result is not None else "")
        self.show_outcome()
        self.zoom_button.setEnabled(self._last is not None)
        self.folder_button.setEnabled(self._last is not None)
        self._show_running()
        self.cancel_button.setEnabled(bool(self._tasks))
        self.schedule_validation()

    def show_outcome(self):
        """Scroll the panel to the run button, with the progress, the outcome and the findings below it
        (after a run they would otherwise sit below the fold)."""
        from qgis.PyQt.QtCore import QPoint
        body = self.scroll.widget()
        body.layout().activate()
        self.scroll.verticalScrollBar().setValue(self.run_button.mapTo(body, QPoint(0, 0)).y() - 4)

    def _show_running(self):
        """The run button says how many runs are going (each click starts one more)."""
        n = len(self._tasks)
        self.run_button.setText("Segment tailings" + (" (%d running)" % n if n else ""))

    def zoom_to_results(self):
        layers = [lyr for lyr in (self._last.layers if self._last else []) if lyr is not None]
        if not layers or self.iface is None:
            return
        canvas = self.iface.mapCanvas()
        from qgis.core import QgsCoordinateTransform
        extent = layers[0].extent()
        dest = canvas.mapSettings().destinationCrs()
        if dest.isValid() and layers[0].crs() != dest:
            extent = QgsCoordinateTransform(layers[0].crs(), dest, QgsProject.instance()).transformBoundingBox(extent)
        canvas.setExtent(extent)
        canvas.refresh()

    def improve(self):
        """The current layer (a corrected result), else the last run's polygons: a new model from them."""
        layer = self.iface.activeLayer() if self.iface is not None else None
        if not (layer is not None and layer.customProperty(results.RESULT_PROPERTY) == "polygons"):
            last = [lyr for lyr in (self._last.layers if self._last else [])
                    if lyr is not None and lyr.customProperty(results.RESULT_PROPERTY) == "polygons"]
            layer = last[0] if last else layer
        if self.plugin is not None:
            return self.plugin.improve_from_edits(layer=layer)
        return None

    def open_output_folder(self):
        from qgis.PyQt.QtCore import QUrl
        from qgis.PyQt.QtGui import QDesktopServices
        if self._last is not None and self._last.result is not None:
            folder = os.path.dirname(self._last.result.class_raster)
            QDesktopServices.openUrl(QUrl.fromLocalFile(folder))
            return folder
        return None

    def cancel(self):
        for t in list(self._tasks):
            t.cancel()

    def _install_deps(self):
        if self.plugin is not None:
            self.plugin.show_dependencies()

    def cleanup(self):
        self._timer.stop()
        if self.iface is not None:
            try:
                self.iface.currentLayerChanged.disconnect(self._current_layer_changed)
            except TypeError:  # never connected (a stub iface)
                pass
