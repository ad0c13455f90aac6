"""Engine results as styled QGIS layers, and their summary text.

Used by the background task (dock panel / toolbar action) and by the Processing
algorithm's post-processors.  Classes are the engine's ``ClassInfo`` (id, name, colour,
background: no polygons, drawn transparent).
"""
from __future__ import annotations

import datetime
from typing import Dict, Iterable, List, Optional, Sequence

from qgis.core import (QgsCategorizedSymbolRenderer, QgsFillSymbol, QgsLayerTreeGroup, QgsPalettedRasterRenderer,
                       QgsProject, QgsRasterLayer, QgsRendererCategory, QgsVectorLayer)
from qgis.PyQt.QtGui import QColor

from .log import log


def style_class_raster(layer: QgsRasterLayer, classes) -> None:
    """Paletted renderer with the model's colours and class names (the legend);
    background classes are transparent so the imagery shows through."""
    items = []
    for c in classes:
        col = QColor(c.color)
        if c.is_background:
            col.setAlpha(0)
        items.append(QgsPalettedRasterRenderer.Class(c.id, col, c.name))
    renderer = QgsPalettedRasterRenderer(layer.dataProvider(), 1, items)
    layer.setRenderer(renderer)
    layer.setOpacity(0.8)
    layer.triggerRepaint()


def style_polygons(layer: QgsVectorLayer, classes, field: str = "class_id") -> None:
    """Categorized symbology on ``class_id`` with the class names as labels."""
    cats = []
    for c in classes:
        if c.is_background:
            continue
        fill = QColor(c.color)
        fill.setAlpha(90)
        sym = QgsFillSymbol.createSimple({
            "color": "%d,%d,%d,%d" % (fill.red(), fill.green(), fill.blue(), fill.alpha()),
            "outline_color": QColor(c.color).name(), "outline_width": "0.6", "outline_width_unit": "MM",
        })
        cats.append(QgsRendererCategory(c.id, sym, c.name))
    renderer = QgsCategorizedSymbolRenderer(field, cats)
    layer.setRenderer(renderer)
    # readable field aliases in the attribute table and forms
    aliases = {"class_id": "Class id", "class_name": "Class", "area_m2": "Area (m²)", "area_ha": "Area (ha)",
               "perimeter_m": "Perimeter (m)", "mean_confidence": "Mean confidence (%)", "source": "Source image",
               "model": "Model", "run_time": "Run time"}
    fields = layer.fields()
    for name, alias in aliases.items():
        idx = fields.indexOf(name)
        if idx >= 0:
            layer.setFieldAlias(idx, alias)
    layer.triggerRepaint()


def group_name(source_name: str, when: Optional[datetime.datetime] = None) -> str:
    when = when or datetime.datetime.now()
    return "%s – tailings %s" % (source_name, when.strftime("%Y-%m-%d %H:%M"))


def polygon_uri(path: str, layer_name: Optional[str]) -> str:
    return "%s|layername=%s" % (path, layer_name) if layer_name else path


def make_layers(res, source_name: str) -> List:
    """The (styled, valid) QGIS layers of an engine result: class raster, polygons,
    confidence raster (hidden by default).  Raises RuntimeError if one does not load."""
    classes = res.model.classes
    layers = []
    cls = QgsRasterLayer(res.class_raster, "%s classes" % source_name, "gdal")
    if not cls.isValid():
        raise RuntimeError("QGIS cannot open the class raster %s" % res.class_raster)
    style_class_raster(cls, classes)
    layers.append(cls)
    if res.polygons:
        poly = QgsVectorLayer(polygon_uri(res.polygons, res.layer_name),
                              "%s polygons" % source_name, "ogr")
        if not poly.isValid():
            raise RuntimeError("QGIS cannot open the polygon layer %s" % res.polygons)
        style_polygons(poly, classes)
        layers.insert(0, poly)
    if res.confidence_raster:
        conf = QgsRasterLayer(res.confidence_raster, "%s confidence (%%)" % source_name, "gdal")
        if conf.isValid():
            layers.append(conf)
    return layers


def add_to_project(layers: Sequence, group: str, project: Optional[QgsProject] = None,
                   hidden: Iterable[str] = ()) -> QgsLayerTreeGroup:
    """Add ``layers`` (top first) into a new group at the top of the layer tree."""
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    # Filled before it is inserted, so that the layer tree view shows it expanded.
    grp = QgsLayerTreeGroup(group)
    grp.setExpanded(True)
    hidden = set(hidden)
    for lyr in layers:
        project.addMapLayer(lyr, False)
        node = grp.addLayer(lyr)
        conf = lyr.id() in hidden or lyr.name().endswith("confidence (%)")
        node.setExpanded(not conf)
        if conf:
            node.setItemVisibilityChecked(False)
    root.insertChildNode(0, grp)
    return grp


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


def summary(res, device_label: Optional[str] = None) -> str:
    """One line: what was found per class (count and total area), how long, which device."""
    parts = []
    for cid in sorted(res.stats):
        st = res.stats[cid]
        name = st.get("name", str(cid))
        count = st.get("count")
        area = float(st.get("area_ha") or 0.0)
        if count is None:
            parts.append("%s: %.1f ha" % (name, area))
        else:
            parts.append("%d %s polygon%s, %.1f ha" % (count, name, "" if count == 1 else "s", area))
    found = "; ".join(parts) if parts else "nothing found"
    dev = device_label or ("GPU (CUDA)" if res.device == "cuda" else "CPU")
    return "%s — %.1f s on %s" % (found, float(res.seconds), dev)


def stats_total(stats: Dict[int, Dict[str, object]]) -> int:
    return sum(int(s.get("count") or 0) for s in stats.values())
