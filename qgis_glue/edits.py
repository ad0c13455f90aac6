"""Improve the model from my edits: a result polygon layer the analyst corrected (false polygons
deleted, others reshaped, missed ones added) becomes a training request.

The layer's GeoPackage says what made it (``TM_MODEL_PATH``, ``TM_SOURCE``) and the ground its run
covered (``TM_AREA``, in the CRS ``TM_AREA_CRS`` names); the run's own map (its classes raster beside
the GeoPackage) is what the polygons as they are now are compared with: only what the analyst
deleted, reshaped or added counts (``training.corrections``), the detections left as they were are
neither confirmed nor rejected.  The polygons are read as QGIS shows them, unsaved
edits included, into a file of the task's own; the layer and the model are not changed: the
result is a new model in the user's list.
"""
from __future__ import annotations

import datetime
import os
import tempfile
from typing import Optional

from osgeo import ogr
from qgis.core import QgsVectorLayer

from ..inference import TailingsError, open_model
from ..inference import provenance
from ..inference.change.inputs import footprint_crs, sibling_raster
from . import review
from .fit_task import FitRequest, write_layer
from .results import RESULT_PROPERTY


def run_of(layer) -> dict:
    """What a result polygon layer says about its run: ``{model, source, area}`` (ValueError when
    it is not one)."""
    if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        raise ValueError("choose the polygon layer of a Tailings Mapper run")
    parts = layer.source().split("|")
    path = parts[0]
    name = next((p.split("=", 1)[1] for p in parts[1:] if p.startswith("layername=")), None)
    ds = ogr.Open(path) if path.lower().endswith(".gpkg") else None
    lyr = (ds.GetLayerByName(name) if name else ds.GetLayer(0)) if ds is not None else None
    made = provenance.read(lyr.GetMetadata() if lyr is not None else None)
    srs = lyr.GetSpatialRef().ExportToWkt() if lyr is not None and lyr.GetSpatialRef() else None
    if srs and made.area:   # TM_AREA's own CRS (the layer may have been saved in another one since)
        try:
            srs = footprint_crs(made, lyr, sibling_raster(path, lyr.GetName()), "%s (%s)" % (layer.name(), path))
        except TailingsError as e:
            raise ValueError(str(e)) from None
    lname = lyr.GetName() if lyr is not None else ""
    lyr = ds = None
    if not made.area or not made.source:
        if layer.customProperty(RESULT_PROPERTY) == "polygons":
            raise ValueError("%s was written by an older Tailings Mapper that did not record the ground its run "
                             "covered: run the model again and correct that result" % layer.name())
        raise ValueError("%s is not the polygon layer of a Tailings Mapper run (its GeoPackage does not say which "
                         "raster, model and ground it covers)" % layer.name())
    return {"model": made.model_path or made.model, "model_name": made.model,
            "map": sibling_raster(path, lname), "map_name": "the classes raster of %s" % lname,
            "source": made.source, "area": made.area, "srs": srs}


def _model_of(layer):
    """``(run, the model's info)`` of a result layer whose raster and model are still there."""
    run = run_of(layer)
    if not os.path.exists(run["source"]):
        raise ValueError("the raster of this run is not there any more: %s" % run["source"])
    model = run["model"]
    try:
        info = open_model(model).info
    except Exception as e:  # the model file moved or broke
        raise ValueError("the model of this run (%s) cannot be opened: %s" % (model, e)) from None
    return run, info


def improvement(layer, epochs: int = 10, device: str = "auto", name: Optional[str] = None) -> FitRequest:
    """The training request that improves the layer's model from its polygons as they are now."""
    run, info = _model_of(layer)
    if not run.get("map"):
        raise ValueError("the run's own map (%s) is not beside its GeoPackage any more: your corrections cannot be "
                         "told from the detections you left as they were" % run.get("map_name"))
    work = tempfile.mkdtemp(prefix="tm-edits-")
    labels = write_layer(layer, os.path.join(work, "labels.gpkg"))
    stem = "%s-improved-%s" % (info.name, datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    return FitRequest(rasters=[run["source"]], labels=labels, field_name=None if info.task == "binary" else "class_name",
                      corrections_of=run["map"], init=run["model"], epochs=epochs, device=device, name=name or stem,
                      workdir=work)


def from_review(layer, epochs: int = 10, device: str = "auto", name: Optional[str] = None) -> FitRequest:
    """The training request that improves the layer's model from the analyst's review of it
    (``qgis_glue.review``): accepted regions are their class, rejected ones background, the rest
    ignored (``training.review``).  The layer is read as QGIS shows it, unsaved decisions and
    reshapes included."""
    run, info = _model_of(layer)
    t = review.tally(layer)
    if layer.fields().indexOf(review.FIELD) < 0 or not (t[review.ACCEPTED] or t[review.REJECTED]):
        raise ValueError("no region of %s is accepted or rejected yet: review its regions first (\"Review "
                         "detections\")" % layer.name())
    work = tempfile.mkdtemp(prefix="tm-review-")
    labels = write_layer(layer, os.path.join(work, "review.gpkg"))
    stem = "%s-reviewed-%s" % (info.name, datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    return FitRequest(rasters=[run["source"]], labels=labels, review=True, init=run["model"], epochs=epochs,
                      device=device, name=name or stem, workdir=work)
