"""Is the new model worse than the one it started from, where the user said nothing?  Every fit
from a model scores both on ground the user did not touch:

- the replay of the base model's training locations (its metadata's ``replay``, with how much
  tailings each holds): the share of the locations holding tailings that the new model's veto
  suppresses (the base suppresses none);
- the user's scenes outside the corrections: up to ``WINDOWS`` blocks of unlabelled ground (those
  where the run flagged most, when the labels are corrections of a run), segmented by both
  networks at their own thresholds: the base's detections there and how many the new model loses.

More than ``LOSS_WARN`` of the base's detections lost on either is said plainly (``warning``): in
the command line (``warning: ...``), QGIS's message bar (orange) and the model card, whose
"Compared with" section gives the figures in every case.  The one wording is here.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from . import chips as C
from .predict import predict

LOSS_WARN = 0.10    # more than this share of the base's detections lost: a warning
WINDOWS = 12        # blocks of untouched ground scored (per fit)
MARGIN = 64         # context read around each block (pixels)


def _positive(probs: np.ndarray, info, threshold: float) -> np.ndarray:
    if info.task == "binary":
        return probs[-1] >= threshold
    if info.task == "multiclass":
        return probs.argmax(0) > 0
    ths = np.asarray(info.label_thresholds(), np.float32)[:, None, None]
    return (probs >= ths).any(0)


def _blocks(scene: C.Scene, rng) -> List[tuple]:
    if scene.untouched is None:
        return []
    cand = np.argwhere(scene.untouched > 0)
    if not len(cand):
        return []
    if scene.base_found is not None and (scene.base_found > 0).any():   # where the run flagged most
        order = np.argsort(-scene.base_found[cand[:, 0], cand[:, 1]], kind="stable")
        cand = cand[order][:WINDOWS]
        return [tuple(int(v) for v in rc) for rc in cand if scene.base_found[rc[0], rc[1]] > 0]
    return [tuple(int(v) for v in cand[i]) for i in rng.permutation(len(cand))[:WINDOWS]]


def untouched_ground(base_net, new_net, base_info, new_info, scenes: List[C.Scene], dev, seed: int = 0) -> Dict:
    """Base vs new detections on the scenes' unlabelled blocks (see the module's text)."""
    rng = np.random.default_rng(seed)
    jobs = [(s, b) for s in scenes for b in _blocks(s, rng)][:WINDOWS]
    ml = new_info.task == "multilabel"
    base_px = new_px = lost_px = ground_px = 0
    for sc, (r, c) in jobs:
        x, y = c * sc.block, r * sc.block
        x0, y0 = max(0, x - MARGIN), max(0, y - MARGIN)
        size = sc.block + 2 * MARGIN
        img, lab = sc.read(x0, y0, size)
        sl = (slice(y - y0, y - y0 + sc.block), slice(x - x0, x - x0 + sc.block))
        free = (lab == 255).all(axis=0)[sl]
        free[min(sc.height - y, sc.block):, :] = False
        free[:, min(sc.width - x, sc.block):] = False
        b = _positive(predict(base_net, img, dev, ml)[(slice(None),) + sl], base_info, base_info.threshold) & free
        n = _positive(predict(new_net, img, dev, ml)[(slice(None),) + sl], new_info, new_info.threshold) & free
        base_px += int(b.sum())
        new_px += int(n.sum())
        lost_px += int((b & ~n).sum())
        ground_px += int(free.sum())
    ha = (new_info.gsd_m ** 2) / 1e4
    return {"windows": len(jobs), "ground_ha": round(ground_px * ha, 2), "base_ha": round(base_px * ha, 2),
            "new_ha": round(new_px * ha, 2), "lost_ha": round(lost_px * ha, 2),
            "lost_share": round(lost_px / base_px, 4) if base_px else None}


def result(base_name: str, replay_vetoed: Optional[float], ground: Optional[Dict]) -> Dict:
    """The comparison as stored in the model's metadata (``compared``), with its warning (or None)."""
    out = {"base": base_name, "replay_positive_vetoed": replay_vetoed, "untouched": ground}
    lost = []
    if ground and ground.get("lost_share") is not None and ground["lost_share"] > LOSS_WARN:
        lost.append("finds %.0f %% less tailings than %s on ground you did not correct (%s ha of %s ha lost, in "
                    "%d sampled blocks)" % (100 * ground["lost_share"], base_name, _ha(ground["lost_ha"]),
                                            _ha(ground["base_ha"]), ground["windows"]))
    if replay_vetoed is not None and replay_vetoed > LOSS_WARN:
        lost.append("suppresses %.0f %% of the training locations of %s that hold tailings"
                    % (100 * replay_vetoed, base_name))
    out["warning"] = ("the new model %s; check it before use" % " and ".join(lost)) if lost else None
    return out


def _ha(v: float) -> str:
    return "%.1f" % v if v < 100 else "%.0f" % v


def card_lines(cmp: Optional[Dict]) -> List[str]:
    """The card's "Compared with" section."""
    if not cmp:
        return ["## Compared with the model it started from", "",
                "Trained from scratch: no model to compare with.", ""]
    lines = ["## Compared with %s" % cmp["base"], "",
             "On ground the user did not touch (what the corrections say nothing about):", ""]
    rv = cmp.get("replay_positive_vetoed")
    lines.append("- its training locations holding tailings (stored in the model, `replay`): %s" % (
        "the new model suppresses %.1f %% of them (%s none)" % (100 * rv, cmp["base"]) if rv is not None else
        "not scored (no veto, or no stored locations)"))
    g = cmp.get("untouched") or {}
    if g.get("windows"):
        lines.append("- the user's scene outside the corrections (%d blocks, %s ha): %s flagged %s ha, the new model "
                     "%s ha; %s ha of %s's detections lost%s" % (
                         g["windows"], _ha(g["ground_ha"]), cmp["base"], _ha(g["base_ha"]), _ha(g["new_ha"]),
                         _ha(g["lost_ha"]), cmp["base"],
                         " (%.0f %%)" % (100 * g["lost_share"]) if g.get("lost_share") is not None else ""))
    else:
        lines.append("- the user's scene outside the corrections: none (every pixel of the scenes read was labelled)")
    lines += ["", ("**Warning:** %s." % cmp["warning"]) if cmp.get("warning") else
              "Nothing lost there beyond %.0f %% of %s's detections." % (100 * LOSS_WARN, cmp["base"]), ""]
    return lines
