"""What a run found, in words: the one wording that every front end shows (the command line, the
panel and QGIS's message bar and log, the Processing log, the batch's job lines).

A run's account is a list of :class:`Line` (a label and a text, shown as ``label: text``), in
the order a person reads it: what ran, what was assumed (notes) and what not to trust
(warnings), the outputs, what was found, what was masked and flagged, how like the training
data the scene is, and the time.  :func:`headline` is the one-line summary of the same run;
:func:`failure` the one line of a run that failed.  Front ends choose which lines to show and
how (colour, level), never the words.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Optional

from ..errors import Cancelled, TailingsError, first_line

INFO, NOTE, WARNING, OUTPUT, FOUND = "info", "note", "warning", "output", "found"


@dataclass(frozen=True)
class Line:
    label: str
    text: str
    kind: str = INFO     # INFO, NOTE, WARNING, OUTPUT (a file) or FOUND (what the run found)

    def __str__(self) -> str:
        return "%s: %s" % (self.label, self.text)


def device_name(device: str) -> str:
    return "GPU (CUDA)" if device == "cuda" else "CPU"


def percent(fraction: float) -> str:
    """A share as a person reads it: one decimal, and "under 0.1 %" rather than 0.0 % when not zero."""
    pct = 100.0 * fraction
    return "%.1f %%" % pct if pct == 0 or pct >= 0.1 else "under 0.1 %"


def found(stats: Mapping[int, Mapping[str, object]]) -> List[Line]:
    """Per class that gets polygons: its regions (when polygonised) and hectares."""
    lines = []
    for cid in sorted(stats):
        s = stats[cid]
        count = s.get("count")
        regions = "" if count is None else "%d region%s, " % (count, "" if count == 1 else "s")
        lines.append(Line("found %s" % s.get("name", cid), "%s%.2f ha" % (regions, float(s.get("area_ha") or 0.0)),
                          FOUND))
    return lines or [Line("found", "nothing", FOUND)]


def findings(res) -> List[Line]:
    """What a run found besides its classes: the masked area, the share flagged, how like the
    training data the scene is."""
    lines = []
    if res.masked_ha:
        lines.append(Line("masked before segmenting", "%s (%s of the area with data)" % (
            ", ".join("%s %.2f ha" % kv for kv in sorted(res.masked_ha.items())), percent(res.masked_fraction))))
    lines.append(Line("flagged", "%s of the segmented area" % percent(res.flagged_fraction)))
    rel = res.reliability or {}
    if rel.get("ood_score") is not None:
        lines.append(Line("%s the training data" % ("unlike" if rel["ood"] else "like"),
                          "score %.2f (up to 1: like its training tiles), %d of %d tiles unreliable, %s of the "
                          "pixels outside the training brightness range" % (
                              rel["ood_score"], rel["unreliable_tiles"], rel["tiles_scored"],
                              percent(rel["out_of_range_fraction"]))))
    return lines + review_marks(res)


def review_marks(res) -> List[Line]:
    """The flagged regions that look unlike the tailings the model learnt from (``res.marks``:
    ``likeness.mark_layer``'s summary): a warning when there are any."""
    m = getattr(res, "marks", None) or {}
    if not m.get("regions_total"):
        return []
    if not m.get("regions"):
        return [Line("like the training tailings", "all %d flagged regions (%.0f ha) look like the tailings the model "
                     "learnt from" % (m["regions_total"], float(m["flagged_ha"])))]
    return [Line("warning", review_text(m), WARNING)]   # (the CLI's ``warning:``, Processing's and the bar's)


def review_text(m) -> str:
    """``3 of 12 regions (81 ha of 95 ha) look unlike ...``."""
    return ("%d of %d region%s (%.0f ha of %.0f ha) look%s unlike the tailings the model learnt from: marked for "
            "review (for_review = 1 in the polygon layer)"
            % (m["regions"], m["regions_total"], "" if m["regions_total"] == 1 else "s", float(m["area_ha"]),
               float(m["flagged_ha"]), "s" if m["regions"] == 1 else ""))


def outputs(res) -> List[Line]:
    lines = [Line("classes", res.class_raster, OUTPUT)]
    if res.confidence_raster:
        lines.append(Line("confidence", res.confidence_raster, OUTPUT))
    if res.polygons:
        lines.append(Line("polygons", "%s (layer %s)" % (res.polygons, res.layer_name), OUTPUT))
    if res.tiles_layer:
        lines.append(Line("tiles", "%s (layer %s: each tile's score; unreliable ones marked)"
                          % (res.polygons, res.tiles_layer), OUTPUT))
    if res.report:
        lines.append(Line("report", res.report, OUTPUT))
    return lines


def run_lines(res, skip_warnings: int = 0) -> List[Line]:
    """The whole account of a run (``res``: an ``execute.SegmentResult``).  ``skip_warnings``:
    the first warnings were shown already (a plan's, before the run)."""
    lines = [Line("model", "%s (%s)" % (res.model.name, res.model.path)),
             Line("device", "%s (%s)" % (device_name(res.device), res.provider_reason))]
    lines += [Line("note", n, NOTE) for n in res.notes]
    lines += [Line("warning", w, WARNING) for w in res.warnings[skip_warnings:]]
    lines += outputs(res) + found(res.stats) + findings(res)
    lines.append(Line("time", "%.1f s for %d tiles" % (res.seconds, res.tiles)))
    return lines


def headline(res) -> str:
    """One line: what was found per class, how long it took, on what."""
    what = "; ".join("%s: %s" % (ln.label[len("found "):], ln.text) if ln.label != "found" else ln.text
                     for ln in found(res.stats))
    return "found %s in %.1f s on %s" % (what, float(res.seconds), device_name(res.device))


def failure(error: BaseException) -> str:
    """The one line of a run that failed: the engine's own message, or, for a bug, its type and
    first line (the traceback goes to a log or ``--debug``)."""
    if isinstance(error, Cancelled):
        return "cancelled; partial outputs removed"
    if isinstance(error, TailingsError):
        return str(error)
    return "internal error (%s: %s)" % (type(error).__name__, first_line(error))


def text(lines: List[Line], kinds: Optional[tuple] = None) -> str:
    return "\n".join(str(ln) for ln in lines if kinds is None or ln.kind in kinds)
