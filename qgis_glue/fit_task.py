"""Training in QGIS's task manager: a ``FitRequest`` (what ``training.fit`` takes, with the layers
already written to files) run in a ``QgsTask`` with progress and Cancel.

Cancel during training keeps the best epoch so far (``training.fit``); the finished model is in
the user's model list, with its card, and the panel's model list is refreshed.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from typing import List, Optional

from qgis.core import (Qgis, QgsApplication, QgsCoordinateTransformContext, QgsProject, QgsTask,
                       QgsVectorFileWriter, QgsVectorLayer)
from qgis.PyQt.QtCore import pyqtSignal

from .log import log, push, unexpected
from .training_bridge import fit_module


@dataclass
class FitRequest:
    """What to train: the arguments of ``training.fit.fit``."""
    rasters: List[str]
    labels: str
    field_name: Optional[str] = None
    classes: Optional[str] = None
    aoi: Optional[str] = None
    init: str = "tailings"
    epochs: int = 10
    device: str = "auto"
    name: Optional[str] = None
    multilabel: bool = False
    corrections_of: Optional[str] = None   # the run whose polygons ``labels`` corrects (only changes count)
    review: bool = False                   # ``labels`` is a reviewed run's layer: its decisions only
    workdir: Optional[str] = field(default=None, repr=False)   # temporary files to remove afterwards

    def arguments(self) -> dict:
        d = asdict(self)
        d.pop("workdir")
        return d


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
            val = res.info.extra.get("validation_fit") or {}
            score = val.get("iou", val.get("miou"))
            self.outcome = "model %s is in your model list%s%s (%.0f s)" % (
                res.info.name, " (cancelled: the best epoch so far)" if res.cancelled else "",
                "; on the part held back: IoU %.2f" % score if score is not None else "", res.seconds)
            log("%s\n%s\ncard: %s" % (self.outcome, res.path, res.card), Qgis.MessageLevel.Success)
            for w in res.warnings:
                log(w, Qgis.MessageLevel.Warning)
            worse = (res.info.extra.get("compared") or {}).get("warning")
            if worse:   # orange, and it stays until read
                self.outcome = "%s — warning: %s" % (self.outcome, worse)
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
