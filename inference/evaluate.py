"""Scoring a model through the engine: its class rasters against masks, image by image."""
from __future__ import annotations

import glob
import os
import shutil
import tempfile
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

from osgeo import gdal

from .errors import InputError
from .execute import execute
from .metrics import confusion, metrics
from .model import open_model
from .options import SegmentOptions
from .planning import plan

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


def evaluate(model, images_dir: str, masks_dir: str, opts: Optional[SegmentOptions] = None,
             progress=None, cancel=None, on_image=None) -> Dict[str, object]:
    """Run the engine on every image with a mask (one model, one network session) and score
    the class rasters: :func:`~inference.metrics.metrics` of the summed confusion matrix."""
    opts = replace(opts or SegmentOptions(), polygons=False, confidence=False, overwrite=True)
    pp = pairs(images_dir, masks_dir)
    model = open_model(model)
    info = model.info
    tmp = tempfile.mkdtemp(prefix="tm-eval-")
    cm = None
    try:
        for k, (im, mk) in enumerate(pp):
            res = execute(plan(im, model, replace(opts, prefix="img%05d" % k), tmp), cancel=cancel)
            pds = gdal.Open(res.class_raster)
            mds = gdal.Open(mk)
            if (pds.RasterXSize, pds.RasterYSize) != (mds.RasterXSize, mds.RasterYSize):
                raise InputError("mask %s is %dx%d but its image is %dx%d" % (
                    os.path.basename(mk), mds.RasterXSize, mds.RasterYSize, pds.RasterXSize, pds.RasterYSize))
            pred = pds.GetRasterBand(1).ReadAsArray()
            truth = mds.GetRasterBand(1).ReadAsArray()
            pds = mds = None
            c = confusion(pred, truth, info.n_classes)
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
