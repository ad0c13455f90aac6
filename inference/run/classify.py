"""Blended tile probabilities to classes and confidence: the rows the tile stream hands on.

Binary (one sigmoid channel, or two channels), multi-class (argmax) and multilabel (a threshold
per label) results; confidence is the probability of the assigned class in percent.
"""
from __future__ import annotations

import numpy as np

from ..output.writing import NODATA_CLASS, NODATA_CONF


def classify(acc, wsum, valid, binary, threshold, labels=None, all_valid=None):
    """Classes and confidence (probability of the assigned class, percent) of blended rows;
    with ``labels`` (a multilabel model: each label class's id and threshold) see
    :func:`classify_labels`.  ``all_valid``: whether ``valid`` is all True, when the caller knows.

    Written for speed on the largest case, one output channel: a few passes in place, no
    float64 and no temporaries beyond the probability array."""
    if labels is not None:
        return classify_labels(acc, wsum, valid, *labels)
    if all_valid is None:
        all_valid = bool(valid.all())
    with np.errstate(invalid="ignore", divide="ignore"):
        if acc.shape[0] == 1:
            conf = np.maximum(wsum, 1e-12)
            np.divide(acc[0], conf, out=conf)
            cls = conf >= threshold
            np.subtract(1.0, conf, out=conf, where=~cls)   # background: 1 - p
        elif binary:
            conf = acc[1] / np.maximum(acc.sum(axis=0), 1e-12)
            cls = conf >= threshold
            np.subtract(1.0, conf, out=conf, where=~cls)
        else:
            cls = acc.argmax(axis=0).astype(np.uint8)
            conf = acc.max(axis=0) / np.maximum(acc.sum(axis=0), 1e-12)
    if cls.dtype == bool:
        cls = cls.view(np.uint8)
    conf *= 100.0
    np.rint(conf, out=conf)
    np.clip(conf, 0, 100, out=conf)
    conf = conf.astype(np.uint8)
    if not all_valid:
        invalid = ~valid
        cls[invalid] = NODATA_CLASS
        conf[invalid] = NODATA_CONF
    return cls, conf


def classify_labels(acc, wsum, valid, ids, thresholds):
    """A multilabel model's rows: ``(1 + K, rows, W)`` classes -- band 1 the id of the most probable
    label present (0: none), then per label 1 (present) or 0 -- and confidence in percent -- band 1
    the probability of band 1's label (1 - the highest when none is present), then each label's."""
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = acc / np.maximum(wsum, 1e-12)[None]
    present = prob >= np.asarray(thresholds, np.float32).reshape(-1, 1, 1)
    any_label = present.any(axis=0)
    top = np.where(present, prob, -1.0).argmax(axis=0)
    ids = np.asarray(ids, np.uint8)
    cls = np.empty((1 + len(ids),) + prob.shape[1:], np.uint8)
    cls[0] = np.where(any_label, ids[top], 0)
    cls[1:] = present
    best = np.take_along_axis(prob, top[None], axis=0)[0]
    conf = np.empty(cls.shape, np.float32)
    conf[0] = np.where(any_label, best, 1.0 - prob.max(axis=0))
    conf[1:] = prob
    conf = np.clip(np.rint(conf * 100.0), 0, 100).astype(np.uint8)
    cls[:, ~valid] = NODATA_CLASS
    conf[:, ~valid] = NODATA_CONF
    return cls, conf
