"""The frame of a dialog that starts a background task: an explanation, a form, a progress bar,
a status line, a run button (and a cancel button when the task can be stopped half way)."""
from __future__ import annotations

from qgis.PyQt.QtWidgets import (QDialog, QDialogButtonBox, QFormLayout, QLabel, QProgressBar, QPushButton,
                                 QVBoxLayout)


class TaskDialog(QDialog):
    def __init__(self, title: str, intro: str, run_text: str, cancel_text: str = "", parent=None):
        super().__init__(parent)
        self.task = None
        self.setWindowTitle("Tailings Mapper – %s" % title)
        self.setMinimumWidth(560)
        self.layout_ = QVBoxLayout(self)
        label = QLabel(intro)
        label.setWordWrap(True)
        self.layout_.addWidget(label)
        self.form = QFormLayout()
        self.layout_.addLayout(self.form)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel()
        self.status.setWordWrap(True)
        buttons = QDialogButtonBox()
        self.run_button = QPushButton(run_text)
        buttons.addButton(self.run_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.cancel_button = None
        if cancel_text:
            self.cancel_button = QPushButton(cancel_text)
            self.cancel_button.setEnabled(False)
            self.cancel_button.clicked.connect(self.cancel)
            buttons.addButton(self.cancel_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(QDialogButtonBox.StandardButton.Close).clicked.connect(self.reject)
        self.run_button.clicked.connect(lambda: self.start())
        for w in (self.progress, self.status, buttons):
            self.layout_.addWidget(w)

    def start(self):   # the subclass's: make and start the task, then ``self.track(task)``
        raise NotImplementedError

    def problem(self, text: str) -> None:
        self.status.setText("<span style='color:#c00'>%s</span>" % text)

    def track(self, task, status: str = "starting…"):
        self.task = task
        task.progressChanged.connect(lambda v: self.progress.setValue(int(v)))
        task.done.connect(self._done)
        self.run_button.setEnabled(False)
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(True)
        self.status.setText(status)
        return task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _done(self, ok: bool, outcome: str) -> None:
        self.run_button.setEnabled(True)
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(False)
        self.progress.setValue(100 if ok else self.progress.value())
        self.status.setText("<span style='color:%s'>%s</span>" % ("#2a7a2a" if ok else "#c00", outcome))
