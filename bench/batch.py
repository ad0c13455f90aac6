"""Batch benchmark: the same jobs with 1 and with N Dask workers on this machine -- the speed-up,
and whether the outputs are the same (checksums of every class raster).

    .venv/bin/python -m bench.batch --jobs 8 --size 1024 --workers 2 [--model tailings]

Generates ``jobs`` rasters (``bench.engine.generate``: 4 bands, smooth noise), runs the batch with
1 worker and with ``workers`` (each engine with its share of the cores), each in a fresh folder,
and prints the times, the speed-up and one JSON line.  Figures only: nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import tempfile
import time

from osgeo import gdal

from .engine import generate


def _checksums(out: str, jobs) -> dict:
    got = {}
    for fac, year in jobs:
        ds = gdal.Open(os.path.join(out, fac, year, "%s_%s_classes.tif" % (fac, year)))
        got[(fac, year)] = hashlib.sha256(ds.ReadAsArray().tobytes()).hexdigest()
        ds = None
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default="tailings")
    ap.add_argument("--keep", help="folder to keep the rasters and outputs in")
    a = ap.parse_args()
    from inference import SegmentOptions
    from inference.batch import plan_batch, run_batch
    d = a.keep or tempfile.mkdtemp(prefix="tm-bench-batch-")
    os.makedirs(os.path.join(d, "scenes"), exist_ok=True)
    jobs = [("F%02d" % (k // 2), str(2019 + k % 2)) for k in range(a.jobs)]
    t = time.time()
    with open(os.path.join(d, "jobs.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["facility", "year", "raster"])
        for k, (fac, year) in enumerate(jobs):
            p = os.path.join(d, "scenes", "%s_%s.tif" % (fac, year))
            if not os.path.exists(p):
                generate(p, a.size, seed=k)
            w.writerow([fac, year, p])
    print("jobs: %d rasters of %d x %d x 4, generated in %.1f s" % (a.jobs, a.size, a.size, time.time() - t))
    opts = SegmentOptions(device="cpu", cloud_mask="off", tta=1, scales=(1.0,))
    times, sums = {}, {}
    for workers in (1, a.workers):
        out = os.path.join(d, "out_%d" % workers)
        shutil.rmtree(out, ignore_errors=True)
        t = time.time()
        res = run_batch(plan_batch(os.path.join(d, "jobs.csv"), a.model, out, opts, workers=workers, changes=False))
        times[workers] = time.time() - t
        sums[workers] = _checksums(out, jobs)
        print("%d worker%s: %.1f s for %d jobs (%d done, %d failed)" % (
            workers, "" if workers == 1 else "s", times[workers], a.jobs, res.summary["done"], res.summary["failed"]))
    same = sums[1] == sums[a.workers]
    speedup = times[1] / times[a.workers]
    print("speed-up with %d workers: %.2fx; class rasters identical: %s" % (a.workers, speedup, same))
    print(json.dumps({"jobs": a.jobs, "size": a.size, "workers": a.workers, "seconds_1": round(times[1], 2),
                      "seconds_n": round(times[a.workers], 2), "speedup": round(speedup, 3), "identical": same,
                      "cores": os.cpu_count()}))
    if not a.keep:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
