"""The plan of a run on a QGIS raster layer, from the user's settings.

The panel's checks, its "Segment tailings" button and the toolbar action all come here: one
function turns a layer, the stored settings and the panel's band mapping and extent into an
engine plan (``inference.plan``), which the task then executes.  Models come from the engine's
opened models (``inference.model.opened.MODELS``), so that checking each edit reads no file
again and a run reuses the network session of the previous one.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, replace
from typing import Dict, Optional, Union

from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QStandardPaths

from ..inference import Model, Plan, list_models, plan
from ..inference.model.opened import MODELS
from ..inference.model import bands as bandlib
from .layers import canvas_extent_in, layer_path, product_name, selection_area_in
from .settings import EXTENT_CANVAS, EXTENT_SELECTION, Settings

DEFAULT_MODEL = "tailings"


@dataclass(frozen=True)
class LayerPlan:
    """A plan and the layer it was made for (the task names its results after the layer)."""
    plan: Plan
    layer_id: str
    source_name: str




def choose_model(settings: Settings) -> str:
    """The stored model, else the shipped default (``tailings``), else the first one found."""
    m = settings.get("model")
    if m:
        return m
    entries = list_models(load=False)
    names = [e.name for e in entries]
    if DEFAULT_MODEL in names:
        return DEFAULT_MODEL
    shipped = [e.name for e in entries if e.shipped]
    return (shipped or names or [DEFAULT_MODEL])[0]


OUT_FOLDER = "Tailings Mapper"
PROJECT_SCOPE, PROJECT_KEY = "TailingsMapper", "out_dir"   # the project's own output folder, once fixed


def default_out_dir(project: Optional[QgsProject] = None) -> str:
    """The project's output folder when a run fixed it (:func:`keep_out_dir`: one analysis, one
    folder, whether the project is saved before or after); else a ``Tailings Mapper`` folder beside
    the saved project (.qgz), else in the user's Documents: never inside the data's own folder
    (often a read-only share, or one the user keeps clean)."""
    project = project or QgsProject.instance()
    kept = project_out_dir(project)
    if kept:
        return kept
    home = project.homePath() if project.fileName() else ""
    if home and os.access(home, os.W_OK):
        return os.path.join(home, OUT_FOLDER)
    docs = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation) or os.path.expanduser("~")
    return os.path.join(docs, OUT_FOLDER)


def project_out_dir(project: Optional[QgsProject] = None) -> str:
    """The output folder stored in the project by its first run ("" when none is)."""
    value, ok = (project or QgsProject.instance()).readEntry(PROJECT_SCOPE, PROJECT_KEY, "")
    return value if ok and value else ""


def keep_out_dir(out_dir: Optional[str], project: Optional[QgsProject] = None) -> bool:
    """At a project's first run into the default folder, store that folder in the project, so that
    saving the project later (which moves the default beside it) does not split the analysis."""
    project = project or QgsProject.instance()
    if not out_dir or project_out_dir(project) or os.path.abspath(out_dir) != os.path.abspath(default_out_dir(project)):
        return False
    return project.writeEntry(PROJECT_SCOPE, PROJECT_KEY, os.path.abspath(out_dir))


def run_prefix(input_path: str, when: Optional[datetime.datetime] = None) -> str:
    stem = os.path.splitext(os.path.basename(os.path.normpath(input_path)))[0] or "raster"
    when = when or datetime.datetime.now()
    return "%s_%s" % (stem, when.strftime("%Y%m%d-%H%M%S"))


def plan_for_layer(layer: QgsRasterLayer, settings: Optional[Settings] = None, canvas=None,
                   mapping: Optional[Dict[str, int]] = None, extent_layer=None,
                   model: Union[str, Model, None] = None, out_dir: Optional[str] = None,
                   date: Optional[str] = None) -> LayerPlan:
    """The plan for ``layer`` with the stored settings (and the panel's band mapping when given).

    Raises ValueError for a choice the panel must fix (no layer, no selection...) and
    :class:`~inference.TailingsError` for what the engine refuses.
    """
    settings = settings or Settings()
    path = layer_path(layer)
    mode = settings.get("extent_mode")
    extent = aoi = None
    if mode == EXTENT_CANVAS:
        if canvas is None:
            raise ValueError("no map view to take the extent from")
        extent = canvas_extent_in(layer, canvas)
    elif mode == EXTENT_SELECTION:
        if extent_layer is None:
            extent_layer = QgsProject.instance().mapLayer(settings.get("extent_layer"))
        extent, aoi = selection_area_in(layer, extent_layer)
    opts = replace(_run_options(settings, path, date), bands=dict(mapping) if mapping else None, extent=extent, aoi=aoi)
    p = _plan(path, settings, opts, model, out_dir)
    if mapping and not opts.preset:   # the panel's pickers pre-filled with a guess: still a guess
        said = set(p.warnings)
        guessed = [w for w in bandlib.guess_warnings(p.model.info.bands, p.raster.descriptions, p.mapping.source_bands)
                   if w not in said]
        p = replace(p, warnings=tuple(guessed) + p.warnings)
    return LayerPlan(p, layer.id(), layer.name())


def plan_for_product(path: str, settings: Optional[Settings] = None, model: Union[str, Model, None] = None,
                     out_dir: Optional[str] = None, date: Optional[str] = None) -> LayerPlan:
    """The plan for a product given by its path (a Sentinel-2 SAFE folder or zip, a folder of band
    files), no layer: the whole product, its bands found by their names."""
    settings = settings or Settings()
    if settings.get("extent_mode") in (EXTENT_CANVAS, EXTENT_SELECTION):
        raise ValueError("a product is segmented whole: choose the extent \"Whole layer\", or add it to the map "
                         "as a layer to segment a part of it")
    return LayerPlan(_plan(path, settings, _run_options(settings, path, date), model, out_dir), "",
                     product_name(path))


def _run_options(settings: Settings, path: str, date: Optional[str]):
    return replace(settings.options(), polygons=True, overwrite=False, unique_names=True, prefix=run_prefix(path),
                   date=date or None,   # (None: the product's own date, when it has one)
                   # leave a core to QGIS so that the map and the UI stay responsive
                   threads=max(1, (os.cpu_count() or 2) - 1))


def _plan(path: str, settings: Settings, opts, model, out_dir: Optional[str]) -> Plan:
    if isinstance(model, str) or model is None:
        model = MODELS.get(model or choose_model(settings))
    return plan(path, model, opts, out_dir or settings.get("out_dir") or default_out_dir())
