"""Memory per strip against the raster's width: RSS after each strip of tiles.

    .venv/bin/python -m bench.width_memory                      # widths 10000 and 100000, 3000 rows
    .venv/bin/python -m bench.width_memory --widths 100000 --height 6000

For each width, a 3-band uint16 GeoTIFF (tiled, DEFLATE; mostly constant with a coarse pattern,
so that GDAL writes and reads it quickly; kept in <tmp or --keep>/tm-bench-cache) is segmented
by the I/O-bound case's network (``bench.engine.io_model``: a 1 x 1 convolution, tile 512) in
a child process (its own memory): ``plan`` then ``execute`` as the command line runs them, with
a progress callback that reads the process's VmRSS each time a strip of tiles is complete.
Prints one line per strip (time, RSS, growth since the first strip) and a JSON summary per
width.  Figures only: nothing here asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from osgeo import gdal, osr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
gdal.UseExceptions()


def generate(path: str, width: int, height: int) -> None:
    """A width x height x 3 uint16 raster: 1200 plus a 256 px checkerboard of +-300 and bright
    discs every 2048 px (band 1), written in strips to ``path``.part, renamed when complete."""
    tmp = path + ".part"
    ds = gdal.GetDriverByName("GTiff").Create(tmp, width, height, 3, gdal.GDT_UInt16, options=[
        "TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER", "NUM_THREADS=ALL_CPUS"])
    ds.SetGeoTransform((300000.0, 10.0, 0, 7800000.0, 0, -10.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32723)
    ds.SetProjection(srs.ExportToWkt())
    for i, d in enumerate(("B4", "B3", "B2")):
        ds.GetRasterBand(i + 1).SetDescription(d)
        ds.GetRasterBand(i + 1).SetNoDataValue(0)
    xs = np.arange(width)
    for y in range(0, height, 512):
        h = min(512, height - y)
        ys = np.arange(y, y + h)[:, None]
        checker = ((ys // 256 + xs[None] // 256) % 2).astype(np.int32)
        base = (900 + 600 * checker).astype(np.uint16)
        disc = ((ys % 2048 - 1024) ** 2 + (xs[None] % 2048 - 1024) ** 2) < 300 ** 2
        for b in range(3):
            band = base.copy()
            if b == 0:
                band[disc] = 5000
            ds.GetRasterBand(b + 1).WriteArray(band, 0, y)
    ds.FlushCache()
    ds = None
    os.replace(tmp, path)


CHILD = r"""
import json, os, sys, time
sys.path.insert(0, %(root)r)
from osgeo import gdal
from inference.run.gdal_settings import bound_block_cache
from inference.run.planning import plan
from inference.run.execute import execute
from inference.run.options import SegmentOptions
bound_block_cache()

def rss(key="VmRSS"):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":")) / 1024.0

p = plan(%(raster)r, %(model)r, SegmentOptions(tta=1, scales=(1.0,), overwrite=True), %(out)r)
from inference.tiling import positions
per_strip = len(positions(p.work_size[0], p.tile_size, p.overlap))
t0, seen = time.time(), set()
def progress(f, message):
    if message.startswith("tile "):
        done = int(message.split()[1])
        if done %% per_strip == 0 and done not in seen:
            seen.add(done)
            print(json.dumps({"strip": done // per_strip, "s": round(time.time() - t0, 1),
                              "rss_mb": round(rss(), 1), "gdal_cache_mb": round(gdal.GetCacheUsed() / 2 ** 20, 1)}),
                  flush=True)
res = execute(p, progress)
est = getattr(p, "estimate", None)   # (inference.run.sizing's, where the plan has one)
print(json.dumps({"end": True, "s": round(time.time() - t0, 1), "rss_mb": round(rss(), 1),
                  "peak_mb": round(rss("VmHWM"), 1),
                  "estimate_mb": est and round(est.peak_bytes / 2 ** 20, 1),
                  "estimate_s": est and round(est.seconds, 1)}), flush=True)
"""


def measure(raster: str, model: str, out: str) -> dict:
    code = CHILD % {"root": ROOT, "raster": raster, "model": model, "out": out}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    strips, end = [], None
    for line in proc.stdout:
        d = json.loads(line)
        if d.get("end"):
            end = d
            continue
        strips.append(d)
        print("  strip %3d  %6.1f s  RSS %7.1f MB  (+%.1f since strip 1; GDAL block cache %.1f MB)"
              % (d["strip"], d["s"], d["rss_mb"], d["rss_mb"] - strips[0]["rss_mb"], d["gdal_cache_mb"]), flush=True)
    if proc.wait() != 0:
        raise SystemExit("the run failed (%d)" % proc.returncode)
    grow = (strips[-1]["rss_mb"] - strips[0]["rss_mb"]) / max(1, len(strips) - 1) if strips else 0.0
    return {"strips": len(strips), "first_mb": strips[0]["rss_mb"] if strips else None,
            "last_mb": strips[-1]["rss_mb"] if strips else None, "mb_per_strip": round(grow, 2),
            "end_mb": end and end["rss_mb"], "peak_mb": end and end["peak_mb"],
            "estimated_peak_mb": end and end["estimate_mb"], "seconds": end and end["s"],
            "estimated_s": end and end["estimate_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="10000,100000")
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--keep", help="folder for the generated rasters (default: the temporary folder)")
    a = ap.parse_args()
    sys.path.insert(0, ROOT)
    from bench.engine import io_model
    cache = os.path.join(a.keep or tempfile.gettempdir(), "tm-bench-cache")
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tm-width-") as work:
        model = io_model(os.path.join(work, "io_bound.onnx"))
        for width in (int(w) for w in a.widths.split(",")):
            raster = os.path.join(cache, "width_%dx%d.tif" % (width, a.height))
            if not os.path.exists(raster):
                generate(raster, width, a.height)
            print("width %d, height %d:" % (width, a.height), flush=True)
            res = measure(raster, model, os.path.join(work, "out_%d" % width))
            print(json.dumps(dict(res, width=width, height=a.height)), flush=True)


if __name__ == "__main__":
    main()
