"""Dialog that explains missing Python packages and installs them (pip, plugin-owned folder)."""
from __future__ import annotations

import html

from qgis.PyQt.QtCore import Qt, QThread, pyqtSignal
from qgis.PyQt.QtWidgets import (QButtonGroup, QCheckBox, QDialog, QDialogButtonBox, QLabel, QPlainTextEdit,
                                 QProgressBar, QPushButton, QRadioButton, QVBoxLayout)

from ..qgis_glue import dep_resolve, deps


class _Installer(QThread):
    """Installs, then checks in a fresh interpreter what it installed (``problem``: the first failure)."""
    line = pyqtSignal(str)
    result = pyqtSignal(bool)

    def __init__(self, packages, target, parent=None, optional=()):
        super().__init__(parent)
        self.packages = packages
        self.optional = list(optional)   # deps.Requirement: each installed as it says (alone, its index)
        self.target = target
        self.problem = None
        self._cancel = False

    def run(self):
        cancel = lambda: self._cancel  # noqa: E731
        ok = not self.packages or deps.install(self.packages, self.target, log=self.line.emit, cancel=cancel)
        check = ["onnxruntime"] if self.packages else []
        for req in self.optional:
            if not ok:
                break
            if req is deps.TORCH:      # versions matter: resolved with pip, then checked
                ok = dep_resolve.install_training(self.target, log=self.line.emit, cancel=cancel)
                check += deps.TRAINING_CHECK
                continue
            kw = {"max_rounds": 1} if req.alone else {}
            if req.index_url:
                kw["index_url"] = req.index_url
            ok = deps.install([req.pip_name], self.target, log=self.line.emit, cancel=cancel, **kw)
            if not req.alone:
                check.append(req.module)
        if ok and check:
            self.line.emit("checking in a fresh Python: import %s" % ", ".join(check))
            self.problem = dep_resolve.verify(self.target, check)
            self.line.emit("check: %s" % (self.problem or "all import"))
        self.result.emit(ok)

    def stop(self):
        self._cancel = True


class DependencyDialog(QDialog):
    """Shows what is missing, lets the user pick CPU or GPU onnxruntime, installs with a log."""

    def __init__(self, missing, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Tailings Mapper – Python packages")
        self.setMinimumWidth(620)
        self.missing = missing
        self.installed = False
        lay = QVBoxLayout(self)
        target = deps.deps_dir()
        text = ("<p>Tailings Mapper needs Python packages that this QGIS does not have:</p><ul>%s</ul>"
                "<p>They can be installed now with pip into a folder the plugin owns:<br><code>%s</code><br>"
                "QGIS's own Python is not modified and no administrator rights are needed.</p>"
                % ("".join("<li><b>%s</b> – %s<br><small>%s</small></li>"
                           % (m.requirement.module, m.requirement.why, m.error) for m in missing) or
                   "<li>nothing (reinstall or switch CPU/GPU build)</li>", target))
        info = QLabel(text)
        info.setWordWrap(True)
        lay.addWidget(info)
        self.cpu = QRadioButton("CPU: onnxruntime (%s; works everywhere)" % deps.SIZE_CPU)
        self.gpu = QRadioButton("NVIDIA GPU: onnxruntime-gpu (%s)" % deps.SIZE_GPU)
        grp = QButtonGroup(self)
        grp.addButton(self.cpu)
        grp.addButton(self.gpu)
        has_gpu = deps.nvidia_driver_present()
        self.gpu.setEnabled(has_gpu)
        if not has_gpu:
            self.gpu.setToolTip("no NVIDIA driver found (nvidia-smi)")
        self.cpu.setChecked(True)
        lay.addWidget(self.cpu)
        lay.addWidget(self.gpu)
        missing = deps.optional_missing()
        self.extras = {}
        for req in deps.OPTIONAL:   # the optional extras that are not installed
            box = QCheckBox("Also: %s – %s" % (req.pip_name, req.why))
            box.setVisible(req in missing)
            lay.addWidget(box)
            self.extras[req.pip_name] = (req, box)
        self.csmask = self.extras[deps.CSMASK.pip_name][1]
        self.torch = self.extras[deps.TORCH.pip_name][1]
        self.manual = QLabel()
        self.manual.setWordWrap(True)
        self.manual.setTextInteractionFlags(
            self.manual.textInteractionFlags() | Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.manual)
        self.cpu.toggled.connect(self._show_manual)
        self._show_manual()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        lay.addWidget(self.progress)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMinimumHeight(180)
        lay.addWidget(self.log)
        self.status = QLabel()
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        self.buttons = QDialogButtonBox()
        self.install_button = QPushButton("Install")
        self.buttons.addButton(self.install_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.install_button.clicked.connect(self.start)
        self.close_button.clicked.connect(self.reject)
        lay.addWidget(self.buttons)
        self.worker = None

    def packages(self):
        """What the Install button installs with its requirements (onnxruntime, when missing or asked)."""
        needed = any(m.requirement.module == "onnxruntime" for m in self.missing) or not self.chosen_extras()
        return deps.packages_for(self.gpu.isChecked()) if needed else []

    def chosen_extras(self):
        return [req for req, box in self.extras.values() if not box.isHidden() and box.isChecked()]

    def _show_manual(self, *_):
        """The terminal command that installs exactly what the Install button would."""
        self.manual.setText("Or install by hand in %s (the same installation): <code>%s</code>"
                            % (deps.where_to_run(), deps.manual_command(self.gpu.isChecked())))

    def start(self):
        problem = deps.pip_available()
        if problem:
            self.status.setText("<span style='color:#c00'>%s</span>" % problem)
            return
        self.install_button.setEnabled(False)
        self.cpu.setEnabled(False)
        self.gpu.setEnabled(False)
        self.progress.setRange(0, 0)  # busy
        extras = self.chosen_extras()
        self.status.setText("Installing %s…" % ", ".join(self.packages() + [r.pip_name for r in extras]))
        self.worker = _Installer(self.packages(), deps.deps_dir(), self, optional=extras)
        self.worker.line.connect(self.log.appendPlainText)
        self.worker.result.connect(self._finished)
        self.worker.start()

    def _finished(self, ok):
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if ok else 0)
        still = deps.check()
        problem = self.worker.problem if self.worker is not None else None
        if ok and problem:
            self.status.setText("<span style='color:#c00'>Installed, but it does not work: %s</span>"
                                % html.escape(problem))
            self.install_button.setEnabled(True)
        elif ok and not still:
            self.installed = True
            self.status.setText("<span style='color:#2a7a2a'>Installed. Tailings Mapper is ready; "
                                "no restart needed.</span>")
        elif ok:
            self.status.setText("<span style='color:#c60'>Installed, but still not importable: %s. "
                                "Restart QGIS.</span>" % deps.missing_text(still))
        else:
            self.status.setText("<span style='color:#c00'>Installation failed; see the log above.</span>")
            self.install_button.setEnabled(True)
            self.cpu.setEnabled(True)
            self.gpu.setEnabled(deps.nvidia_driver_present())

    def reject(self):
        if self.worker is not None and self.worker.isRunning():
            self.worker.stop()
            self.worker.wait(10000)
        super().reject()
