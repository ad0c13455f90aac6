"""Engine results as QGIS layers in the project, and the panel's account of a run (``inference.output.present``'s words).

The styles are the engine's (``inference.output.styles``: saved with the outputs, a ``.qml`` beside each
GeoTIFF and the GeoPackage's ``layer_styles``), so a layer opened from the files later looks the
same as one added after a run.  Used by the background task (panel, toolbar action) and by the
Processing algorithm's post-processor: the same names, the same group, the same visibility.

Layers of a run: ``<source> polygons`` (shown: outlines with a light fill), ``<source> classes``
(hidden: its background is transparent when shown), ``<source> confidence (%)`` (hidden); in a
group ``<source> – tailings <date time>``.  Result layers carry the custom property
``tailings_mapper/result`` (its kind), so the panel never takes them for its input.
"""
from __future__ import annotations

import datetime
from typing import Dict, List, Optional, Sequence

from qgis.core import QgsLayerTreeGroup, QgsMapLayer, QgsProject, QgsRasterLayer, QgsReadWriteContext, QgsVectorLayer
from qgis.PyQt.QtXml import QDomDocument

from ..inference.output import styles
from ..inference.output import present
from .log import log

RESULT_PROPERTY = "tailings_mapper/result"
KINDS = ("tiles", "polygons", "classes", "confidence")        # top to bottom in the group
VISIBLE = {"polygons": True, "classes": False, "confidence": False, "tiles": False}
SHOWN_PROPERTY = "tailings_mapper/shown"   # a layer shown whatever its kind (the tiles of a doubtful run)


def layer_name(source_name: str, kind: str) -> str:
    return "%s %s" % (source_name, {"confidence": "confidence (%)", "tiles": "unreliable tiles"}.get(kind, kind))


def group_name(source_name: str, when: Optional[datetime.datetime] = None,
               project: Optional[QgsProject] = None) -> str:
    """``<source> – tailings <date time>``, with `` (2)``... when a group of that name exists."""
    when = when or datetime.datetime.now()
    base = "%s – tailings %s" % (source_name, when.strftime("%Y-%m-%d %H:%M:%S"))
    root = (project or QgsProject.instance()).layerTreeRoot()
    name, n = base, 2
    while root.findGroup(name) is not None:
        name, n = "%s (%d)" % (base, n), n + 1
    return name


def is_result(layer) -> bool:
    return layer is not None and bool(layer.customProperty(RESULT_PROPERTY))


def mark_result(layer, kind: str) -> None:
    layer.setCustomProperty(RESULT_PROPERTY, kind)


def apply_style(layer: QgsMapLayer, qml: str) -> None:
    """The engine's QML style on ``layer`` (when its files did not bring it)."""
    doc = QDomDocument()
    doc.setContent(qml)
    layer.importNamedStyle(doc)
    layer.triggerRepaint()


def engine_style(kind: str, classes, threshold: float = 1.5) -> str:
    return {"polygons": lambda: styles.polygons_qml(classes), "classes": lambda: styles.classes_qml(classes),
            "confidence": styles.confidence_qml, "tiles": lambda: styles.tiles_qml(threshold)}[kind]()


def _has_style(layer, kind: str) -> bool:
    if kind in ("polygons", "tiles"):
        want = "categorizedSymbol" if kind == "polygons" else "RuleRenderer"
        return layer.renderer() is not None and layer.renderer().type() == want
    return layer.renderer() is not None and layer.renderer().type() == ("paletted" if kind == "classes"
                                                                        else "singlebandgray")


def open_layer(path: str, kind: str, source_name: str, classes, gpkg_layer: Optional[str] = None):
    """A result file as a named, styled, marked layer; RuntimeError when QGIS cannot open it."""
    name = layer_name(source_name, kind)
    if kind in ("polygons", "tiles"):
        layer = QgsVectorLayer("%s|layername=%s" % (path, gpkg_layer) if gpkg_layer else path, name, "ogr")
    else:
        layer = QgsRasterLayer(path, name, "gdal")
    if not layer.isValid():
        raise RuntimeError("QGIS cannot open the %s output %s" % (kind, path))
    if not _has_style(layer, kind):   # the saved style is missing (a format without one): the engine's
        apply_style(layer, engine_style(kind, classes))
    mark_result(layer, kind)
    return layer


