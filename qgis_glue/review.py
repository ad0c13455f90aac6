"""The review queue, its layer side: a run's polygon layer stepped through region by region, the
analyst's decisions stored in the layer itself.

- **Order**: the regions marked for review first (``for_review = 1``, unlike the tailings the model
  learnt from), then by size, largest first (the area of each polygon as it is now).
- **Decisions**: a text field ``review`` (``accepted``, ``rejected``, ``unreviewed``).  Missing, it is
  added: straight into the GeoPackage when the layer is not being edited (a new column, every
  region ``unreviewed``: nothing of the analyst's is touched), in the layer's edit buffer when it is
  (it then comes and goes with the analyst's other unsaved edits).  Every decision is an edit of
  the layer, in its edit buffer (editing is switched on when needed), one undo step each: QGIS's
  Undo (Ctrl+Z) takes it back, QGIS's Save Layer Edits keeps it, and a project closed with unsaved
  decisions asks, as for any edit.  Reshaping a region stays QGIS's own editing.
- **Rejected regions leave the map, not the layer**: the layer's renderer becomes rule-based, its
  symbols under a rule that draws every region not rejected, beside an unticked legend entry that
  draws the rejected ones (tick it to see them); the attribute table keeps them all.
- **Progress**: regions with a decision of all the layer's regions ("12 of 48 reviewed").
"""
from __future__ import annotations

from typing import Dict, List, Optional

from qgis.core import (Qgis, QgsCoordinateTransform, QgsFeatureRequest, QgsField, QgsFillSymbol, QgsProject,
                       QgsRuleBasedRenderer, QgsVectorDataProvider, QgsVectorLayer)

from ..inference.run.likeness import ACCEPTED, FOR_REVIEW, REJECTED, REVIEW as FIELD, UNREVIEWED

SHOWN_RULE = "tailings_mapper/review: not rejected"
HIDDEN_RULE = "tailings_mapper/review: rejected"
MARGIN = 0.6              # of the region's larger side, around it when zoomed


def _string_type():
    """The type of a text field: QMetaType from QGIS 3.38 (QGIS 4 knows only it), QVariant before
    (spelt through getattr: the Qt 6 migration checker would rewrite it for QGIS 4, breaking 3.22)."""
    if Qgis.QGIS_VERSION_INT >= 33800:
        from qgis.PyQt.QtCore import QMetaType
        return QMetaType.Type.QString
    from qgis.PyQt.QtCore import QVariant
    return getattr(QVariant, "String")


def decision(value) -> str:
    """A stored value as a decision (empty or unknown: unreviewed)."""
    v = "" if value is None else str(value).strip().lower()
    return v if v in (ACCEPTED, REJECTED) else UNREVIEWED


def ensure_field(layer: QgsVectorLayer) -> bool:
    """Add the ``review`` field when missing (see the module's text); True when it was added.
    ValueError when the layer cannot take it."""
    if layer.fields().indexOf(FIELD) >= 0:
        return False
    field = QgsField(FIELD, _string_type(), "", 16)
    if layer.isEditable():
        if not layer.addAttribute(field):
            raise ValueError("cannot add a %r field to %s" % (FIELD, layer.name()))
        layer.updateFields()
        return True
    prov = layer.dataProvider()
    if not (prov.capabilities() & QgsVectorDataProvider.Capability.AddAttributes) or not prov.addAttributes([field]):
        raise ValueError("cannot add a %r field to %s (%s): save it as a GeoPackage first"
                         % (FIELD, layer.name(), layer.source().split("|")[0]))
    layer.updateFields()
    idx = layer.fields().indexOf(FIELD)
    prov.changeAttributeValues({fid: {idx: UNREVIEWED} for fid in layer.allFeatureIds()})
    return True


def queue(layer: QgsVectorLayer) -> List[int]:
    """The layer's feature ids in review order: marked for review first, then largest first."""
    marked = layer.fields().indexOf(FOR_REVIEW)
    keys = []
    for f in layer.getFeatures():
        m = f.attribute(marked) if marked >= 0 else None
        keys.append((-(1 if m not in (None, "") and str(m) not in ("0", "NULL") else 0),
                     -(f.geometry().area() if f.hasGeometry() else 0.0), f.id()))
    return [k[2] for k in sorted(keys)]


def tally(layer: QgsVectorLayer) -> Dict[str, int]:
    """Regions per decision, as the layer is now (unsaved edits included)."""
    out = {ACCEPTED: 0, REJECTED: 0, UNREVIEWED: 0}
    idx = layer.fields().indexOf(FIELD)
    req = QgsFeatureRequest().setFlags(QgsFeatureRequest.Flag.NoGeometry)
    if idx >= 0:
        req.setSubsetOfAttributes([idx])
    for f in layer.getFeatures(req):
        out[decision(f.attribute(idx) if idx >= 0 else None)] += 1
    return out


def progress_text(layer: QgsVectorLayer) -> str:
    t = tally(layer)
    return "%d of %d reviewed" % (t[ACCEPTED] + t[REJECTED], sum(t.values()))


def decide(layer: QgsVectorLayer, fid: int, value: str) -> None:
    """Store a decision on one region: an edit of the layer, one undo step."""
    if value not in (ACCEPTED, REJECTED, UNREVIEWED):
        raise ValueError("not a review decision: %r" % value)
    ensure_field(layer)
    if not layer.isEditable() and not layer.startEditing():
        raise ValueError("%s cannot be edited: the review cannot be stored in it" % layer.name())
    layer.beginEditCommand("Review: %s" % value)
    ok = layer.changeAttributeValue(fid, layer.fields().indexOf(FIELD), value)
    if ok:
        layer.endEditCommand()
    else:
        layer.destroyEditCommand()
        raise ValueError("cannot store the decision on region %d of %s" % (fid, layer.name()))


