"""The review queue window: "Review detections" in the panel steps through a run's regions
(``qgis_glue.review``), each zoomed over the image; keys accept (A), reject (R), skip (S or
space), go back (B or Backspace); the progress shows; "Improve the model from my review" trains
from exactly these decisions.

The window stays open beside the map (not modal): reshaping a region is QGIS's own editing, on the
region the queue selected.
"""
from __future__ import annotations

from qgis.core import Qgis
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QDialog, QGridLayout, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from ..qgis_glue import review as R

KEYS = {Qt.Key.Key_A: "accept", Qt.Key.Key_R: "reject", Qt.Key.Key_S: "skip", Qt.Key.Key_Space: "skip",
        Qt.Key.Key_B: "back", Qt.Key.Key_Backspace: "back"}


class ReviewDialog(QDialog):
    """One layer's review queue; ``plugin`` trains from it (``improve_from_edits(review=True)``)."""

    def __init__(self, layer, iface=None, plugin=None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Review detections: %s" % layer.name())
        self.setObjectName("TailingsMapperReview")
        self.iface, self.plugin = iface, plugin
        self.review = R.Review(layer, iface.mapCanvas() if iface is not None else None)
        lay = QVBoxLayout(self)
        self.region_label = QLabel()
        self.region_label.setWordWrap(True)
        self.progress_label = QLabel()
        lay.addWidget(self.region_label)
        lay.addWidget(self.progress_label)
        grid = QGridLayout()
        self.buttons = {}
        for k, (name, text) in enumerate((("accept", "Accept (A)"), ("reject", "Reject (R)"),
                                          ("skip", "Skip (S, space)"), ("back", "Back (B)"))):
            b = QPushButton(text)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)   # space skips, it never clicks a button
            b.clicked.connect(lambda _=False, n=name: self.act(n))
            grid.addWidget(b, k // 2, k % 2)
            self.buttons[name] = b
        lay.addLayout(grid)
        hint = QLabel("Decisions are edits of the layer: Undo (Ctrl+Z) takes one back, Save Layer Edits keeps "
                      "them. Reshape a region with QGIS's own editing tools. Rejected regions leave the map, not "
                      "the layer (tick \"rejected in review\" in its legend to see them).")
        hint.setWordWrap(True)
        lay.addWidget(hint)
        row = QHBoxLayout()
        self.improve_button = QPushButton("Improve the model from my review")
        self.improve_button.setToolTip("Train a new model: accepted regions as tailings, rejected ones as "
                                       "background, unreviewed ones ignored")
        self.improve_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.improve_button.clicked.connect(self.improve)
        close = QPushButton("Close")
        close.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        close.clicked.connect(self.close)
        row.addWidget(self.improve_button)
        row.addWidget(close)
        lay.addLayout(row)
        self.setMinimumWidth(340)
        self.refresh()

    @property
    def layer(self):
        return self.review.layer

    def act(self, name: str) -> None:
        try:
            getattr(self.review, name)()
        except ValueError as e:   # the layer cannot be edited
            self._message(str(e), Qgis.MessageLevel.Warning)
        self.refresh()

    def keyPressEvent(self, event):  # noqa: N802 (Qt API)
        name = KEYS.get(event.key()) if not event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier else None
        if name is None:
            super().keyPressEvent(event)
            return
        self.act(name)

    def refresh(self) -> None:
        self.region_label.setText(self.review.describe())
        self.progress_label.setText(R.progress_text(self.layer))
        for name in ("accept", "reject", "skip"):
            self.buttons[name].setEnabled(not self.review.done())
        self.buttons["back"].setEnabled(self.review.pos > 0)

    def improve(self):
        if self.plugin is None:
            return None
        return self.plugin.improve_from_edits(layer=self.layer, review=True)

    def _message(self, text: str, level) -> None:
        if self.iface is not None:
            self.iface.messageBar().pushMessage("Tailings Mapper", text, level, 8)


def show(dock):
    """Open (or bring back) the review queue of the active result layer, else of the panel's last
    run; a message when there is none."""
    last = dock._last.layers if getattr(dock, "_last", None) is not None else []
    layer = R.polygon_layer(dock.iface.activeLayer() if dock.iface is not None else None, last)
    if layer is None:
        if dock.iface is not None:
            dock.iface.messageBar().pushMessage("Tailings Mapper", "Nothing to review: run the model first, or select "
                                                "the polygon layer of a run", Qgis.MessageLevel.Info, 8)
        return None
    old = getattr(dock, "review_dialog", None)
    if old is not None and old.layer is layer:
        old.review.show()
        old.refresh()
    else:
        if old is not None:
            old.close()
            old.deleteLater()
        try:
            old = ReviewDialog(layer, dock.iface, dock.plugin, dock)
        except ValueError as e:
            dock.iface.messageBar().pushMessage("Tailings Mapper", "Cannot review %s: %s" % (layer.name(), e),
                                                Qgis.MessageLevel.Warning, 10)
            return None
        dock.review_dialog = old
    old.show()
    old.raise_()
    return old
