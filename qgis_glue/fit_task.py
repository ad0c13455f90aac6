"""Training in QGIS's task manager: a ``FitRequest`` (what ``training.fit`` takes, with the layers
already written to files) run in a ``QgsTask`` with progress and Cancel.

Cancel during training keeps the best epoch so far (``training.fit``); the finished model is in
the user's model list, with its card, and the panel's model list is refreshed.
"""
from __future__ import annotations

import os
import shutil
from typing import Optional

from qgis.core import (Qgis, QgsApplication, QgsCoordinateTransformContext, QgsProject, QgsTask,
                       QgsVectorFileWriter, QgsVectorLayer)
from qgis.PyQt.QtCore import pyqtSignal

from ..training.fit_options import BY_NAME as FIT, values
from ..training.fit_present import lines, outcome, worse
from .log import log, push, unexpected
from .training_bridge import fit_module


class FitRequest:
    """What to train: ``training.fit.fit``'s arguments by their names in training's option table
    (``training.fit_options``), checked there; the ones not given take the table's defaults.
    ``workdir``: temporary files to remove afterwards."""

    def __init__(self, workdir: Optional[str] = None, **arguments):
        unknown = sorted(set(arguments) - set(FIT))
        if unknown:
            raise TypeError("not training options: %s" % ", ".join(unknown))
        self.workdir = workdir
        self._arguments = values(arguments)

    def __getattr__(self, name):
        if name.startswith("_") or name not in FIT:
            raise AttributeError(name)
        return self._arguments[name]

    def arguments(self) -> dict:
        return dict(self._arguments)


def write_layer(layer: QgsVectorLayer, path: str, selected_only: bool = False) -> str:
    """A vector layer's features as QGIS shows them (unsaved edits included) in a GeoPackage: what
    training reads.  The layer itself is not changed."""
    opts = QgsVectorFileWriter.SaveVectorOptions()
    opts.driverName = "GPKG"
    opts.layerName = "labels"
    opts.onlySelectedFeatures = selected_only
    ctx = QgsProject.instance().transformContext() if QgsProject.instance() else QgsCoordinateTransformContext()
    res = QgsVectorFileWriter.writeAsVectorFormatV2(layer, path, ctx, opts)
    err = res[0] if isinstance(res, tuple) else res
    if err != QgsVectorFileWriter.WriterError.NoError:
        raise RuntimeError("cannot write %s for training: %s" % (layer.name(), res[1] if isinstance(res, tuple) else err))
    return path


class FitTask(QgsTask):
    progressText = pyqtSignal(str)     # the trainer's messages (worker thread)
    done = pyqtSignal(bool, str)       # (a model was written, outcome), main thread

    def __init__(self, request: FitRequest, message_bar=None, on_model=None):
        super().__init__("Train a model: %s" % (request.name or os.path.basename(request.rasters[0])),
                         QgsTask.Flag.CanCancel)
        self.request, self.message_bar, self.on_model = request, message_bar, on_model
        self.result = None
        self.error: Optional[str] = None
        self.details: Optional[str] = None
        self.outcome = ""
        self.ok: Optional[bool] = None

    def _progress(self, fraction: float, message: str) -> None:
        self.setProgress(max(0.0, min(100.0, 100.0 * fraction)))
        self.progressText.emit(message)

    def run(self) -> bool:
        try:
            fitmod = fit_module()
        except RuntimeError as e:
            self.error = str(e)
            return False
        try:
            self.result = fitmod.fit(progress=self._progress, cancel=self.isCanceled,
                                     log=lambda *a: None, **self.request.arguments())
            return True
        except fitmod.Cancelled as e:
            self.error = str(e)
            return False
        except (fitmod.TailingsError, ValueError) as e:
            self.error = str(e)
            return False
        except Exception as e:  # a bug: the traceback goes to the log
            self.error, self.details = unexpected(e)
            return False

    def finished(self, ok: bool) -> None:  # noqa: D401 (QgsTask API)
        if self.request.workdir:
            shutil.rmtree(self.request.workdir, ignore_errors=True)
        res = self.result
        if ok and res is not None:
            self.outcome = outcome(res)
            for line in lines(res):
                log(line, Qgis.MessageLevel.Warning if line.startswith("warning: ") else Qgis.MessageLevel.Success)
            if worse(res):   # orange, and it stays until read
                push(self.message_bar, self.outcome, Qgis.MessageLevel.Warning, keep=True)
            else:
                self._push(self.outcome, Qgis.MessageLevel.Success)
            if self.on_model is not None:
                self.on_model(res)
        else:
            self.outcome = self.error or ("cancelled" if self.isCanceled() else "failed")
            log("training: %s\n%s" % (self.outcome, self.details or ""), Qgis.MessageLevel.Warning if self.isCanceled()
                else Qgis.MessageLevel.Critical)
            self._push("training: %s" % self.outcome, Qgis.MessageLevel.Info if self.isCanceled() else Qgis.MessageLevel.Critical)
        self.ok = bool(ok and res is not None)
        self.done.emit(self.ok, self.outcome)

    def _push(self, text: str, level) -> None:
        push(self.message_bar, text, level)


def start(request: FitRequest, message_bar=None, on_model=None) -> FitTask:
    task = FitTask(request, message_bar, on_model)
    QgsApplication.taskManager().addTask(task)
    return task
