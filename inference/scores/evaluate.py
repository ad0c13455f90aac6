"""Scoring a model through the engine: its class rasters against masks, image by image."""
from __future__ import annotations

import glob
import os
import shutil
import tempfile
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

import numpy as np
from osgeo import gdal

from ..errors import InputError
from ..run.execute import execute
from .metrics import confusion, metrics
from ..model.opened import open_model
from ..run.options import SegmentOptions
from ..run.planning import plan

_EXT = (".tif", ".tiff", ".vrt", ".jp2", ".img")
_MASK_EXT = _EXT + (".png",)    # (masks need no georeferencing: the usual 0/255 PNGs)


def pairs(images_dir: str, masks_dir: str) -> List[Tuple[str, str]]:
    """Image/mask pairs matched by file name (the same stem; a mask may add _mask)."""
    if not os.path.isdir(images_dir):
        raise InputError("images folder not found: %s" % images_dir)
    if not os.path.isdir(masks_dir):
        raise InputError("masks folder not found: %s" % masks_dir)
    masks = {}
    for m in glob.glob(os.path.join(masks_dir, "*")):
        if m.lower().endswith(_MASK_EXT):
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


# What a mask's 255 was taken as (read_mask), as a note: % (how many masks, their names).
ASSUMED = {"0/255": "255 read as class 1 in %d 0/255 mask(s), the usual PNG/TIFF masks of a binary model: %s",
           "ignore": "255 not scored in %d mask(s), the usual ignore value (the model has no class 255): %s"}


def read_mask(path: str, n: int, binary: bool) -> Tuple[np.ndarray, np.ndarray, Optional[str]]:
    """A mask's labels, where they count, and what was assumed (a key of :data:`ASSUMED`, or None):
    its declared no-data value is not scored; a binary model's 0/255 mask (the usual PNG/TIFF
    mask) is read as 0/1; 255 where the mask has other classes is the usual "ignore" value.  Any
    other value the model has no class for is an error (it would be dropped silently)."""
    try:
        ds = gdal.Open(path)
        band = ds.GetRasterBand(1)
        truth = band.ReadAsArray()
        nodata = band.GetNoDataValue()
    except (RuntimeError, AttributeError) as e:
        raise InputError("cannot read the mask %s: %s" % (path, str(e).strip().splitlines()[0] if str(e).strip()
                                                          else "not a raster GDAL reads")) from None
    ds = band = None
    if truth is None or not np.issubdtype(truth.dtype, np.integer):
        raise InputError("the mask %s is not of whole class ids (%s): give masks of integers"
                         % (path, "unreadable" if truth is None else truth.dtype))
    valid = np.ones(truth.shape, bool) if nodata is None else truth != nodata
    values = set(np.unique(truth[valid]).tolist())
    assumed = None
    if binary and n == 2 and 255 in values and values <= {0, 255}:
        truth = np.where(truth == 255, 1, truth).astype(truth.dtype)
        values, assumed = {1 if v == 255 else v for v in values}, "0/255"
    elif 255 in values and n <= 255:
        valid &= truth != 255
        values.discard(255)
        assumed = "ignore"
    bad = sorted(v for v in values if v < 0 or v >= n)
    if bad:
        raise InputError("the mask %s has the values %s, but the model's classes are 0..%d: declare the mask's "
                         "no-data value, or give masks of the model's class ids"
                         % (path, ", ".join(str(v) for v in bad[:8]), n - 1))
    return truth, valid, assumed


def _notes(assumed: Dict[str, List[str]]) -> List[str]:
    """One note per kind of assumption, naming up to three masks."""
    return [ASSUMED[kind] % (len(names), ", ".join(names[:3]) + (", ..." if len(names) > 3 else ""))
            for kind, names in assumed.items()]


def evaluate(model, images_dir: str, masks_dir: str, opts: Optional[SegmentOptions] = None,
             progress=None, cancel=None, on_image=None) -> Dict[str, object]:
    """Run the engine on every image with a mask (one model, one network session) and score
    the class rasters: :func:`~inference.scores.metrics.metrics` of the summed confusion matrix (over the
    pixels each mask scores: :func:`read_mask`).  ``notes``: what was assumed of the masks."""
    opts = replace(opts or SegmentOptions(), polygons=False, confidence=False, overwrite=True)
    pp = pairs(images_dir, masks_dir)
    model = open_model(model)
    info = model.info
    binary = info.task == "binary"
    tmp = tempfile.mkdtemp(prefix="tm-eval-")
    cm, assumed = None, {}
    try:
        for k, (im, mk) in enumerate(pp):
            truth, valid, kind = read_mask(mk, info.n_classes, binary)
            if kind:
                assumed.setdefault(kind, []).append(os.path.basename(mk))
            res = execute(plan(im, model, replace(opts, prefix="img%05d" % k), tmp), cancel=cancel)
            pds = gdal.Open(res.class_raster)
            if (pds.RasterXSize, pds.RasterYSize) != (truth.shape[1], truth.shape[0]):
                raise InputError("mask %s is %dx%d but its image is %dx%d" % (
                    os.path.basename(mk), truth.shape[1], truth.shape[0], pds.RasterXSize, pds.RasterYSize))
            pred = pds.GetRasterBand(1).ReadAsArray()
            pds = None
            c = confusion(pred, truth, info.n_classes, valid)
            cm = c if cm is None else cm + c
            if on_image:
                on_image(im, c)
            if progress:
                progress((k + 1) / len(pp), os.path.basename(im))
            for f in os.listdir(tmp):
                os.remove(os.path.join(tmp, f))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = metrics(cm, info.class_names(), binary)
    out["images"] = len(pp)
    out["model"] = info.name
    out["notes"] = _notes(assumed)
    return out
