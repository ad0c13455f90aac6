"""Training in a stock QGIS: Debian's own Python (/usr/bin/python3), no venv, nothing but the plugin and
the folder its dependency dialog installs into.

``python3 scripts/check_stock_qgis.py install FOLDER`` (run by any Python: it drives
/usr/bin/python3's pip) installs into FOLDER exactly as the dialog does: onnxruntime by its rounds,
then what training needs (torch==2.13.0 CPU, onnx, what they pull; numpy pinned), then the
dialog's import check.  ``/usr/bin/python3 -s scripts/check_stock_qgis.py train FOLDER WORKDIR``
then, with only the system's packages and FOLDER (the plugin's path rule), trains a tiny model with
the plugin's training bridge from the shipped network, runs it with the engine, improves it from an
edit of its own output (deleted regions, as "improve from my edits" does), and runs that too.  Then
the review path: the shipped network without its veto (its veto leaves synthetic ground unflagged)
runs on bright squares, the run's regions get decisions as the review queue stores them (PyQGIS
headless: the plugin's ``qgis_glue.review``, one accepted, one rejected, the rest unreviewed, saved
in the GeoPackage), a model is improved from that review (``fit(..., review=True)``, what "Improve
the model from my review" calls) and the engine runs it.  Prints one JSON line of what it measured.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _plugin():
    d = tempfile.mkdtemp(prefix="tm-stock-")
    os.symlink(ROOT, os.path.join(d, "tailings_mapper"))
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") not in (ROOT, os.path.join(ROOT, "scripts"))]
    sys.path.insert(0, d)
    import tailings_mapper   # noqa: F401
    return d


def install(folder: str, python: str) -> int:
    _plugin()
    from tailings_mapper.qgis_glue import dep_resolve, deps
    log = [].append if os.environ.get("QUIET") else (lambda s: print(s, flush=True))
    t0 = time.time()
    if not deps.install(deps.packages_for(False), folder, python=python, log=log):
        print("error: onnxruntime did not install")
        return 1
    t1 = time.time()
    if not dep_resolve.install_training(folder, python=python, log=log):
        print("error: training's packages did not install")
        return 1
    t2 = time.time()
    problem = dep_resolve.verify(folder, ["onnxruntime"] + deps.TRAINING_CHECK, python=python)
    t3 = time.time()
    if problem:
        print("error: the check failed: %s" % problem)
        return 1
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs)
    print(json.dumps({"onnxruntime_s": round(t1 - t0, 1), "training_s": round(t2 - t1, 1),
                      "check_s": round(t3 - t2, 1), "folder_mb": round(size / 2 ** 20)}), flush=True)
    return 0


def _scene(work: str):
    """A 256-pixel Sentinel-2-like raster (the shipped model's bands) and polygons over bright ponds."""
    import numpy as np
    from osgeo import gdal, ogr, osr
    rng = np.random.default_rng(0)
    n, size, px, x0, y0 = 12, 256, 10.0, 500000.0, 7700000.0
    img = (np.full((n, size, size), 1500.0) + rng.normal(0, 80, (n, size, size))).astype(np.uint16)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32723)
    vec = ogr.GetDriverByName("GPKG").CreateDataSource(os.path.join(work, "labels.gpkg"))
    lyr = vec.CreateLayer("labels", srs, ogr.wkbPolygon)
    for k in range(5):
        y, x = (int(v) for v in rng.integers(10, size - 50, 2))
        img[:, y:y + 40, x:x + 40] = 400
        img[1:4, y:y + 40, x:x + 40] = 3000
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(ogr.CreateGeometryFromWkt("POLYGON((%r %r,%r %r,%r %r,%r %r,%r %r))" % (
            x0 + x * px, y0 - y * px, x0 + (x + 40) * px, y0 - y * px, x0 + (x + 40) * px, y0 - (y + 40) * px,
            x0 + x * px, y0 - (y + 40) * px, x0 + x * px, y0 - y * px)))
        lyr.CreateFeature(f)
    vec = None
    path = os.path.join(work, "scene.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, size, size, n, gdal.GDT_UInt16)
    ds.SetGeoTransform((x0, px, 0, y0, 0, -px))
    ds.SetProjection(srs.ExportToWkt())
    names = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]
    for i in range(n):
        ds.GetRasterBand(i + 1).WriteArray(img[i])
        ds.GetRasterBand(i + 1).SetDescription(names[i])
    ds = None
    return path, os.path.join(work, "labels.gpkg")


