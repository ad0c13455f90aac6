"""The "My models" dialog: every model with its classes, bands, date and score with what it was measured on; the
user's own can be renamed, exported (one file to share, card inside) and deleted; a shared file
can be imported.  Shipped models are listed, never changed."""
from __future__ import annotations

import os
from typing import Optional

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout, QInputDialog,
                                 QLabel, QMessageBox, QPushButton, QTableWidget, QTableWidgetItem, QTextBrowser,
                                 QVBoxLayout)

from ..inference import list_models
from ..inference.model import user_models
from ..inference.model.registry import card_path, user_dir

COLUMNS = ("Name", "Where", "Task", "Classes", "Bands", "Date", "Score (measured on)")
SCORES_NOTE = ("Scores are measured on different ground and are not comparable: the shipped model's on mining "
               "sites it never saw, your models' on blocks held back from the very scenes they learnt from (close "
               "to their training, so they look higher). Your model's card compares it with the model it started "
               "from.")


class ModelsDialog(QDialog):
    def __init__(self, parent=None, on_change=None):
        super().__init__(parent)
        self.on_change = on_change
        self.setWindowTitle("Tailings Mapper – my models")
        self.resize(900, 420)
        lay = QVBoxLayout(self)
        where = QLabel("Your models are in <code>%s</code> (each with its card)." % user_dir())
        where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(where)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.itemSelectionChanged.connect(self._selection)
        lay.addWidget(self.table)
        note = QLabel(SCORES_NOTE)
        note.setWordWrap(True)
        note.setStyleSheet("color: gray")
        lay.addWidget(note)
        row = QHBoxLayout()
        self.rename_button = QPushButton("Rename…")
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("One file to share with a colleague: the model with its card inside")
        self.delete_button = QPushButton("Delete")
        self.card_button = QPushButton("Model card…")
        self.import_button = QPushButton("Import…")
        for b, fn in ((self.rename_button, self.rename), (self.export_button, self.export),
                      (self.delete_button, self.delete), (self.card_button, self.show_card),
                      (self.import_button, self.import_file)):
            b.clicked.connect(lambda _=False, f=fn: f())
            row.addWidget(b)
        lay.addLayout(row)
        self.status = QLabel()
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.models = []
        self.refresh()

    def refresh(self) -> None:
        self.models = list_models()
        self.table.setRowCount(len(self.models))
        for r, m in enumerate(self.models):
            score = "%s — %s" % (m.score, m.measured_on) if m.score and m.measured_on else m.score
            cells = (m.name, "shipped" if m.shipped else "yours", m.task, ", ".join(m.classes),
                     ", ".join(m.bands), m.date, score or ("broken: %s" % m.error if m.error else "-"))
            tips = {0: m.path, 5: "trained on %s (its metadata)" % m.date if m.date_from == "training" else
                    "the date of its file (no training date in it)"}
            for c, text in enumerate(cells):
                it = QTableWidgetItem(text)
                it.setToolTip(tips.get(c, text))
                self.table.setItem(r, c, it)
        self.table.resizeColumnsToContents()
        self._selection()

    def selected(self):
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self.models[rows[0].row()] if rows else None

    def select(self, name: str) -> None:
        for r, m in enumerate(self.models):
            if m.name == name:
                self.table.selectRow(r)

    def _selection(self) -> None:
        m = self.selected()
        mine = m is not None and not m.shipped
        for b in (self.rename_button, self.delete_button):
            b.setEnabled(mine)
        self.export_button.setEnabled(m is not None and not m.error)
        self.card_button.setEnabled(m is not None and bool(card_path(m.path) or user_models.embedded_card(m.path)))

    def _done(self, text: str) -> None:
        self.status.setText(text)
        self.refresh()
        if self.on_change is not None:
            self.on_change()

    def _fail(self, e: Exception) -> None:
        self.status.setText("<span style='color:#c00'>%s</span>" % e)

    def rename(self, new_name: Optional[str] = None) -> Optional[str]:
        m = self.selected()
        if m is None or m.shipped:
            return None
        if new_name is None:
            new_name, ok = QInputDialog.getText(self, "Rename model", "New name:", text=m.name)
            if not ok:
                return None
        try:
            path = user_models.rename(m.path, new_name)
        except Exception as e:  # ModelError, OSError: shown, nothing changed
            self._fail(e)
            return None
        self._done("renamed %s to %s" % (m.name, new_name))
        self.select(new_name.strip())
        return path

    def export(self, dest: Optional[str] = None) -> Optional[str]:
        m = self.selected()
        if m is None:
            return None
        if dest is None:
            dest, _ = QFileDialog.getSaveFileName(self, "Export model", os.path.join(os.path.expanduser("~"),
                                                  m.name + ".onnx"), "ONNX models (*.onnx)")
            if not dest:
                return None
        try:
            out = user_models.export(m.path, dest)
        except Exception as e:  # ModelError, OSError
            self._fail(e)
            return None
        self.status.setText("exported %s to %s (its card inside)" % (m.name, out))
        return out

    def delete(self, confirm: bool = True) -> bool:
        m = self.selected()
        if m is None or m.shipped:
            return False
        if confirm and QMessageBox.question(self, "Delete model", "Delete %s and its card?\n%s" % (m.name, m.path)) \
                != QMessageBox.StandardButton.Yes:
            return False
        try:
            user_models.delete(m.path)
        except Exception as e:  # ModelError, OSError
            self._fail(e)
            return False
        self._done("deleted %s" % m.name)
        return True

    def import_file(self, path: Optional[str] = None) -> Optional[str]:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Import a model", "", "ONNX models (*.onnx)")
            if not path:
                return None
        try:
            out = user_models.import_model(path)
        except Exception as e:  # ModelError, OSError
            self._fail(e)
            return None
        self._done("imported %s" % os.path.basename(out))
        return out

    def show_card(self) -> Optional[QDialog]:
        m = self.selected()
        if m is None:
            return None
        p = card_path(m.path)
        text = open(p, encoding="utf-8").read() if p else user_models.embedded_card(m.path)
        if not text:
            return None
        dlg = QDialog(self)
        dlg.setWindowTitle("Model card: %s" % m.name)
        dlg.resize(720, 600)
        v = QVBoxLayout(dlg)
        view = QTextBrowser()
        if hasattr(view, "setMarkdown"):
            view.setMarkdown(text)
        else:
            view.setPlainText(text)
        v.addWidget(view)
        dlg.show()
        self._card = dlg
        return dlg
