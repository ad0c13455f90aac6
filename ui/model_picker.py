"""The panel's model picker: shipped and user models, the ONNX files the user loaded, "Load model…",
and a description of the chosen model (inputs, GSD, tiles, defaults, classes)."""
from __future__ import annotations

import os
from typing import Optional

from qgis.PyQt.QtCore import QObject, Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout, QLabel,
                                 QPushButton, QTextBrowser, QVBoxLayout)

from ..inference import ModelInfo, list_models
from ..inference.model.metadata import rgb
from ..inference.model.class_schemas import MINING10, definition, schema_of
from ..inference.model.user_models import embedded_card
from ..inference.model.registry import card_path, card_summary
from ..inference.model.opened import MODELS
from ..qgis_glue.layer_plan import choose_model
from ..qgis_glue.settings import Settings

LOAD_ONNX = "__load_onnx__"
NO_MINING10 = "__mining10__"   # the ten-class schema, listed even before a model of it exists
NO_MINING10_TEXT = ("No ten-class model of mining components is installed yet, and none could be trained from "
                    "public data. Train one from your own polygons (Raster > Tailings Mapper > Train a model from "
                    "polygons…, classes: mining components) or load an ONNX file (Load model…).")


class ModelPicker(QObject):
    """``combo``, ``refresh_button`` (in ``row``) and ``label``; ``changed`` when another model is chosen,
    ``problem(text)`` when a model cannot be used."""

    changed = pyqtSignal()
    problem = pyqtSignal(str)

    def __init__(self, settings: Settings, parent=None):
        super().__init__(parent)
        self.settings = settings
        self._loading = False
        self.row = QHBoxLayout()
        self.combo = QComboBox()
        self.combo.currentIndexChanged.connect(self._chosen)
        self.row.addWidget(self.combo, 1)
        self.refresh_button = QPushButton("↻")
        self.refresh_button.setToolTip("Look for models again (shipped and user models folder)")
        self.refresh_button.setMaximumWidth(30)
        self.refresh_button.clicked.connect(lambda: self.populate(refresh=True))
        self.row.addWidget(self.refresh_button)
        self.card_button = QPushButton("Model card…")
        self.card_button.setToolTip("What the model was trained on, its scores and its known limits")
        self.card_button.clicked.connect(self.show_card)
        self.row.addWidget(self.card_button)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.RichText)

    def populate(self, refresh: bool = False) -> None:
        """Shipped and user models, the ONNX files the user loaded, then "Load model…"."""
        if refresh:
            MODELS.clear()
        self._loading = True
        try:
            self.combo.clear()
            seen = set()
            for e in list_models(load=False):
                self._add(e.name, e.path, "%s%s" % (e.name, " (shipped)" if e.shipped else " (user)"))
                seen.add(os.path.abspath(e.path))
            for path in self.settings.get("user_models"):
                if os.path.abspath(path) not in seen and os.path.isfile(path):
                    self._add(path, path, os.path.basename(path))
                    seen.add(os.path.abspath(path))
            if not self._has_mining10():
                self.combo.addItem("mining components (ten classes): no model yet", NO_MINING10)
                self.combo.setItemData(self.combo.count() - 1, schema_tooltip(MINING10), Qt.ItemDataRole.ToolTipRole)
            self.combo.addItem("Load model…", LOAD_ONNX)
            idx = self.combo.findData(self.settings.get("model") or choose_model(self.settings))
            if idx < 0 and self.combo.count() > 1:
                idx = 0
            self.combo.setCurrentIndex(max(0, idx))
        finally:
            self._loading = False
        self._chosen()

    def _add(self, data: str, path: str, label: str) -> None:
        self.combo.addItem(label, data)
        self.combo.setItemData(self.combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)

    def _has_mining10(self) -> bool:
        for i in range(self.combo.count()):
            info = MODELS.info_or_error(self.combo.itemData(i))
            if isinstance(info, ModelInfo) and schema_of(info.classes) == "mining10":
                return True
        return False

    def current(self) -> Optional[str]:
        data = self.combo.currentData()
        return None if data in (None, LOAD_ONNX, NO_MINING10) else data

    def placeholder_problem(self) -> Optional[str]:
        """What to do when the ten-class entry without a model is chosen (else None)."""
        return NO_MINING10_TEXT if self.combo.currentData() == NO_MINING10 else None

    def info(self):
        """The chosen model's metadata, or why it cannot be used."""
        return self.placeholder_problem() or MODELS.info_or_error(self.current())

    def add_user_model(self, path: str) -> bool:
        """Add an ONNX file to the list (validated); False with the problem signalled."""
        info = MODELS.info_or_error(path)
        if isinstance(info, str):
            self.problem.emit("cannot use %s: %s" % (os.path.basename(path), info))
            return False
        models = [p for p in self.settings.get("user_models") if p != path] + [path]
        self.settings.set("user_models", models)
        self.settings.set("model", path)
        self.populate()
        return True

    def _chosen(self, *_):
        if self._loading:
            return
        data = self.combo.currentData()
        if data == LOAD_ONNX:
            path, _ = QFileDialog.getOpenFileName(
                self.combo, "Load a segmentation model", "",
                "Models (*.onnx *.json);;ONNX models (*.onnx);;STAC MLM items (*.json)")
            if path and self.add_user_model(path):
                return
            self._loading = True
            idx = self.combo.findData(self.settings.get("model"))
            self.combo.setCurrentIndex(idx if idx >= 0 else 0)
            self._loading = False
            data = self.combo.currentData()
            if data == LOAD_ONNX:
                return
        if data:
            self.settings.set("model", data)
        self.show_info()
        self.changed.emit()

    def card(self) -> Optional[str]:
        """The chosen model's card (markdown text), when it has one: beside it, else inside it."""
        info = self.info()
        if not isinstance(info, ModelInfo) or not info.path:
            return None
        path = card_path(info.path)
        if not path:
            return embedded_card(info.path)
        with open(path, encoding="utf-8") as fh:
            return fh.read()

    def show_info(self) -> None:
        info = self.info()
        card = self.card()
        self.card_button.setEnabled(card is not None)
        if not isinstance(info, ModelInfo):
            self.label.setText("<span style='color:#c00'>%s</span>" % html(info))
            return
        limits = card_summary(card) if card else None
        self.label.setText(describe(info) + ("<br><span style='color:#b35900'><b>Before you rely on it:</b> %s</span>"
                                             % html(limits) if limits else ""))

    def show_card(self) -> Optional[QDialog]:
        card = self.card()
        if card is None:
            return None
        dlg = QDialog(self.combo.window())
        dlg.setWindowTitle("Model card: %s" % self.info().name)
        dlg.resize(760, 640)
        lay = QVBoxLayout(dlg)
        view = QTextBrowser()
        view.setOpenExternalLinks(True)
        if hasattr(view, "setMarkdown"):   # Qt 5.14+
            view.setMarkdown(card)
        else:
            view.setPlainText(card)
        lay.addWidget(view)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(dlg.reject)
        lay.addWidget(buttons)
        dlg.setModal(False)
        dlg.show()
        self._card_dialog = dlg
        return dlg


def schema_tooltip(schema) -> str:
    return "<br>".join("<b>%s</b>: %s" % (html(c.name), html(c.definition)) for c in schema if c.id)


def describe(info: ModelInfo) -> str:
    """HTML: what the model reads, its defaults and its classes (as coloured chips; a schema class's
    definition shows when the pointer rests on it)."""
    classes = " ".join("<span style='background:%s;color:%s' title='%s'>&nbsp;%s&nbsp;</span>"
                       % (c.color, _contrast(c.color), html(definition(c.name)).replace("'", "&#39;"), html(c.name))
                       for c in info.classes)
    return ("inputs: %s<br>GSD %g m, tiles %d px (overlap %d), threshold %g, test-time augmentation %s, scales %s"
            "<br>classes: %s%s"
            % (", ".join(info.bands), info.gsd_m, info.tile_size, info.tile_overlap, info.threshold,
               "off" if info.tta == 1 else "%d passes" % info.tta,
               ", ".join("%g" % v for v in info.tta_scales), classes,
               ("<br><i>%s</i>" % html(info.description)) if info.description else ""))


def html(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _contrast(colour: str) -> str:
    r, g, b = rgb(colour)
    return "black" if (0.299 * r + 0.587 * g + 0.114 * b) > 140 else "white"