def hide_rejected(layer: QgsVectorLayer) -> None:
    """Rejected regions off the map (see the module's text); the layer's own symbols kept."""
    renderer = layer.renderer()
    if renderer is None:
        return
    rb = renderer.clone() if isinstance(renderer, QgsRuleBasedRenderer) else \
        QgsRuleBasedRenderer.convertFromRenderer(renderer, layer)
    if rb is None:
        return
    root = rb.rootRule()
    if any(r.description() == SHOWN_RULE for r in root.children()):
        return
    shown = QgsRuleBasedRenderer.Rule(None, 0, 0, "coalesce(\"%s\", '') <> '%s'" % (FIELD, REJECTED),
                                      "not rejected in review", SHOWN_RULE)
    for child in list(root.children()):
        shown.appendChild(root.takeChild(child))
    root.appendChild(shown)
    symbol = QgsFillSymbol.createSimple({"color": "0,0,0,0", "outline_color": "128,128,128,255",
                                         "outline_style": "dot", "outline_width": "0.4"})
    hidden = QgsRuleBasedRenderer.Rule(symbol, 0, 0, "\"%s\" = '%s'" % (FIELD, REJECTED),
                                       "rejected in review (hidden: tick to show)", HIDDEN_RULE)
    hidden.setActive(False)
    root.appendChild(hidden)
    layer.setRenderer(rb)
    layer.triggerRepaint()


def zoom_to(canvas, layer: QgsVectorLayer, fid: int) -> bool:
    """The map canvas over one region, with room around it; False when the region is gone."""
    f = layer.getFeature(fid)
    if not f.isValid() or not f.hasGeometry():
        return False
    box = f.geometry().boundingBox()
    dest = canvas.mapSettings().destinationCrs()
    if dest.isValid() and layer.crs().isValid() and layer.crs() != dest:
        box = QgsCoordinateTransform(layer.crs(), dest, QgsProject.instance()).transformBoundingBox(box)
    side = max(box.width(), box.height())
    box.grow(side * MARGIN if side > 0 else 100.0)
    canvas.setExtent(box)
    canvas.refresh()
    return True


def polygon_layer(active, last_layers) -> Optional[QgsVectorLayer]:
    """The layer to review: the active layer when it is a run's polygons, else the last run's."""
    from .results import RESULT_PROPERTY
    for lyr in [active] + list(last_layers or []):
        if isinstance(lyr, QgsVectorLayer) and lyr.customProperty(RESULT_PROPERTY) == "polygons":
            return lyr
    return None


class Review:
    """Stepping through a layer's regions (``queue``); each step zooms the canvas over the region
    and selects it (QGIS's editing tools then act on it)."""

    def __init__(self, layer: QgsVectorLayer, canvas=None):
        self.layer, self.canvas = layer, canvas
        ensure_field(layer)
        hide_rejected(layer)
        self.order = queue(layer)
        self.pos = 0
        self.show()

    def current(self) -> Optional[int]:
        return self.order[self.pos] if 0 <= self.pos < len(self.order) else None

    def done(self) -> bool:
        return self.pos >= len(self.order)

    def show(self) -> None:
        """Zoom over the current region (regions deleted meanwhile are passed over)."""
        while not self.done() and not self.layer.getFeature(self.order[self.pos]).isValid():
            self.pos += 1
        fid = self.current()
        if fid is None:
            self.layer.removeSelection()
            return
        self.layer.selectByIds([fid])
        if self.canvas is not None:
            zoom_to(self.canvas, self.layer, fid)

    def decide(self, value: str) -> None:
        fid = self.current()
        if fid is None:
            return
        decide(self.layer, fid, value)
        self.step(1)

    def accept(self) -> None:
        self.decide(ACCEPTED)

    def reject(self) -> None:
        self.decide(REJECTED)

    def skip(self) -> None:
        self.step(1)

    def back(self) -> None:
        self.step(-1)

    def step(self, n: int) -> None:
        self.pos = max(0, min(len(self.order), self.pos + n))
        if n < 0:   # back: to the previous region still there
            while self.pos > 0 and not self.layer.getFeature(self.order[self.pos]).isValid():
                self.pos -= 1
        self.show()

    def describe(self) -> str:
        """What the current region is: its place in the queue, why it comes there, its decision."""
        fid = self.current()
        if fid is None:
            return "All %d regions seen." % len(self.order)
        f = self.layer.getFeature(fid)
        names = self.layer.fields().names()
        bits = ["Region %d of %d" % (self.pos + 1, len(self.order))]
        if FOR_REVIEW in names and str(f[FOR_REVIEW]) == "1":
            dist = f["tailings_distance"] if "tailings_distance" in names else None
            bits.append("marked for review: unlike the tailings the model learnt from%s"
                        % (" (distance %.2f)" % float(dist) if isinstance(dist, (int, float)) else ""))
        if "area_ha" in names and isinstance(f["area_ha"], (int, float)):
            bits.append("%.1f ha" % f["area_ha"])
        bits.append("now: %s" % decision(f[FIELD]))
        return " — ".join(bits)
