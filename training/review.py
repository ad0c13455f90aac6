"""Labels from a reviewed result layer (``fit(..., review=True)``, ``python -m training fit --review``):
exactly the analyst's decisions, nothing else.

The result polygon layer of a run, stepped through in QGIS's review queue, holds a ``review``
field (``accepted``, ``rejected``, ``unreviewed`` or empty).  On the model's grid:

- an accepted region is its class (``class_id`` of the layer; the positive class of a binary model);
- a rejected region is background;
- everything else -- unreviewed regions, the ground between regions -- is ignored (``labels.IGNORE``).

The decided regions themselves are the known ground (the "area" of ``labels.known_ground``), so no
pixel outside them is taken for background.  A region reshaped in QGIS counts as it is now.
"""
from __future__ import annotations

from typing import Optional, Tuple

from .engine import InputError
from .engine import ACCEPTED, REJECTED, REVIEW as FIELD, UNREVIEWED

from . import labels as L

DECISIONS = (ACCEPTED, REJECTED, UNREVIEWED)


def decision(value) -> str:
    """A ``review`` value as one of ``DECISIONS`` (empty: unreviewed; ValueError otherwise)."""
    v = "" if value is None else str(value).strip().lower()
    if v in ("", "null", UNREVIEWED):
        return UNREVIEWED
    if v in (ACCEPTED, REJECTED):
        return v
    raise ValueError(v)


def read_review(path: str, classes, layer: Optional[str] = None) -> Tuple[L.Polygons, L.Polygons]:
    """``(labels, area)`` of a reviewed layer: accepted regions with their class id, rejected ones
    with 0 (background); the area is the decided regions (see the module's text)."""
    ds, lyr = L._open_layer(path, "reviewed layer", layer)
    srs = L._srs(lyr, path, "reviewed layer")
    defn = lyr.GetLayerDefn()
    fields = {defn.GetFieldDefn(i).GetName().lower(): i for i in range(defn.GetFieldCount())}
    if FIELD not in fields:
        raise InputError("%s has no %r field: review its regions first (in QGIS: \"Review detections\" in the "
                         "Tailings Mapper panel)" % (path, FIELD))
    ids = {c.id for c in classes}
    background = [c.id for c in classes if c.is_background]
    if not background:
        raise InputError("the model has no background class: a rejected region cannot be learnt as background")
    positive = max(ids) if len(classes) == 2 else None
    fi, ci = fields[FIELD], fields.get("class_id")
    items, bad, unclassed = [], {}, 0
    for f in lyr:
        g = f.GetGeometryRef()
        if g is None or g.IsEmpty():
            continue
        try:
            d = decision(f.GetField(fi))
        except ValueError as e:
            bad[str(e)] = bad.get(str(e), 0) + 1
            continue
        if d == UNREVIEWED:
            continue
        if d == REJECTED:
            cid = background[0]
        else:
            v = f.GetField(ci) if ci is not None else None
            cid = int(v) if v is not None and int(v) in ids and int(v) not in background else positive
            if cid is None:
                unclassed += 1
                continue
        g = L.area_of(g)
        if g is not None:
            items.append((g, cid))
    ds = None
    if bad:
        raise InputError("%s: the %r field holds %s; only %s count" % (
            path, FIELD, ", ".join("%r (%d regions)" % kv for kv in sorted(bad.items())), ", ".join(DECISIONS)))
    if unclassed:
        raise InputError("%s: %d accepted regions have no class of the model in class_id (its classes: %s)"
                         % (path, unclassed, ", ".join(c.name for c in classes)))
    if not items:
        raise InputError("%s: no region is accepted or rejected yet: review the regions first (unreviewed ones "
                         "teach nothing)" % path)
    labels = L.Polygons(items, srs)
    return labels, L.Polygons([(g.Clone(), -1) for g, _ in items], srs)

