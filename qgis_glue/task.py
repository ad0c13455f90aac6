"""The background task: one engine run (a plan's execution) in QGIS's task manager.

``run`` executes in a worker thread and only calls the engine; ``finished`` runs in
the main thread and adds the styled layers (or reports the error / cancellation).
"""
from __future__ import annotations

import traceback
from typing import Callable, List, Optional

from qgis.core import Qgis, QgsApplication, QgsProject, QgsTask
from qgis.PyQt.QtCore import QTimer, pyqtSignal

from ..inference import Cancelled, execute
from ..inference.output import present
from . import results
from .layer_plan import LayerPlan, keep_out_dir
from .log import log


class SegmentTask(QgsTask):
    """Executes ``run.plan`` with the engine; cancellable."""

    statusChanged = pyqtSignal(str)     # engine progress message (emitted from the worker thread)
    done = pyqtSignal(bool, str)        # (layers added, one-line outcome), main thread

    def __init__(self, run: LayerPlan, message_bar=None, add_layers: bool = True, layer_tree_view=None):
        super().__init__("Segment tailings: %s" % run.source_name, QgsTask.Flag.CanCancel)
        self.run_plan = run
        self.source_name = run.source_name
        self.message_bar = message_bar
        self.add_layers = add_layers
        self.layer_tree_view = layer_tree_view
        self.result = None
        self.error: Optional[str] = None
        self.details: Optional[str] = None
        self.cancelled = False
        self.status = ""
        self.layers: List = []
        self.group = None
        self.outcome = ""
        self.ok: Optional[bool] = None      # set when finished() has run

    # -- worker thread ------------------------------------------------------------------
    def _progress(self, fraction: float, message: str) -> None:
        self.setProgress(max(0.0, min(100.0, 100.0 * float(fraction))))
        if message and message != self.status:
            self.status = message
            self.statusChanged.emit(message)

    def run(self) -> bool:
        try:
            self.result = execute(self.run_plan.plan, progress=self._progress, cancel=self.isCanceled)
            return True
        except Cancelled:
            self.cancelled = True
            return False
        except Exception as e:  # (TailingsError: the user's input; anything else a bug, its traceback logged)
            self.error, self.details = present.failure(e), traceback.format_exc()
            return False

    # -- main thread ----------------------------------------------------------------------
    def finished(self, ok: bool) -> None:  # noqa: D401 (QgsTask API)
        """Add the results and say what the run found; whatever happens here, the panel is told
        (``done``), so that it never waits on a run that has ended."""
        self.outcome = "failed"
        self._pending = []
        try:
            ok = self._finish(ok)
        except Exception as e:  # a bug in showing the run: the run's files are there, the panel is told
            self.error, self.details = present.failure(e), traceback.format_exc()
            self.outcome = "the run ended but could not be shown: %s" % self.error
            log("%s: %s\n%s" % (self.source_name, self.outcome, self.details), Qgis.MessageLevel.Critical)
            ok = False
        finally:
            after_qgis_notice(self, lambda: self._announce(bool(ok)))

    def _announce(self, ok: bool) -> None:
        """The run's message to the bar, then the panel told (``done``)."""
        try:
            for args in self._pending:
                self._push_now(*args)
        finally:
            self._pending = []
            self.ok = ok
            self.done.emit(ok, self.outcome)

    def _finish(self, ok: bool) -> bool:
        name = self.source_name
        if ok and self.result is not None:
            try:
                self._add_results()
            except Exception as e:
                self.error = "the results could not be added to the project: %s" % e
                self.details = traceback.format_exc()
                ok = False
        if ok:
            res = self.result
            self.outcome = present.headline(res)
            msg = "%s: %s" % (name, self.outcome)
            levels = {present.WARNING: Qgis.MessageLevel.Warning, present.FOUND: Qgis.MessageLevel.Success}
            for line in present.run_lines(res):
                log("%s: %s" % (name, line), levels.get(line.kind, Qgis.MessageLevel.Info))
            if "fell back" in res.provider_reason:   # CUDA offered but not working: worth knowing
                log("%s: %s" % (name, res.provider_reason), Qgis.MessageLevel.Warning)
            if res.warnings:   # a result that should not be trusted as it is: said where it is seen
                self._push("Tailings Mapper", "%s — check: %s" % (msg, " ".join(res.warnings)), Qgis.MessageLevel.Warning, 0)
            else:
                self._push("Tailings Mapper", msg, Qgis.MessageLevel.Success, 0)
        elif self.cancelled or self.isCanceled():
            self.outcome = present.failure(Cancelled())
            log("%s: run cancelled, partial outputs removed" % name, Qgis.MessageLevel.Info)
            self._push("Tailings Mapper", "%s: %s" % (name, self.outcome), Qgis.MessageLevel.Info, 5)
        else:
            self.outcome = self.error or "failed"
            log("%s: %s\n%s" % (name, self.outcome, self.details or ""), Qgis.MessageLevel.Critical)
            self._push("Tailings Mapper", "%s: %s (details in the log panel, Tailings Mapper tab)"
                       % (name, self.outcome), Qgis.MessageLevel.Critical, 0)
        return ok

    def _add_results(self) -> None:
        res = self.result
        self.layers = results.make_layers(res, self.source_name)
        if self.add_layers:
            self.group = results.add_to_project(self.layers, results.group_name(self.source_name),
                                                QgsProject.instance())
            results.expand_in_view(self.layer_tree_view, self.group)

    def _push(self, title: str, text: str, level, duration: int) -> None:
        self._pending.append((title, text, level, duration))

    def _push_now(self, title: str, text: str, level, duration: int) -> None:
        if self.message_bar is None:
            return
        try:
            self.message_bar.pushMessage(title, text, level, duration)
        except RuntimeError as e:  # the message bar is gone (QGIS closing): the log keeps it
            log("%s (message bar unavailable: %s)" % (text, e), level)


def after_qgis_notice(task: QgsTask, then: Callable[[], None]) -> None:
    """Call ``then`` once QGIS has said its own word on the finished ``task``: QGIS answers the task
    manager's ``statusChanged`` (emitted right after ``finished()``) with a "Task complete" notice,
    in the message bar where the desktop shows no notifications; pushed after it, the plugin's
    message (its warnings in orange) stays on top instead of under it.  A task the manager does not
    know: at once."""
    mgr = QgsApplication.taskManager()
    tid = mgr.taskId(task)
    if tid < 0:
        then()
        return
    called = []

    def once(*_):
        if not called:
            called.append(True)
            then()

    def after(task_id, status):
        if task_id == tid:
            try:
                mgr.statusChanged.disconnect(after)
            except TypeError:
                pass
            once()
    mgr.statusChanged.connect(after)   # (connected after QGIS's own slot: called after it)
    QTimer.singleShot(0, once)         # never left waiting, should the manager stay silent


def start(run: LayerPlan, message_bar=None, on_done: Optional[Callable[[bool, str], None]] = None,
          layer_tree_view=None) -> SegmentTask:
    """Queue a task in QGIS's task manager and return it (keep a reference!)."""
    keep_out_dir(run.plan.out_dir)   # the project's first run into the default folder fixes it
    task = SegmentTask(run, message_bar, layer_tree_view=layer_tree_view)
    if on_done is not None:
        task.done.connect(on_done)
    QgsApplication.taskManager().addTask(task)
    return task