def make_layers(res, source_name: str) -> List:
    """The layers of an engine result, top first (see the module's description); the tiles layer
    is shown when some tiles are unlike the training data."""
    paths = {"polygons": res.polygons, "classes": res.class_raster, "confidence": res.confidence_raster,
             "tiles": res.polygons if res.tiles_layer else None}
    gpkg_layers = {"polygons": res.layer_name, "tiles": res.tiles_layer}
    layers = [open_layer(paths[k], k, source_name, res.model.classes, gpkg_layers.get(k)) for k in KINDS if paths[k]]
    for lyr in layers:
        if lyr.customProperty(RESULT_PROPERTY) == "tiles" and (res.reliability or {}).get("unreliable_tiles"):
            lyr.setCustomProperty(SHOWN_PROPERTY, True)
    return layers


def _visible(layer, kind: str) -> bool:
    return bool(layer.customProperty(SHOWN_PROPERTY)) or VISIBLE.get(kind, True)


def add_to_project(layers: Sequence, group: str, project: Optional[QgsProject] = None) -> QgsLayerTreeGroup:
    """Add ``layers`` (top first) into a new group at the top of the layer tree."""
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    # Filled before it is inserted, so that the layer tree view shows it expanded.
    grp = QgsLayerTreeGroup(group)
    grp.setExpanded(True)
    for lyr in layers:
        project.addMapLayer(lyr, False)
        node = grp.addLayer(lyr)
        kind = lyr.customProperty(RESULT_PROPERTY) or "polygons"
        node.setItemVisibilityChecked(_visible(lyr, kind))
        node.setExpanded(kind == "polygons")
    root.insertChildNode(0, grp)
    return grp


def move_into_group(layer, group: str, project: Optional[QgsProject] = None) -> None:
    """Put a layer that Processing added to the project into the run's group (created at the top
    when needed), in the kinds' order, shown or hidden by kind."""
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    node = root.findLayer(layer.id())
    grp = root.findGroup(group)
    if grp is None:
        grp = root.insertGroup(0, group)
        grp.setExpanded(True)
    kind = layer.customProperty(RESULT_PROPERTY) or "polygons"
    order = [KINDS.index(c.layer().customProperty(RESULT_PROPERTY) or "polygons")
             for c in grp.children() if hasattr(c, "layer") and c.layer() is not None]
    pos = sum(1 for o in order if o < KINDS.index(kind))
    new = grp.insertLayer(pos, layer)
    new.setItemVisibilityChecked(_visible(layer, kind))
    new.setExpanded(kind == "polygons")
    if node is not None and node.parent() is not None:
        node.parent().removeChildNode(node)


def expand_in_view(view, group) -> None:
    """Show a result group and its layers' legends expanded in the layer tree view
    (the view does not always follow the nodes' expanded state for inserted groups)."""
    if view is None or group is None:
        return
    try:
        to_index = view.node2index if hasattr(view, "node2index") else view.layerTreeModel().node2index
        nodes = [group] + [n for n in group.children() if n.isExpanded()]
        for node in nodes:
            view.setExpanded(to_index(node), True)
    except Exception as e:  # a cosmetic step: never fail a run for it
        log("could not expand the result group in the layer tree: %s" % e)


def findings_html(res) -> str:
    """A run's warnings (first: what not to trust), what it masked and how like the training data
    the scene is, and a link to its report; rich text for the panel."""
    from html import escape
    from qgis.PyQt.QtCore import QUrl
    warn = "".join("<p style='color:#b35900'><b>Check:</b> %s</p>" % escape(w) for w in res.warnings)
    lines = "<br>".join("<span style='color:#b35900'>%s</span>" % escape(str(line)) if line.kind == present.WARNING
                        else escape(str(line)) for line in present.findings(res))
    link = ("<br><a href='%s'>run report</a>" % QUrl.fromLocalFile(res.report).toString()) if res.report else ""
    return warn + "<span style='color:#555'>%s%s</span>" % (lines, link)


def stats_total(stats: Dict[int, Dict[str, object]]) -> int:
    return sum(int(s.get("count") or 0) for s in stats.values())
