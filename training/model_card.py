"""The model card of a model trained from polygons (``<model>.md`` beside it), in plain words first:
what it learnt from, how it scored on the part held back (and that this is not the shipped model's
held-out sites), how it compares with the model it started from, what that does not tell; the
technical details (classes, training run) after."""
from __future__ import annotations

import os

from .engine import definition
from .engine import ModelInfo

from . import compare


def text(info: ModelInfo) -> str:
    fit = info.extra.get("fit", {})
    val = info.extra.get("validation_fit", {}) or {}
    src = info.extra.get("trained_from", {})
    base = src.get("name") if src.get("model") != "scratch" else None
    rasters = ", ".join(os.path.basename(r) for r in fit.get("rasters", []))
    per = val.get("per_class") or {}
    score = val.get("iou", val.get("miou"))
    short = ("%s, on %s, from the user's polygons (%s). Scored on a part of those scenes held back: %s. "
             "It has seen only these scenes%s; check its results by eye before relying on them."
             % ("Fine-tuned from %s" % base if base else "Trained from scratch", rasters or "the given rasters",
                fit.get("date", ""), ("IoU %.2f" % score) if score is not None else "no labelled class there to score",
                " and what %s learnt" % base if base else ""))
    cmp = info.extra.get("compared") if base else None
    if cmp:
        short += (" Against %s, on ground the user did not touch: %s." % (cmp["base"], cmp["warning"]) if cmp.get("warning")
                  else " Against %s, on ground the user did not touch, it loses nothing beyond %.0f %% of %s's "
                  "detections." % (cmp["base"], 100 * compare.LOSS_WARN, cmp["base"]))
    lines = ["# Model card: `%s`" % info.name, "", "**In short:** " + " ".join(short.split()), ""]
    lines += _plain_score(val, per, info) + compare.card_lines(cmp)
    lines += ["## Known limits", "",
              "- Scored on blocks of the same scenes it was trained on: a new scene, season or sensor can score "
              "much lower.",
              "- The labels are the user's own: what they left out, the model learnt to leave out too.", ""]
    lines += ["## Technical details", "", "### Classes", ""]
    for c in info.classes:
        d = definition(c.name)
        lines.append("- %d `%s` (%s)%s" % (c.id, c.name, c.color, ": " + d if d else ""))
    lines += ["", "### Training", "",
              "- task: %s; inputs %s at %g m; tiles %d px" % (info.task, ", ".join(info.bands), info.gsd_m,
                                                              info.tile_size),
              "- from: %s" % (base or "scratch (ImageNet encoder when installed)"),
              "- rasters: %s" % (", ".join(fit.get("rasters", [])) or "-"),
              "- review of the run: the analyst's decisions only (accepted regions: their class, rejected: "
              "background, unreviewed and the ground between regions: ignored)" if fit.get("review") else
              "- corrections of the run: %s (only what the user deleted, reshaped or added counts; the "
              "detections left as they were are ignored)" % fit["corrections_of"] if fit.get("corrections_of") else
              "- corrections: the polygons as they are (no run to compare them with)",
              "- labels: %s%s%s" % (fit.get("labels", "-"), ", field %s" % fit["field"] if fit.get("field") else "",
                                   "; area %s" % fit["area"] if fit.get("area") else "" if fit.get("review") else
                                   "; without an area: background near the labels only"),
              "- labelled pixels: %s" % ", ".join("%s %d" % kv for kv in sorted((fit.get("label_pixels") or {}).items())),
              "- epochs: %s of %s run%s, %s; %s s on %s (torch %s)" % (
                  fit.get("epochs_run"), fit.get("epochs"), " (cancelled)" if fit.get("cancelled") else "",
                  "best epoch %s" % fit.get("best_epoch") if fit.get("epochs_run") else
                  "the veto only (no tailings drawn: the network is unchanged)", fit.get("seconds"),
                  fit.get("device"), fit.get("torch")),
              "- kept from the model it started from: %s" % (
                  "its normalisation statistics, its encoder (not trained), an L2 pull (%g) towards its weights"
                  % fit.get("anchor_l2sp", 0) if base and not fit.get("encoder_trained") else
                  "its normalisation statistics, an L2 pull (%g) towards its weights" % fit.get("anchor_l2sp", 0)
                  if base else "nothing (scratch)"), ""]
    if info.task == "binary":
        lines += ["Threshold the model uses: %g (%s)." % (info.threshold, fit.get("threshold_why") or ""), ""]
    return "\n".join(lines)


def _plain_score(val: dict, per: dict, info: ModelInfo) -> list:
    """Its score per class, and what it was measured on: blocks held back from its own scenes."""
    lines = ["## Its score, and what it was measured on", "",
             "Measured on its own held-back blocks: a spatially separate part of the labelled scenes it was "
             "trained on, never trained on but close to its training ground; not comparable with the shipped "
             "model's score, which was measured on mining sites it never saw.", ""]
    if per:
        lines += ["| class | IoU |", "|---|---|"]
        lines += ["| %s | %s |" % (k, "-" if v is None else "%.3f" % v) for k, v in per.items()]
        if val.get("threshold") is not None:
            lines += ["", "Best threshold there: %g." % val["threshold"]]
    else:
        lines.append("No part could be held back (one block of labelled ground): no score.")
    return lines + [""]


def write(model_path: str, info: ModelInfo) -> str:
    path = os.path.splitext(model_path)[0] + ".md"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text(info))
    return path
