"""Statistics of a model's training data, stored in its metadata, for the engine's check of how
unlike them a scene is (``inference.run.ood``); and that check measured on other imagery.

    python -m training ood-stats models/tailings.onnx --feature TENSOR [--data DIR] --out MODEL.onnx
    python -m training ood-score MODEL.onnx RASTER [RASTER ...]

The tiles are read exactly as the engine reads a scene (its plan, its strip reader: band mapping,
radiometry, normalisation) and run through the network with the encoder tensor as an extra
output; each tile gives the mean of its features and a sample of its pixels' reflectance.
Only the training sites of the model's own split are used, so the validation sites stay a test.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from typing import Dict, List, Optional, Sequence

import numpy as np

from .engine import SegmentOptions, open_model, plan
from .engine import ood, strips, work_grid
from .engine import positions, rescale

PIXELS_PER_TILE = 4000


def tile_samples(model, raster: str, feature: str, rng: np.random.Generator, tmp: str):
    """``(feature means (n, C), reflectance samples [(bands, k)], boxes)`` of a raster's tiles
    (reflectance: what the network reads, raw x scale + offset, whatever the raster stores)."""
    p = plan(raster, model, SegmentOptions(device="cpu", threads=None, cloud_mask="off", ood_check=False))
    session = model.session("cpu", None, (feature,))
    grid = work_grid.open_grid(p, tmp)
    read = strips.StripReader(p, grid)
    T, O = p.tile_size, p.overlap
    xs, ys = positions(grid.width, T, O), positions(grid.height, T, O)
    th, tw = min(T, grid.height), min(T, grid.width)
    vectors, pixels, boxes = [], [], []
    mean = np.asarray(model.info.mean, np.float32).reshape(-1, 1)
    std = np.asarray(model.info.std, np.float32).reshape(-1, 1)
    for y in ys:
        norm, valid, _ = read(y)
        for x in xs:
            v = valid[:, x:x + tw]
            if v.mean() < ood.MIN_VALID_SHARE:   # mostly no data: not a tile to learn what the data look like
                continue
            tile = np.zeros((1, norm.shape[0], T, T), np.float32)
            tile[0, :, :th, :tw] = norm[:, :, x:x + tw]
            outs = session.ort.run(None, {session.input_name: tile})
            vectors.append(ood.tile_means(np.asarray(outs[1], np.float32))[0])
            phys = norm[:, :, x:x + tw][:, v] * std + mean   # (normalised = (reflectance - mean) / std)
            take = rng.choice(phys.shape[1], size=min(PIXELS_PER_TILE, phys.shape[1]), replace=False)
            pixels.append(phys[:, take])
            boxes.append((x, y, tw, th))
    grid.ds = None
    return np.asarray(vectors, np.float32), pixels, boxes


def _images(data_dir: str, sites: Optional[Sequence[str]]) -> List[str]:
    from .data import read_sites
    site_of = read_sites(data_dir)
    folder = os.path.join(data_dir, "images")
    names = sorted(f for f in os.listdir(folder) if f.endswith(".tif"))
    return [os.path.join(folder, f) for f in names if sites is None or site_of.get(f[:-4], f[:-4]) in sites]


def compute(model_path: str, feature: str, data_dir: str, sites: Optional[Sequence[str]] = None, seed: int = 0):
    """The ``ood`` metadata from the tiles of ``sites`` (default: the model's training sites)."""
    model = open_model(model_path)
    if sites is None:
        sites = (model.info.extra.get("split") or {}).get("train_sites")
    from .data import read_sites
    site_of = read_sites(data_dir)
    rng = np.random.default_rng(seed)
    tmp = tempfile.mkdtemp(prefix="tm-ood-")
    vecs, pix, groups = [], [], []
    try:
        for path in _images(data_dir, sites):
            v, p, _ = tile_samples(model, path, feature, rng, tmp)
            vecs.append(v)
            pix.extend(p)
            stem = os.path.splitext(os.path.basename(path))[0]
            groups += [site_of.get(stem, stem)] * len(v)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stats = ood.fit(np.concatenate(vecs), pix, feature, groups)
    stats["sites"] = list(sites) if sites is not None else "all"
    return stats


def compute_replay(model_path: str, data_dir: str, sites: Optional[Sequence[str]] = None, seed: int = 0) -> Dict:
    """The ``replay`` metadata (``veto``): the training tiles' stride-32 locations, read as the engine
    reads them (at each of the model's default scales), and how much tailings each holds (an
    EffUNet model of ours)."""
    from osgeo import gdal
    from . import veto
    from .from_onnx import load_network
    net, _, info = load_network(model_path)
    model = open_model(model_path)
    if sites is None:
        sites = (info.extra.get("split") or {}).get("train_sites")
    tmp = tempfile.mkdtemp(prefix="tm-replay-")
    vecs, shares = [], []
    try:
        for path in _images(data_dir, sites):
            p = plan(path, model, SegmentOptions(device="cpu", threads=None, cloud_mask="off", ood_check=False))
            grid = work_grid.open_grid(p, tmp)
            img, valid, _ = strips.StripReader(p, grid).window(0, 0, grid.width, grid.height)
            grid.ds = None
            mask = gdal.Open(path.replace(os.sep + "images" + os.sep, os.sep + "masks" + os.sep)).ReadAsArray()
            mask = np.where(valid, mask, 255).astype(np.uint8)
            for s in info.tta_scales:   # the scales the engine shows the network the tile at
                im = img if s == 1.0 else rescale(img, s)
                mk = mask if s == 1.0 else _mask_at(mask, s)
                v = veto.locations(net, im)
                hw = ((im.shape[1] + 31) // 32, (im.shape[2] + 31) // 32)
                pos, known = veto.location_shares(mk, hw)
                keep = known >= 0.5
                vecs.append(v[keep])
                shares.append(pos[keep])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stats = veto.replay_stats(np.concatenate(vecs), np.concatenate(shares), seed)
    stats["sites"] = list(sites) if sites is not None else "all"
    return stats


def _mask_at(mask: np.ndarray, scale: float) -> np.ndarray:
    """A label mask at a coarser scale (nearest: every 2nd, 4th... pixel)."""
    k = int(round(1.0 / scale))
    return np.ascontiguousarray(mask[::k, ::k])


def write(model_path: str, stats: Dict, out: str, replay: Optional[Dict] = None) -> None:
    """A copy of the model with ``stats`` (and ``replay``) in its metadata (weights and graph unchanged)."""
    import onnx
    from .engine import write_metadata
    info = open_model(model_path).info
    proto = onnx.load(model_path)
    extra = dict(info.extra, ood=stats)
    if replay is not None:
        extra["replay"] = replay
    write_metadata(proto, replace(info, extra=extra))
    onnx.save(proto, out)


def score(model_path: str, rasters: Sequence[str], seed: int = 0) -> Dict[str, Dict]:
    """Per raster: tile scores (median, share above the threshold) and out-of-range share."""
    model = open_model(model_path)
    st = ood.OodStats.from_metadata(model.info.extra.get("ood"), model.info.scale, model.info.offset)
    if st is None:
        raise ValueError("%s carries no ood statistics" % model_path)
    rng = np.random.default_rng(seed)
    tmp = tempfile.mkdtemp(prefix="tm-ood-")
    out = {}
    try:
        for r in rasters:
            v, pix, _ = tile_samples(model, r, st.feature, rng, tmp)
            if not len(v):
                continue
            s = st.scores(v)
            oor = [float(((q < st.low[:, None]) | (q > st.high[:, None])).any(axis=0).mean()) for q in pix]
            out[r] = {"tiles": int(len(s)), "median_score": float(np.median(s)),
                      "share_above_threshold": float((s > st.threshold).mean()), "scores": [round(float(x), 3) for x in s],
                      "out_of_range": float(np.mean(oor))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


LIKENESS_K = 5
LIKENESS_QUANTILE = 98.0   # the share (%) of the training sites' true tailings area not marked for review


def compute_likeness(model_path: str, data_dir: str, sites: Optional[Sequence[str]] = None) -> Dict:
    """The ``likeness`` metadata (``inference.run.likeness``): the engine run on each training tile with
    the distances unscaled; each flagged region's distance weighted by the true tailings it holds;
    the threshold is their ``LIKENESS_QUANTILE`` % quantile (the rest of the training sites' true
    tailings area is not marked).  Needs the model's ``replay`` and ``ood`` metadata."""
    from osgeo import gdal, ogr
    from .engine import segment
    from .engine import fids_on_grid
    info = open_model(model_path).info
    if not info.extra.get("replay") or not info.extra.get("ood"):
        raise ValueError("%s carries no replay or ood metadata: run ood-stats first" % model_path)
    if sites is None:
        sites = (info.extra.get("split") or {}).get("train_sites")
    tmp = tempfile.mkdtemp(prefix="tm-likeness-")
    dist, weight = [], []
    try:
        raw = os.path.join(tmp, "raw.onnx")
        write_extra(model_path, {"likeness": {"k": LIKENESS_K, "threshold": 1.0}}, raw)
        for i, path in enumerate(_images(data_dir, sites)):
            res = segment(path, raw, os.path.join(tmp, "run%d" % i), SegmentOptions(device="cpu", prefix="t"))
            mask = gdal.Open(path.replace(os.sep + "images" + os.sep, os.sep + "masks" + os.sep)).ReadAsArray()
            ds = ogr.Open(res.polygons)
            layer = ds.GetLayerByName(res.layer_name)
            fids = fids_on_grid(res.class_raster, layer)
            true = np.bincount(fids[mask == 1].ravel(), minlength=int(fids.max()) + 1)
            for f in layer:
                d = f.GetField("tailings_distance")
                if d is not None and f.GetFID() < len(true) and true[f.GetFID()]:
                    dist.append(float(d))
                    weight.append(float(true[f.GetFID()]))
            layer = ds = None
            shutil.rmtree(os.path.join(tmp, "run%d" % i), ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not dist:
        raise ValueError("no flagged region holds true tailings on the training tiles: nothing to calibrate")
    d, w = np.asarray(dist), np.asarray(weight)
    order = np.argsort(d)
    cum = np.cumsum(w[order]) / w.sum()
    thr = float(d[order][min(len(d) - 1, int(np.searchsorted(cum, LIKENESS_QUANTILE / 100.0)))])
    return {"k": LIKENESS_K, "threshold": round(thr, 4), "quantile": LIKENESS_QUANTILE,
            "regions": int(len(d)), "calibration": "regions flagged on the training tiles, weighted by their true "
            "tailings", "sites": list(sites) if sites is not None else "all"}


def write_extra(model_path: str, entries: Dict, out: str) -> None:
    """A copy of the model with ``entries`` added to its metadata's extra (weights and graph unchanged)."""
    import onnx
    from .engine import write_metadata
    info = open_model(model_path).info
    proto = onnx.load(model_path)
    write_metadata(proto, replace(info, extra=dict(info.extra, **entries)))
    onnx.save(proto, out)
