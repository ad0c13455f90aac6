"""Scoring a model through the engine: confusion matrix over image/mask pairs."""
from __future__ import annotations

import glob
import os
import shutil
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np
from osgeo import gdal

from .engine import NODATA_CLASS, SegmentOptions, segment
from .errors import InputError
from .registry import resolve_model
from .runtime import make_session

_EXT = (".tif", ".tiff", ".vrt", ".jp2", ".img")


def pairs(images_dir: str, masks_dir: str) -> List[Tuple[str, str]]:
    """Image/mask pairs matched by file name (the same stem; a mask may add _mask)."""
    if not os.path.isdir(images_dir):
        raise InputError("images folder not found: %s" % images_dir)
    if not os.path.isdir(masks_dir):
        raise InputError("masks folder not found: %s" % masks_dir)
    masks = {}
    for m in glob.glob(os.path.join(masks_dir, "*")):
        if m.lower().endswith(_EXT):
            stem = os.path.splitext(os.path.basename(m))[0]
            masks[stem] = m
            for suffix in ("_mask", "-mask", "_label", "_labels"):
                if stem.endswith(suffix):
                    masks.setdefault(stem[: -len(suffix)], m)
    out = []
    for im in sorted(glob.glob(os.path.join(images_dir, "*"))):
        if not im.lower().endswith(_EXT):
            continue
        stem = os.path.splitext(os.path.basename(im))[0]
        if stem in masks:
            out.append((im, masks[stem]))
    if not out:
        raise InputError("no image in %s has a mask of the same name in %s" % (images_dir, masks_dir))
    return out


def confusion(pred: np.ndarray, truth: np.ndarray, n: int, valid: Optional[np.ndarray] = None) -> np.ndarray:
    sel = pred != NODATA_CLASS
    sel &= truth < n
    if valid is not None:
        sel &= valid
    return np.bincount(truth[sel].astype(np.int64) * n + pred[sel].astype(np.int64),
                       minlength=n * n).reshape(n, n)


def metrics(cm: np.ndarray, names: Dict[int, str], binary: bool) -> Dict[str, object]:
    """Per-class precision, recall, F1, IoU, pixel accuracy; overall as in the README."""
    cm = cm.astype(np.float64)
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


def evaluate(model: str, images_dir: str, masks_dir: str, opts: Optional[SegmentOptions] = None,
             progress=None, cancel=None, on_image=None) -> Dict[str, object]:
    """Run the engine on every image with a mask and score the class rasters."""
    opts = opts or SegmentOptions()
    opts.polygons = False
    opts.confidence = False
    opts.overwrite = True
    pp = pairs(images_dir, masks_dir)
    session = make_session(resolve_model(model), opts.device, opts.threads)  # one for all images
    tmp = tempfile.mkdtemp(prefix="tm-eval-")
    cm = None
    info = None
    try:
        for k, (im, mk) in enumerate(pp):
            opts.prefix = "img%05d" % k
            res = segment(im, model, tmp, opts, cancel=cancel, _session=session)
            info = res.model
            n = info.n_classes
            pds = gdal.Open(res.class_raster)
            mds = gdal.Open(mk)
            if (pds.RasterXSize, pds.RasterYSize) != (mds.RasterXSize, mds.RasterYSize):
                raise InputError("mask %s is %dx%d but its image is %dx%d" % (
                    os.path.basename(mk), mds.RasterXSize, mds.RasterYSize, pds.RasterXSize, pds.RasterYSize))
            pred = pds.GetRasterBand(1).ReadAsArray()
            truth = mds.GetRasterBand(1).ReadAsArray()
            pds = mds = None
            c = confusion(pred, truth, n)
            cm = c if cm is None else cm + c
            if on_image:
                on_image(im, c)
            if progress:
                progress((k + 1) / len(pp), os.path.basename(im))
            for f in os.listdir(tmp):
                os.remove(os.path.join(tmp, f))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = metrics(cm, info.class_names(), info.task == "binary")
    out["images"] = len(pp)
    out["model"] = info.name
    return out
