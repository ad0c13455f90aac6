"""Segmentation scores from a confusion matrix: the engine's ``evaluate`` and the training's
validation both score with these."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ..output.writing import NODATA_CLASS


def confusion(pred: np.ndarray, truth: np.ndarray, n: int, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """(n, n) counts, truth by row, prediction by column, over pixels with a prediction and a
    label below ``n`` (and ``valid``)."""
    sel = pred != NODATA_CLASS
    sel &= truth < n
    if valid is not None:
        sel &= valid
    return np.bincount(truth[sel].astype(np.int64) * n + pred[sel].astype(np.int64),
                       minlength=n * n).reshape(n, n)


def metrics(cm: np.ndarray, names: Dict[int, str], binary: bool) -> Dict[str, object]:
    """Per-class precision, recall, F1, IoU, pixel accuracy; overall: the positive class of a
    binary model, the macro mean of a multi-class one; ``mpa`` the mean per-class recall."""
    cm = np.asarray(cm).astype(np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp

    def div(a, b):
        return float(a / b) if b > 0 else 0.0

    per = {}
    for i in range(cm.shape[0]):
        p, r = div(tp[i], tp[i] + fp[i]), div(tp[i], tp[i] + fn[i])
        per[names.get(i, str(i))] = {"precision": p, "recall": r, "f1": div(2 * p * r, p + r),
                                     "iou": div(tp[i], tp[i] + fp[i] + fn[i]), "pa": r,
                                     "pixels": int(cm[i].sum())}
    mpa = float(np.mean([v["pa"] for v in per.values()]))
    if binary:
        pos = per[names.get(1, "1")]
        head = {k: pos[k] for k in ("precision", "recall", "f1", "iou")}
    else:
        head = {k: float(np.mean([v[k] for v in per.values()])) for k in ("precision", "recall", "f1", "iou")}
    head["mpa"] = mpa
    head["pixel_accuracy"] = div(tp.sum(), cm.sum())
    head["per_class"] = per
    return head


def binary_scores(tp: int, fp: int, fn: int, tn: int) -> Dict[str, float]:
    """The overall scores of a binary confusion (positive class 1), without the per-class table."""
    out = metrics(np.array([[tn, fp], [fn, tp]]), {0: "background", 1: "positive"}, binary=True)
    out.pop("per_class")
    return out
