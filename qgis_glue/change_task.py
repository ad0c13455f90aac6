"""Change maps in QGIS: layers as the change engine reads them, the engine's plan run in a
``QgsTask``, its transition raster and change polygons added to the project (styled) and its
report opened.

A polygon layer with unsaved edits is read as QGIS shows it: its features, with the metadata of
its file (its ground, date and classes), go to a GeoPackage of the task's own; the layer itself is
not changed.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import List, Optional

from osgeo import ogr
from qgis.core import (Qgis, QgsApplication, QgsLayerTreeGroup, QgsProject, QgsRasterLayer, QgsTask,
                       QgsVectorLayer)
from qgis.PyQt.QtCore import pyqtSignal

from ..inference import Cancelled, TailingsError
from ..inference import provenance
from ..inference.change import plan_change, run_change
from .fit_task import write_layer
from .layers import layer_path
from .log import log, push, unexpected


def _gpkg_and_layer(layer: QgsVectorLayer):
    parts = layer.source().split("|")
    name = next((p.split("=", 1)[1] for p in parts[1:] if p.startswith("layername=")), None)
    return parts[0], name


def result_path(layer, workdir: str) -> str:
    """What the change engine reads for a layer (see the module's text)."""
    if isinstance(layer, QgsRasterLayer):
        return layer_path(layer)
    if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        raise ValueError("%s is neither a class raster nor a polygon layer" % getattr(layer, "name", lambda: "?")())
    path, name = _gpkg_and_layer(layer)
    if not layer.isModified():
        return "%s|layername=%s" % (path, name) if name else path
    out = write_layer(layer, os.path.join(workdir, "%s_edited.gpkg" % (name or "layer")))
    src = ogr.Open(path)
    lyr = src.GetLayerByName(name) if name else src.GetLayer(0)
    md = dict(lyr.GetMetadata() or {}) if lyr is not None else {}
    src = lyr = None
    from ..inference.change.inputs import sibling_raster
    sib = sibling_raster(path, name or "")
    if sib:
        md[provenance.CLASSES_RASTER] = sib    # its no data and masked pixels, still beside the original
    ds = ogr.Open(out, 1)
    ds.GetLayer(0).SetMetadata(md)
    ds = None
    return "%s|layername=labels" % out


class ChangeTask(QgsTask):
    done = pyqtSignal(bool, str)

    def __init__(self, plan, message_bar=None, workdir: Optional[str] = None, add_layers: bool = True,
                 open_report: bool = True):
        super().__init__("Change map %s → %s" % (plan.years[0], plan.years[-1]), QgsTask.Flag.CanCancel)
        self.plan, self.message_bar, self.workdir = plan, message_bar, workdir
        self.add_layers, self.open_report = add_layers, open_report
        self.result = None
        self.error: Optional[str] = None
        self.details: Optional[str] = None
        self.layers: List = []
        self.outcome = ""
        self.ok: Optional[bool] = None

    def run(self) -> bool:
        try:
            self.result = run_change(self.plan, progress=lambda f, m: self.setProgress(100 * f), cancel=self.isCanceled)
            return True
        except Cancelled:
            return False
        except TailingsError as e:
            self.error = str(e)
            return False
        except Exception as e:  # a bug: the traceback goes to the log
            self.error, self.details = unexpected(e)
            return False

    def finished(self, ok: bool) -> None:  # noqa: D401 (QgsTask API)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if ok and self.result is not None:
            out = self.result.outputs
            s = self.result.summary
            self.outcome = "change %s → %s: %.1f ha compared; report %s" % (
                s["years"][0], s["years"][-1], s["compared_area_ha"], out["report"])
            try:
                if self.add_layers:
                    self._add(out)
                if self.open_report:
                    from qgis.PyQt.QtCore import QUrl
                    from qgis.PyQt.QtGui import QDesktopServices
                    QDesktopServices.openUrl(QUrl.fromLocalFile(out["report"]))
            except Exception as e:  # presentation must not lose the files
                log("the change layers could not be added: %s" % e, Qgis.MessageLevel.Warning)
            for w in self.result.warnings:
                log(w, Qgis.MessageLevel.Warning)
            log(self.outcome, Qgis.MessageLevel.Success)
            self._push(self.outcome, Qgis.MessageLevel.Warning if self.result.warnings else Qgis.MessageLevel.Success)
        else:
            self.outcome = self.error or ("cancelled" if self.isCanceled() else "failed")
            log("change map: %s\n%s" % (self.outcome, self.details or ""), Qgis.MessageLevel.Critical)
            self._push("change map: %s" % self.outcome, Qgis.MessageLevel.Critical)
        self.ok = bool(ok and self.result is not None)
        self.done.emit(self.ok, self.outcome)

    def _add(self, out) -> None:
        years = self.result.summary["years"]
        project = QgsProject.instance()
        grp = QgsLayerTreeGroup("Change %s → %s" % (years[0], years[-1]))
        poly_name = os.path.splitext(os.path.basename(out["polygons"]))[0]
        polys = QgsVectorLayer("%s|layername=%s" % (out["polygons"], poly_name), "change polygons %s → %s"
                               % tuple(years), "ogr")
        trans = QgsRasterLayer(out["transitions"], "change %s → %s" % tuple(years), "gdal")
        for lyr in (polys, trans):
            if lyr.isValid():
                lyr.setCustomProperty("tailings_mapper/result", "change")
                project.addMapLayer(lyr, False)
                grp.addLayer(lyr)
                self.layers.append(lyr)
        project.layerTreeRoot().insertChildNode(0, grp)

    def _push(self, text: str, level) -> None:
        push(self.message_bar, text, level)


def vector_file(layer: QgsVectorLayer, workdir: str) -> str:
    """A polygon layer as a file OGR opens (``path|layername=L``): its own, or its features written
    out when it has unsaved edits or is not a file."""
    path, name = _gpkg_and_layer(layer)
    if layer.providerType() == "ogr" and not layer.isModified() and os.path.isfile(path):
        return "%s|layername=%s" % (path, name) if name else path
    return "%s|layername=labels" % write_layer(layer, os.path.join(workdir, "facilities.gpkg"))


def start(layers, out_dir: str, opts, message_bar=None, open_report: bool = True,
          facilities: Optional[QgsVectorLayer] = None) -> ChangeTask:
    """Plan (errors raised here, before the task) and queue a change map of ``layers`` (and
    ``facilities``, a layer, when given: ``opts.facility_field`` names its id field)."""
    from dataclasses import replace
    work = tempfile.mkdtemp(prefix="tm-change-layers-")
    try:
        paths = [result_path(lyr, work) for lyr in layers]
        if facilities is not None:
            opts = replace(opts, facilities=vector_file(facilities, work))
        plan = plan_change(paths, opts, out_dir)
    except Exception:
        shutil.rmtree(work, ignore_errors=True)
        raise
    task = ChangeTask(plan, message_bar, work, open_report=open_report)
    QgsApplication.taskManager().addTask(task)
    return task
