"""The Tailings Mapper dock panel.

Gathers the choices (layer, sensor preset, band mapping, model, extent, output
folder, advanced options), stores them in QgsSettings, validates them with the
engine's ``plan`` while the user edits (problems show before running), and starts
runs through the plugin.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from qgis.core import QgsMapLayerProxyModel, QgsProject, QgsRasterLayer
from qgis.gui import QgsCollapsibleGroupBox, QgsFileWidget, QgsMapLayerComboBox, QgsRasterBandComboBox
from qgis.PyQt.QtCore import Qt, QTimer, pyqtSignal
from qgis.PyQt.QtWidgets import (QComboBox, QDockWidget, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                                 QHBoxLayout, QLabel, QProgressBar, QPushButton, QScrollArea, QSpinBox, QCheckBox,
                                 QVBoxLayout, QWidget)

from . import config
from .config import Settings

LOAD_ONNX = "__load_onnx__"


def _engine():
    from .. import inference
    return inference


class TailingsDock(QDockWidget):
    """The panel; ``plugin`` provides ``start_run(request)`` and ``cancel_all()``."""

    runRequested = pyqtSignal(object)     # a config.Request

    def __init__(self, iface, plugin=None, parent=None):
        super().__init__("Tailings Mapper", parent or (iface.mainWindow() if iface else None))
        self.setObjectName("TailingsMapperDock")
        self.setMinimumWidth(360)
        self.iface = iface
        self.plugin = plugin
        self.settings = Settings()
        self._loading = False
        self._info_cache: Dict[str, object] = {}   # model path -> (mtime, ModelInfo or error str)
        self._band_rows: List[tuple] = []          # (model band name, QgsRasterBandComboBox)
        self._mapping_layer_id: Optional[str] = None
        self._mapping_model: Optional[str] = None
        self.problem: Optional[str] = None
        self.plan = None
        self._tasks = []
        self._build()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self.validate)
        self._load_settings()
        self._refresh_model_info()
        if iface is not None:
            try:
                iface.currentLayerChanged.connect(self._current_layer_changed)
            except Exception:
                pass
        self._layer_changed()

    # ------------------------------------------------------------------ construction
    def _build(self):
        body = QWidget()
        lay = QVBoxLayout(body)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)

        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.layer_combo.setAllowEmptyLayer(True)
        self.layer_combo.layerChanged.connect(self._layer_changed)
        form.addRow("Raster layer", self.layer_combo)

        self.preset_combo = QComboBox()
        self.preset_combo.addItem("Detect from the layer", "")
        for key, p in _engine().bands.PRESETS.items():
            self.preset_combo.addItem("%s (%s)" % (p.label, key), key)
        self.preset_combo.currentIndexChanged.connect(self._preset_changed)
        form.addRow("Sensor preset", self.preset_combo)
        self.preset_label = QLabel()
        self.preset_label.setWordWrap(True)
        self.preset_label.setStyleSheet("color: gray")
        form.addRow("", self.preset_label)

        model_row = QHBoxLayout()
        self.model_combo = QComboBox()
        self.model_combo.currentIndexChanged.connect(self._model_changed)
        model_row.addWidget(self.model_combo, 1)
        self.model_refresh = QPushButton("↻")
        self.model_refresh.setToolTip("Look for models again (shipped and user models folder)")
        self.model_refresh.setMaximumWidth(30)
        self.model_refresh.clicked.connect(lambda: self.populate_models(refresh=True))
        model_row.addWidget(self.model_refresh)
        form.addRow("Model", model_row)
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.model_label.setTextFormat(Qt.RichText)
        form.addRow("", self.model_label)
        lay.addLayout(form)

        self.mapping_box = QGroupBox("Band mapping")
        self.mapping_box.setToolTip("Which raster band feeds each model input; pre-filled by band name")
        self.mapping_form = QFormLayout(self.mapping_box)
        self.mapping_form.setRowWrapPolicy(QFormLayout.WrapLongRows)
        lay.addWidget(self.mapping_box)

        form2 = QFormLayout()
        ext_row = QHBoxLayout()
        self.extent_combo = QComboBox()
        self.extent_combo.addItem("Whole layer", config.EXTENT_LAYER)
        self.extent_combo.addItem("Current map view", config.EXTENT_CANVAS)
        self.extent_combo.addItem("Selected features of", config.EXTENT_SELECTION)
        self.extent_combo.setToolTip("Selected features: only the pixels inside the selected polygons are "
                                     "segmented; the rest of their bounding box gets no class")
        self.extent_combo.currentIndexChanged.connect(self._extent_changed)
        ext_row.addWidget(self.extent_combo)
        self.extent_layer_combo = QgsMapLayerComboBox()
        self.extent_layer_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.extent_layer_combo.layerChanged.connect(self._extent_changed)
        ext_row.addWidget(self.extent_layer_combo, 1)
        form2.addRow("Extent", ext_row)

        self.out_dir = QgsFileWidget()
        self.out_dir.setStorageMode(QgsFileWidget.GetDirectory)
        self.out_dir.setDialogTitle("Output folder")
        self.out_dir.fileChanged.connect(self._out_dir_changed)
        form2.addRow("Output folder", self.out_dir)
        self.out_dir_hint = QLabel()
        self.out_dir_hint.setStyleSheet("color: gray")
        self.out_dir_hint.setWordWrap(True)
        form2.addRow("", self.out_dir_hint)
        lay.addLayout(form2)

        adv = QgsCollapsibleGroupBox("Advanced")
        adv.setObjectName("TailingsMapperAdvanced")
        adv.setCollapsed(True)
        af = QFormLayout(adv)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 4096)
        self.tile_spin.setSingleStep(32)
        self.tile_spin.setSpecialValueText("model default")
        af.addRow("Tile size (px)", self.tile_spin)
        self.overlap_spin = QSpinBox()
        self.overlap_spin.setRange(-1, 2048)
        self.overlap_spin.setSingleStep(8)
        self.overlap_spin.setSpecialValueText("model default")
        af.addRow("Overlap (px)", self.overlap_spin)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 256)
        af.addRow("Batch size", self.batch_spin)
        self.device_combo = _choice_combo(config.DEVICES)
        af.addRow("Device", self.device_combo)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 0.99)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setDecimals(2)
        self.threshold_spin.setSpecialValueText("model default")
        af.addRow("Threshold", self.threshold_spin)
        self.tta_combo = _choice_combo(
            config.TTA_CHOICES, "Test-time augmentation: the network also sees each tile flipped (and rotated) "
                                "and the results are averaged. A little more accurate, slower in proportion.")
        af.addRow("Test-time augmentation", self.tta_combo)
        self.scales_combo = _choice_combo(
            config.SCALE_CHOICES, "Multi-scale inference: the network also sees each tile at half (quarter) "
                                  "resolution, with more of the surroundings in view; results are averaged.")
        af.addRow("Scales", self.scales_combo)
        self.min_area_spin = QDoubleSpinBox()
        self.min_area_spin.setRange(-1.0, 100000.0)
        self.min_area_spin.setDecimals(2)
        self.min_area_spin.setSingleStep(0.5)
        self.min_area_spin.setSpecialValueText("model default")
        self.min_area_spin.setSuffix(" ha")
        af.addRow("Min. polygon area", self.min_area_spin)
        self.simplify_spin = QDoubleSpinBox()
        self.simplify_spin.setRange(0.0, 1000.0)
        self.simplify_spin.setDecimals(1)
        self.simplify_spin.setSpecialValueText("none")
        self.simplify_spin.setSuffix(" m")
        af.addRow("Simplify polygons", self.simplify_spin)
        self.confidence_check = QCheckBox("Write the confidence raster")
        af.addRow("", self.confidence_check)
        reset = QPushButton("Reset to defaults")
        reset.clicked.connect(self.reset_settings)
        af.addRow("", reset)
        self.advanced = adv
        lay.addWidget(adv)
        for w in (self.tile_spin, self.overlap_spin, self.batch_spin, self.threshold_spin, self.min_area_spin,
                  self.simplify_spin):
            w.valueChanged.connect(self._advanced_changed)
        self.device_combo.currentIndexChanged.connect(self._advanced_changed)
        self.tta_combo.currentIndexChanged.connect(self._advanced_changed)
        self.scales_combo.currentIndexChanged.connect(self._advanced_changed)
        self.confidence_check.toggled.connect(self._advanced_changed)

        self.problem_label = QLabel()
        self.problem_label.setWordWrap(True)
        self.problem_label.setTextFormat(Qt.RichText)
        self.problem_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        lay.addWidget(self.problem_label)
        self.deps_button = QPushButton("Install dependencies…")
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
        lay.addStretch(1)

        for fl in body.findChildren(QFormLayout):
            fl.setRowWrapPolicy(QFormLayout.WrapLongRows)
        for combo in body.findChildren(QComboBox):
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        self._body = body
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setWidget(body)
        self.setWidget(scroll)

    # ------------------------------------------------------------------ settings
    def _load_settings(self):
        self._loading = True
        try:
            s = self.settings
            self.populate_models()
            idx = self.preset_combo.findData(s.get("preset"))
            self.preset_combo.setCurrentIndex(max(0, idx))
            idx = self.extent_combo.findData(s.get("extent_mode"))
            self.extent_combo.setCurrentIndex(max(0, idx))
            lyr = QgsProject.instance().mapLayer(s.get("extent_layer")) if s.get("extent_layer") else None
            if lyr is not None:
                self.extent_layer_combo.setLayer(lyr)
            self.out_dir.setFilePath(s.get("out_dir"))
            self.tile_spin.setValue(s.get("tile_size"))
            self.overlap_spin.setValue(s.get("overlap"))
            self.batch_spin.setValue(s.get("batch"))
            self.device_combo.setCurrentIndex(max(0, self.device_combo.findData(s.get("device"))))
            self.threshold_spin.setValue(s.get("threshold"))
            self.tta_combo.setCurrentIndex(max(0, self.tta_combo.findData(s.get("tta"))))
            self.scales_combo.setCurrentIndex(max(0, self.scales_combo.findData(s.get("scales"))))
            self.min_area_spin.setValue(s.get("min_area_ha"))
            self.simplify_spin.setValue(s.get("simplify_m"))
            self.confidence_check.setChecked(s.get("confidence"))
            self.extent_layer_combo.setEnabled(self.extent_combo.currentData() == config.EXTENT_SELECTION)
        finally:
            self._loading = False

    def _advanced_changed(self, *_):
        if self._loading:
            return
        s = self.settings
        s.set("tile_size", self.tile_spin.value())
        s.set("overlap", self.overlap_spin.value())
        s.set("batch", self.batch_spin.value())
        s.set("device", self.device_combo.currentData())
        s.set("threshold", float(self.threshold_spin.value()))
        s.set("tta", int(self.tta_combo.currentData()))
        s.set("scales", self.scales_combo.currentData() or "")
        s.set("min_area_ha", float(self.min_area_spin.value()))
        s.set("simplify_m", float(self.simplify_spin.value()))
        s.set("confidence", self.confidence_check.isChecked())
        self.schedule_validation()

    def reset_settings(self):
        self.settings.reset()
        self._load_settings()
        self._refresh_model_info()
        self._mapping_layer_id = None
        self._layer_changed()

    # ------------------------------------------------------------------ models
    def populate_models(self, refresh: bool = False):
        """Shipped and user models, the ONNX files the user loaded, then "Load ONNX…"."""
        was_loading = self._loading
        self._loading = True
        try:
            self.model_combo.clear()
            try:
                entries = _engine().list_models(load=False)
            except Exception as e:  # pragma: no cover - engine import problems
                entries = []
                self.problem_label.setText("<span style='color:#c00'>%s</span>" % e)
            seen = set()
            for e in entries:
                label = "%s%s" % (e.name, " (shipped)" if e.shipped else " (user)")
                self.model_combo.addItem(label, e.name)
                self.model_combo.setItemData(self.model_combo.count() - 1, e.path, Qt.ToolTipRole)
                seen.add(os.path.abspath(e.path))
            for path in self.settings.get("user_models"):
                if os.path.abspath(path) in seen or not os.path.isfile(path):
                    continue
                self.model_combo.addItem(os.path.basename(path), path)
                self.model_combo.setItemData(self.model_combo.count() - 1, path, Qt.ToolTipRole)
                seen.add(os.path.abspath(path))
            self.model_combo.addItem("Load ONNX…", LOAD_ONNX)
            want = self.settings.get("model") or config.choose_model(self.settings)
            idx = self.model_combo.findData(want)
            if idx < 0 and self.model_combo.count() > 1:
                idx = 0
            self.model_combo.setCurrentIndex(max(0, idx))
            if refresh:
                self._info_cache.clear()
        finally:
            self._loading = was_loading
        self._model_changed()

    def current_model(self) -> Optional[str]:
        data = self.model_combo.currentData()
        return None if data in (None, LOAD_ONNX) else data

    def add_user_model(self, path: str) -> bool:
        """Add an ONNX file to the model list (validated); returns False with the problem shown."""
        info = self.model_info(path)
        if isinstance(info, str):
            self._show_problem("cannot use %s: %s" % (os.path.basename(path), info))
            return False
        models = [p for p in self.settings.get("user_models") if p != path] + [path]
        self.settings.set("user_models", models)
        self.settings.set("model", path)
        self.populate_models()
        return True

    def _model_changed(self, *_):
        if self._loading:
            return
        data = self.model_combo.currentData()
        if data == LOAD_ONNX:
            path, _ = QFileDialog.getOpenFileName(self, "Load an ONNX segmentation model", "",
                                                  "ONNX models (*.onnx)")
            if path and self.add_user_model(path):
                return
            self._loading = True
            idx = self.model_combo.findData(self.settings.get("model"))
            self.model_combo.setCurrentIndex(idx if idx >= 0 else 0)
            self._loading = False
            data = self.model_combo.currentData()
            if data == LOAD_ONNX:
                return
        if data:
            self.settings.set("model", data)
        self._mapping_model = None
        self._refresh_model_info()
        self._rebuild_mapping()
        self.schedule_validation()

    def model_info(self, model: Optional[str]):
        """ModelInfo of a model name/path (cached by file time), or an error string."""
        if not model:
            return "no model chosen"
        eng = _engine()
        try:
            path = eng.resolve_model(model)
        except eng.TailingsError as e:
            return str(e)
        try:
            mtime = os.path.getmtime(path)
        except OSError as e:
            return str(e)
        hit = self._info_cache.get(path)
        if hit and hit[0] == mtime:
            return hit[1]
        try:
            info = eng.read_info(path)
        except eng.TailingsError as e:
            info = str(e)
        except Exception as e:  # onnxruntime crashes on odd files
            info = "%s: %s" % (type(e).__name__, e)
        self._info_cache[path] = (mtime, info)
        return info

    def _refresh_model_info(self):
        info = self.model_info(self.current_model())
        if isinstance(info, str):
            self.model_label.setText("<span style='color:#c00'>%s</span>" % _html(info))
            self.deps_button.setVisible("onnxruntime" in info)
            return
        self.deps_button.setVisible(False)
        classes = " ".join("<span style='background:%s;color:%s'>&nbsp;%s&nbsp;</span>"
                           % (c.color, _contrast(c.color), _html(c.name)) for c in info.classes)
        self.model_label.setText(
            "inputs: %s<br>GSD %g m, tiles %d px (overlap %d), threshold %g, test-time augmentation %s, scales %s"
            "<br>classes: %s%s"
            % (", ".join(info.bands), info.gsd_m, info.tile_size, info.tile_overlap, info.threshold,
               "off" if info.tta == 1 else "%d passes" % info.tta,
               ", ".join("%g" % v for v in info.tta_scales), classes,
               ("<br><i>%s</i>" % _html(info.description)) if getattr(info, "description", "") else ""))

    # ------------------------------------------------------------------ layer, preset, mapping
    def layer(self) -> Optional[QgsRasterLayer]:
        lyr = self.layer_combo.currentLayer()
        return lyr if isinstance(lyr, QgsRasterLayer) else None

    def set_layer(self, layer):
        self.layer_combo.setLayer(layer)

    def _current_layer_changed(self, layer):
        if isinstance(layer, QgsRasterLayer) and layer.isValid():
            self.layer_combo.setLayer(layer)

    def _layer_changed(self, *_):
        lyr = self.layer()
        self._update_preset_label()
        if lyr is not None and not self.out_dir.filePath():
            try:
                self.out_dir_hint.setText("default: %s" % config.default_out_dir(config.layer_path(lyr)))
            except ValueError:
                self.out_dir_hint.setText("")
        elif not self.out_dir.filePath():
            self.out_dir_hint.setText("")
        self._rebuild_mapping()
        self.schedule_validation()

    def detected_preset(self) -> Optional[str]:
        lyr = self.layer()
        if lyr is None:
            return None
        try:
            return _engine().bands.detect_preset(config.band_descriptions(lyr), by_count=True)
        except Exception:
            return None

    def preset(self) -> Optional[str]:
        """The chosen preset, or the detected one when "Detect" is chosen."""
        return self.preset_combo.currentData() or self.detected_preset()

    def _update_preset_label(self):
        lyr = self.layer()
        if lyr is None:
            self.preset_label.setText("")
            return
        desc = config.band_descriptions(lyr)
        det = self.detected_preset()
        names = ", ".join("%d=%s" % (i + 1, d or "?") for i, d in enumerate(desc))
        if det:
            text = "detected: %s — bands %s" % (_engine().bands.PRESETS[det].label, names)
        else:
            text = "%d band%s (%s); no preset detected" % (len(desc), "" if len(desc) == 1 else "s", names)
        self.preset_label.setText(text)

    def _preset_changed(self, *_):
        if self._loading:
            return
        self.settings.set("preset", self.preset_combo.currentData() or "")
        self._mapping_model = None
        self._rebuild_mapping()
        self.schedule_validation()

    def _rebuild_mapping(self):
        """One row per model input with a band picker, pre-filled by name."""
        lyr = self.layer()
        info = self.model_info(self.current_model())
        while self.mapping_form.rowCount():
            self.mapping_form.removeRow(0)
        self._band_rows = []
        if lyr is None or isinstance(info, str):
            self.mapping_box.setEnabled(False)
            return
        self.mapping_box.setEnabled(True)
        bandlib = _engine().bands
        guess: List[int] = []
        try:
            m = bandlib.map_bands(info.bands, config.band_descriptions(lyr), self.preset_combo.currentData() or None)
            guess = list(m.source_bands)
        except Exception:
            guess = []
        for i, name in enumerate(info.bands):
            combo = QgsRasterBandComboBox()
            combo.setShowNotSetOption(True)
            combo.setLayer(lyr)
            combo.setBand(guess[i] if i < len(guess) else -1)
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
            combo.bandChanged.connect(self.schedule_validation)
            try:
                b = bandlib.band(name)
                label = "%s (%s)" % (name, b.common)
            except Exception:
                label = name
            self.mapping_form.addRow(label, combo)
            self._band_rows.append((name, combo))
        self._mapping_layer_id = lyr.id()
        self._mapping_model = self.current_model()

    def mapping(self) -> Dict[str, int]:
        """The band mapping in the panel: model band name -> 1-based raster band (set rows only)."""
        return {name: combo.currentBand() for name, combo in self._band_rows if combo.currentBand() > 0}

    def mapping_for(self, layer) -> Optional[Dict[str, int]]:
        """The panel's mapping when it was made for ``layer`` and the current model, else None."""
        if layer is None or layer.id() != self._mapping_layer_id or self._mapping_model != self.current_model():
            return None
        return self.mapping() or None

    # ------------------------------------------------------------------ extent, output
    def _extent_changed(self, *_):
        mode = self.extent_combo.currentData()
        self.extent_layer_combo.setEnabled(mode == config.EXTENT_SELECTION)
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
        if path:
            self.out_dir_hint.setText("")
        else:
            self._layer_changed()
        self.schedule_validation()

    # ------------------------------------------------------------------ validation
    def schedule_validation(self, *_):
        self._timer.start()

    def request(self):
        """The run request for the panel's choices; raises ValueError / TailingsError."""
        lyr = self.layer()
        if lyr is None:
            raise ValueError("choose a raster layer")
        model = self.current_model()
        if not model:
            raise ValueError("choose a model")
        canvas = self.iface.mapCanvas() if self.iface is not None else None
        return config.build_request(lyr, self.settings, canvas=canvas, mapping=self.mapping_for(lyr),
                                    extent_layer=self.extent_layer_combo.currentLayer(), model=model)

    def validate(self) -> bool:
        """Check the choices with the engine's ``plan``; show the problem or the plan's notes."""
        self._timer.stop()
        self.plan = None
        try:
            req = self.request()
            missing = [n for n, c in self._band_rows if c.currentBand() <= 0]
            if missing:
                raise ValueError("no raster band chosen for model input%s %s"
                                 % ("s" if len(missing) > 1 else "", ", ".join(missing)))
            problem = config.check_out_dir(req.out_dir)
            if problem:
                raise ValueError(problem)
            self.plan = plan_request(req, self.model_info(req.model))
        except Exception as e:
            self._show_problem(str(e))
            return False
        self.problem = None
        notes = list(getattr(self.plan, "notes", []) or [])
        txt = "Ready: %s" % _html(self.plan.mapping.as_text(self.plan.model.bands).replace("<-", "←"))
        if getattr(self.plan, "work_gsd_m", None):
            txt += "; working at %.1f m GSD" % self.plan.work_gsd_m
        if notes:
            txt += "<br>" + "<br>".join(_html(n) for n in notes)
        self.problem_label.setText("<span style='color:#2a7a2a'>%s</span>" % txt)
        self.run_button.setEnabled(True)
        return True

    def _show_problem(self, text: str):
        self.problem = text
        self.problem_label.setText("<span style='color:#c00'><b>Cannot run:</b> %s</span>" % _html(text))
        self.run_button.setEnabled(False)
        self.deps_button.setVisible("onnxruntime" in text)

    # ------------------------------------------------------------------ running
    def run(self):
        if not self.validate():
            if self.iface is not None:
                self.iface.messageBar().pushMessage("Tailings Mapper", "Cannot run: %s" % self.problem,
                                                    _level("Warning"), 8)
            return None
        req = self.request()
        if self.plugin is not None:
            return self.plugin.start_run(req)
        from .. import qgis_task
        task = qgis_task.start(req, self.iface.messageBar() if self.iface else None)
        self.track(task)
        return task

    def track(self, task):
        """Show a task's progress in the panel."""
        self._tasks.append(task)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status_label.setText("%s: queued" % task.request.source_name)
        task.progressChanged.connect(lambda v: self.progress.setValue(int(v)))
        task.statusChanged.connect(lambda m, t=task: self.status_label.setText(
            "%s: %s" % (t.request.source_name, m)))
        task.done.connect(lambda ok, outcome, t=task: self._task_done(t, ok, outcome))

    def _task_done(self, task, ok, outcome):
        if task in self._tasks:
            self._tasks.remove(task)
        self.status_label.setText("%s: %s" % (task.request.source_name, outcome))
        if ok:
            self.progress.setValue(100)
        self.cancel_button.setEnabled(bool(self._tasks))
        self.schedule_validation()

    def cancel(self):
        for t in list(self._tasks):
            t.cancel()

    def _install_deps(self):
        if self.plugin is not None:
            self.plugin.show_dependencies(force=True)

    def cleanup(self):
        self._timer.stop()
        try:
            if self.iface is not None:
                self.iface.currentLayerChanged.disconnect(self._current_layer_changed)
        except Exception:
            pass


def plan_request(req, info=None):
    """``inference.plan`` for a request; ``info`` (a cached ModelInfo) avoids loading the model again."""
    eng = _engine()
    device = getattr(req.opts, "device", "auto") or "auto"
    if device in ("cuda", "gpu"):
        # a GPU that onnxruntime cannot use is a problem to show now, not after the run
        from ..inference.runtime import choose_providers
        choose_providers(device)
    if info is not None and isinstance(info, str):
        info = None
    return eng.plan(req.input_path, req.model, req.opts, info=info)


def _choice_combo(choices, tooltip: str = "") -> QComboBox:
    """A combo box of (data, label) choices."""
    combo = QComboBox()
    for key, label in choices:
        combo.addItem(label, key)
    if tooltip:
        combo.setToolTip(tooltip)
    return combo


def _level(name):
    from qgis.core import Qgis
    return getattr(Qgis, name)


def _html(text: str) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def _contrast(colour: str) -> str:
    try:
        r, g, b = int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
    except (ValueError, IndexError):
        return "black"
    return "black" if (0.299 * r + 0.587 * g + 0.114 * b) > 140 else "white"
