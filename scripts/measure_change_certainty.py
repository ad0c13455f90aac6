"""How often a change map calls change certain where nothing changed, and whether real change stays
certain (docs/benchmarks.md, "Change that is real").

1. Pairs of overlapping tiles of one site of the shared data (the same 2021 composite, cut twice):
   each segmented on its own with the shipped model, then compared (``python -m inference change``):
   every change they report is false; the share called *certain* should be small.
2. A pond removed: a tile, and the same tile with its largest labelled pond filled in from its
   surroundings (GDAL's FillNodata on each band): the share of the pond's lost tailings that is
   certain change should be large.

    .venv/bin/python scripts/measure_change_certainty.py [--data DIR] [--pairs N] [--model M]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from osgeo import gdal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "tailings_s2_brazil")
sys.path.insert(0, ROOT)
from inference.grid import Grid  # noqa: E402


def engine(*args):
    r = subprocess.run([sys.executable, "-m", "inference"] + list(args), cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("inference %s failed: %s" % (args[0], (r.stderr or r.stdout).strip()[-400:]))
    return r.stdout


def bounds(path):
    return Grid.of_dataset(gdal.Open(path)).bounds


def overlap_share(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]))


def pairs(data, n):
    with open(os.path.join(data, "sites.csv"), newline="") as fh:
        site = {r["tile"]: r["site"] for r in csv.DictReader(fh)}
    tiles = sorted(site)
    box = {t: bounds(os.path.join(data, "images", t + ".tif")) for t in tiles}
    out = []
    for i, a in enumerate(tiles):
        for b in tiles[i + 1:]:
            if site[a] == site[b]:
                s = overlap_share(box[a], box[b])
                if s > 0.05:
                    out.append((s, a, b))
    out.sort(reverse=True)
    # the largest overlaps and the smallest (tiles that overlap at their edges), alternately
    picked, lo, hi = [], 0, len(out) - 1
    while lo <= hi and len(picked) < n:
        picked.append(out[lo])
        if lo != hi and len(picked) < n:
            picked.append(out[hi])
        lo, hi = lo + 1, hi - 1
    return picked


def segment(image, out, stem, model, date):
    if not os.path.exists(os.path.join(out, stem + "_classes.tif")):
        engine("segment", image, "--out", out, "--prefix", stem, "--model", model, "--date", date, "--quiet",
               "--no-ood-check", "--no-polygons")
    return os.path.join(out, stem + "_classes.tif")


def change(a, b, out, stem):
    out = os.path.join(out, stem)
    engine("change", a, b, "--out", out, "--years", "2021,2022", "--quiet", "--overwrite")
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as fh:
        return json.load(fh)


def hectares(summary, uncertain):
    """Compared, and changed (certain or uncertain) hectares of a change summary."""
    return (float(summary["compared_area_ha"]),
            float(summary["uncertain_change_ha" if uncertain else "certain_change_ha"]))


def removed_pond(data, tile, work):
    """The tile with its largest labelled pond replaced by land: the pixels of the same shape from the
    nearest place of the tile holding no labelled tailings (as a rehabilitated pond), and that pond."""
    from scipy import ndimage
    mask = gdal.Open(os.path.join(data, "masks", tile + ".tif")).ReadAsArray()
    lab, n = ndimage.label(mask == 1)
    if n == 0:
        return None, None
    pond = lab == (1 + int(np.bincount(lab.ravel())[1:].argmax()))
    grown = ndimage.binary_dilation(pond, iterations=3)
    ys, xs = np.nonzero(grown)
    H, W = mask.shape
    land = ndimage.binary_erosion(mask == 0, iterations=3)
    best = None
    for dy in range(-H, H, 8):
        for dx in range(-W, W, 8):
            y2, x2 = ys + dy, xs + dx
            if y2.min() < 0 or x2.min() < 0 or y2.max() >= H or x2.max() >= W or not land[y2, x2].all():
                continue
            d = dx * dx + dy * dy
            if best is None or d < best[0]:
                best = (d, dy, dx)
    if best is None:
        return None, None
    _, dy, dx = best
    src = gdal.Open(os.path.join(data, "images", tile + ".tif"))
    path = os.path.join(work, tile + "_nopond.tif")
    ds = gdal.GetDriverByName("GTiff").CreateCopy(path, src)
    for k in range(1, ds.RasterCount + 1):
        band = ds.GetRasterBand(k)
        a = band.ReadAsArray()
        a[ys, xs] = a[ys + dy, xs + dx]
        band.WriteArray(a)
    ds = src = None
    return path, pond


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--ponds", type=int, default=4, help="tiles whose largest pond is removed")
    ap.add_argument("--model", default="tailings")
    ap.add_argument("--work", help="keep the runs here (default: a temporary folder)")
    a = ap.parse_args(argv)
    work = a.work or tempfile.mkdtemp(prefix="tm-certainty-")
    os.makedirs(work, exist_ok=True)
    images = os.path.join(a.data, "images")
    print("overlapping runs of the same imagery (all change is false):")
    worst = 0.0
    for share, t1, t2 in pairs(a.data, a.pairs):
        c1 = segment(os.path.join(images, t1 + ".tif"), work, t1, a.model, "2021-07-01")
        c2 = segment(os.path.join(images, t2 + ".tif"), work, t2, a.model, "2022-07-01")
        s = change(c1, c2, work, "chg_%s_%s" % (t1, t2))
        compared, certain = hectares(s, False)
        _, unsure = hectares(s, True)
        pc, pu = 100 * certain / max(compared, 1e-9), 100 * unsure / max(compared, 1e-9)
        worst = max(worst, pc)
        print("  %s + %s (%.0f %% overlap): compared %.1f ha, certain change %.2f %%, uncertain %.2f %%"
              % (t1, t2, 100 * share, compared, pc, pu))
    print("  largest certain change: %.2f %% of the compared ground" % worst)
    print("a pond removed (real change):")
    with open(os.path.join(a.data, "sites.csv"), newline="") as fh:
        tiles = [r["tile"] for r in csv.DictReader(fh)]
    done = 0
    for t in tiles:
        if done >= a.ponds:
            break
        path, pond = removed_pond(a.data, t, work)
        if path is None or pond.sum() < 400:
            continue
        c1 = segment(os.path.join(images, t + ".tif"), work, t, a.model, "2021-07-01")
        if (gdal.Open(c1).ReadAsArray()[pond] == 1).mean() < 0.5:
            continue          # (a pond the model does not find cannot be lost)
        c2 = segment(path, work, t + "_nopond", a.model, "2022-07-01")
        change(c1, c2, work, "chg_%s_nopond" % t)
        code = gdal.Open(os.path.join(work, "chg_%s_nopond" % t, "change_transitions.tif"))
        tr = code.ReadAsArray()
        code = None
        lost = 1 * 2 + 0            # tailings -> background: from x 2 + to (binary)
        lost_unsure = 2 * 2 + lost  # uncertain: 2 x 2 + from x 2 + to
        done += 1
        seen = pond & ((tr == lost) | (tr == lost_unsure))
        certain = pond & (tr == lost)
        print("  %s: pond %d px, found lost %d px, of which certain %.1f %%"
              % (t, pond.sum(), seen.sum(), 100 * certain.sum() / max(seen.sum(), 1)))
    if a.work is None:
        print("(runs in %s)" % work)


if __name__ == "__main__":
    main()