def train(folder: str, work: str) -> int:
    _plugin()
    from tailings_mapper.qgis_glue import dep_path, deps
    stuck = dep_path.apply(folder)
    if stuck:
        print("error: %s" % stuck[0])
        return 1
    from tailings_mapper.qgis_glue.training_bridge import fit_module
    import numpy
    import sympy
    fit = fit_module()
    from tailings_mapper.inference import SegmentOptions, execute, plan
    from osgeo import ogr
    assert "/usr/lib/python3/dist-packages/" in numpy.__file__, numpy.__file__
    assert sympy.__file__.startswith(os.path.abspath(folder)), sympy.__file__
    raster, labels = _scene(work)
    quiet = dict(chip=128, batch=2, chips_per_epoch=4, register=False, log=lambda *a: None, device="cpu")
    t0 = time.time()
    res = fit.fit([raster], labels, init="tailings", epochs=1, out=os.path.join(work, "mine.onnx"), name="mine",
                  **quiet)
    t1 = time.time()
    run = SegmentOptions(device="cpu", cloud_mask="off", tta=1, scales=(1.0,))
    out = execute(plan(raster, res.path, run, os.path.join(work, "seg")))
    # "Improve from my edits": the run's own regions, one deleted, learnt as a correction.
    edited = os.path.join(work, "edited.gpkg")
    ogr.GetDriverByName("GPKG").CopyDataSource(ogr.Open(out.polygons), edited)
    ds = ogr.Open(edited, 1)
    lyr = ds.GetLayer(0)
    regions = lyr.GetFeatureCount()
    lyr.ResetReading()
    first = lyr.GetNextFeature()
    if first is not None:        # a region deleted
        lyr.DeleteFeature(first.GetFID())
    else:                        # none found: a missed pond drawn
        src = ogr.Open(labels)       # (kept: its layer dies with it)
        pond = src.GetLayer(0).GetNextFeature()
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(pond.GetGeometryRef().Clone())
        lyr.CreateFeature(f)
    ds = None
    t2 = time.time()
    better = fit.fit([raster], edited, init=res.path, corrections_of=out.polygons, epochs=1,
                     out=os.path.join(work, "better.onnx"), name="better", **quiet)
    t3 = time.time()
    again = execute(plan(raster, better.path, run, os.path.join(work, "seg2")))
    reviewed = _review(fit, work, quiet, run)
    import onnx
    import torch
    print(json.dumps({**reviewed, "python": sys.executable, "numpy": numpy.__version__, "torch": torch.__version__,
                      "onnx": onnx.__version__, "sympy": sympy.__version__, "fit_s": round(t1 - t0, 1),
                      "improve_s": round(t3 - t2, 1), "regions": regions, "model": os.path.getsize(res.path),
                      "improved": os.path.getsize(better.path), "classes": again.class_raster,
                      "deps": deps.TRAINING}), flush=True)
    return 0


_APP = []


def _review(fit, work: str, quiet: dict, run) -> dict:
    """The review path (see the module's text): what it found, decided and improved."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp())   # (0700, as Qt wants)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from qgis_helpers import s2_raster
    from qgis.core import QgsApplication, QgsVectorLayer
    from tailings_mapper.inference import execute, plan
    from tailings_mapper.qgis_glue import review as Q
    from tailings_mapper.training.ship_veto import unvetoed
    app = QgsApplication([], False)
    app.initQgis()
    raster = s2_raster(os.path.join(work, "squares.tif"), size=448,
                       squares=((40, 40, 110), (250, 200, 90), (300, 30, 60), (40, 300, 70)))
    base = unvetoed("tailings", os.path.join(work, "network.onnx"))
    first = execute(plan(raster, base, run, os.path.join(work, "rev")))
    lyr = QgsVectorLayer(first.polygons, "run", "ogr")
    order = Q.queue(lyr)
    if len(order) < 2:
        raise SystemExit("error: the run found %d regions; the review needs two" % len(order))
    Q.decide(lyr, order[0], Q.ACCEPTED)
    Q.decide(lyr, order[1], Q.REJECTED)
    progress = Q.progress_text(lyr)
    if not lyr.commitChanges():
        raise SystemExit("error: the decisions were not saved: %s" % lyr.commitErrors())
    saved = Q.tally(QgsVectorLayer(first.polygons, "saved", "ogr"))
    assert saved[Q.ACCEPTED] == 1 and saved[Q.REJECTED] == 1, saved
    t0 = time.time()
    res = fit.fit([raster], first.polygons, init=base, review=True, epochs=1,
                  out=os.path.join(work, "reviewed.onnx"), name="reviewed", **quiet)
    t1 = time.time()
    again = execute(plan(raster, res.path, run, os.path.join(work, "rev2")))
    n = QgsVectorLayer(again.polygons, "again", "ogr").featureCount()
    _APP.append(app)    # (kept, and no exitQgis(): tearing PyQGIS down beside torch crashes at exit)
    return {"review_regions": len(order), "review_progress": progress, "review_improve_s": round(t1 - t0, 1),
            "review_fit": res.info.extra["fit"]["review"], "review_card": "review of the run" in (open(res.card).read() if os.path.isfile(res.card) else res.card),
            "review_regions_after": n}


def main(argv):
    if len(argv) == 3 and argv[0] == "install":
        return install(argv[1], argv[2])
    if len(argv) == 3 and argv[0] == "train":
        return train(argv[1], argv[2])
    print("usage: check_stock_qgis.py install FOLDER PYTHON | train FOLDER WORKDIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
