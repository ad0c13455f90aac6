"""What a fit says about the model it made, in one wording for every front end: the command line
prints :func:`lines`, QGIS's task and the Processing algorithm log them and show :func:`outcome`
(the message bar's one line, with the comparison's warning when the new model is worse than the
one it started from, ``training.compare``).  No PyTorch here: a ``FitResult`` is read, not made.
"""
from __future__ import annotations

import json
from typing import List, Optional

CANCELLED = " (cancelled: the best epoch so far)"


def worse(res) -> Optional[str]:
    """The comparison's warning: the new model loses what the one it started from found, on ground
    the user did not touch (None: it does not, or nothing to compare with)."""
    return (res.info.extra.get("compared") or {}).get("warning")


def held_back_score(res) -> Optional[float]:
    val = res.info.extra.get("validation_fit") or {}
    return val.get("iou", val.get("miou"))


def validation(res) -> str:
    """The scores on the part held back, per class."""
    per = (res.info.extra.get("validation_fit") or {}).get("per_class") or {}
    text = ", ".join("%s IoU %.3f" % (k, v) for k, v in per.items() if v is not None)
    return text or "none held back"


def outcome(res) -> str:
    """One line: the model, where it is, its score, and the comparison's warning."""
    score = held_back_score(res)
    line = "model %s is in your model list%s%s (%.0f s)" % (
        res.info.name, CANCELLED if res.cancelled else "",
        "; on the part held back: IoU %.2f" % score if score is not None else "", res.seconds)
    return "%s — warning: %s" % (line, worse(res)) if worse(res) else line


def lines(res) -> List[str]:
    """Everything a fit reports, a line each: its warnings (the comparison's among them), the
    model and its card, the scores on the part held back, the threshold and the time."""
    fit = res.info.extra.get("fit") or {}
    out = ["warning: %s" % w for w in res.warnings]
    out.append("model: %s%s" % (res.path, CANCELLED if res.cancelled else ""))
    out.append("card: %s" % res.card)
    if res.registered:
        out.append("in your model list: %s" % res.registered)
    per = (res.info.extra.get("validation_fit") or {}).get("per_class")
    out.append("validation (held-back part): %s" % json.dumps(per or "none held back"))
    out.append("threshold: %g (%s)" % (res.info.threshold, fit.get("threshold_why") or "the model's"))
    out.append("time: %.0f s, %d of %d epochs run%s" % (
        res.seconds, fit.get("epochs_run", 0), fit.get("epochs", 0),
        ", best epoch %d" % res.best_epoch if fit.get("epochs_run") else " (the veto only)"))
    return out
