"""Engine benchmark: throughput, peak memory, and overhead against bare onnxruntime.

    .venv/bin/python -m bench.engine --size 4096            # a 4096 x 4096 x 4 raster
    .venv/bin/python -m bench.engine --size 10980           # a full Sentinel-2 tile
    .venv/bin/python -m bench.engine --size 2048 --height 20000   # narrow and tall (memory vs shape)

Generates a large 4-band uint16 raster (written in strips), then in two separate child
processes (so each one's peak memory is its own): (1) the engine end to end
(``inference.plan`` then ``execute``: read, normalise, infer, blend, write, sieve, polygonise);
(2) the bare onnxruntime session over the same number of tiles and batches, fed from
one preallocated array.  Prints the figures and, last, one JSON line with
``overhead_ratio`` (1 = no overhead), ``peak_rss_mb`` (the engine process) and
``mpx_per_s``.  Figures only: nothing here asserts a time.

    .venv/bin/python -m bench.engine --io-bound                  # 10000 x 10000 x 3, trivial network
    .venv/bin/python -m bench.engine --io-bound --size 5000      # memory against raster size
    .venv/bin/python -m bench.engine --io-bound --size 5000 --height 20000   # ... and height

``--io-bound``: the case where the engine's own work dominates.  A 3-band uint16 GeoTIFF
(tiled, DEFLATE; generated once, kept in <tmp or --keep>/tm-bench-cache) and a network of two
operators (1 x 1 convolution, sigmoid; tile 512, overlap 77 = 15 %) built here; the whole
``python -m inference segment`` process runs as a child (wall time, its own peak RSS), with
``TM_STAGE_TIMES`` set so that the engine reports where its time went per stage
(``inference.output.writing.StageTimes``).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time

import numpy as np
from osgeo import gdal, osr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

gdal.UseExceptions()


def bench_model(path: str, bands=("S2:B04", "S2:B03", "S2:B02"), width: int = 32, depth: int = 6,
                tile: int = 256, overlap: int = 32) -> str:
    """A stand-in CNN (depth 3x3 convolutions, ``width`` channels, ReLU, sigmoid head)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from inference.model.metadata import ClassInfo, ModelInfo
    from inference.model.formats import write_metadata
    rng = np.random.default_rng(1)
    c = len(bands)
    inits, nodes, prev, cin = [], [], "input", c
    for i in range(depth):
        cout = 1 if i == depth - 1 else width
        w = (rng.normal(0, 1, (cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
        inits += [numpy_helper.from_array(w, "w%d" % i), numpy_helper.from_array(np.zeros(cout, np.float32), "b%d" % i)]
        nodes.append(helper.make_node("Conv", [prev, "w%d" % i, "b%d" % i], ["c%d" % i], pads=[1, 1, 1, 1]))
        prev = "c%d" % i
        if i < depth - 1:
            nodes.append(helper.make_node("Relu", [prev], ["r%d" % i]))
            prev = "r%d" % i
        cin = cout
    nodes.append(helper.make_node("Sigmoid", [prev], ["output"]))
    g = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, "H", "W"])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, "H", "W"])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    write_metadata(m, ModelInfo(name="bench", bands=list(bands), gsd_m=10.0, tile_size=tile, tile_overlap=overlap,
                                classes=[ClassInfo(0, "background", "#000000"), ClassInfo(1, "tailings", "#e6550d")],
                                scale=[1e-4] * c, offset=[0.0] * c, mean=[0.1] * c, std=[0.05] * c,
                                threshold=0.5, min_area_ha=1.0))
    onnx.save(m, path)
    return path


def generate(path: str, size: int, seed: int = 0, height: int = 0, bands=("B4", "B3", "B2", "B8")) -> None:
    """A size (wide) x height (default: size) uint16 raster, one band per name in ``bands`` (their
    descriptions; nodata 0): smooth fields of 64 px cells plus pixel noise, tiled and DEFLATE
    compressed, written in strips to ``path``.part, renamed when complete."""
    height = height or size
    drv = gdal.GetDriverByName("GTiff")
    tmp = path + ".part"
    ds = drv.Create(tmp, size, height, len(bands), gdal.GDT_UInt16,
                    options=["TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=2", "BIGTIFF=IF_SAFER",
                             "NUM_THREADS=ALL_CPUS"])
    ds.SetGeoTransform((300000.0, 10.0, 0, 7800000.0, 0, -10.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32723)
    ds.SetProjection(srs.ExportToWkt())
    rng = np.random.default_rng(seed)
    for i, d in enumerate(bands):
        ds.GetRasterBand(i + 1).SetDescription(d)
        ds.GetRasterBand(i + 1).SetNoDataValue(0)
    base = rng.normal(0, 1, (len(bands), height // 64 + 2, size // 64 + 2)).astype(np.float32)
    cols = (np.arange(size) // 64)[None, :]
    for y in range(0, height, 512):
        h = min(512, height - y)
        rows = (np.arange(y, y + h) // 64)[:, None]
        for b in range(len(bands)):
            noise = rng.standard_normal((h, size), dtype=np.float32)
            strip = 1200 + 600 * base[b][rows, cols] + 80 * noise
            ds.GetRasterBand(b + 1).WriteArray(np.clip(strip, 1, 10000).astype(np.uint16), 0, y)
    ds.FlushCache()
    ds = None
    os.replace(tmp, path)


def io_model(path: str, tile: int = 512, overlap: int = 77) -> str:
    """The I/O-bound case's network: a 1 x 1 convolution (the mean of the 3 bands, less 0.4)
    and a sigmoid, with this engine's metadata (binary, threshold 0.5, minimum area 1 ha)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from inference.model.metadata import ClassInfo, ModelInfo
    from inference.model.formats import write_metadata
    bands = ["S2:B04", "S2:B03", "S2:B02"]
    w = numpy_helper.from_array(np.full((1, 3, 1, 1), 1.0 / 3.0, np.float32), "w")
    b = numpy_helper.from_array(np.array([-0.4], np.float32), "b")
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["output"])]
    g = helper.make_graph(nodes, "io_bound", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            ["N", 3, "H", "W"])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, "H", "W"])], [w, b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    write_metadata(m, ModelInfo(name="io_bound", bands=bands, gsd_m=10.0, tile_size=tile, tile_overlap=overlap,
                                classes=[ClassInfo(0, "background", "#000000"), ClassInfo(1, "tailings", "#e6550d")],
                                scale=[1e-4] * 3, offset=[0.0] * 3, mean=[0.1] * 3, std=[0.05] * 3,
                                threshold=0.5, min_area_ha=1.0))
    onnx.save(m, path)
    return path


# The child's own peak: VmHWM read at its exit (exec resets it; os.wait4's ru_maxrss would
# carry over the parent's peak), written to the file named by TM_BENCH_HWM.
_SEGMENT_WRAPPER = """
import os, runpy, sys
def _hwm():
    with open("/proc/self/status") as f:
        kb = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    with open(os.environ["TM_BENCH_HWM"], "w") as f:
        f.write(str(kb))
sys.argv = ["inference"] + sys.argv[1:]
try:
    runpy.run_module("inference", run_name="__main__", alter_sys=True)
finally:
    _hwm()
"""


def segment_process(raster: str, model: str, out: str, stage_file: str) -> dict:
    """``python -m inference segment`` in a child process: wall time, peak RSS, stage times."""
    import subprocess
    import sys
    hwm = stage_file + ".hwm"
    env = dict(os.environ, TM_STAGE_TIMES=stage_file, TM_BENCH_HWM=hwm, PYTHONPATH=ROOT)
    for f in (stage_file, hwm):
        if os.path.exists(f):
            os.remove(f)
    cmd = [sys.executable, "-c", _SEGMENT_WRAPPER, "segment", raster, "--model", model, "--out", out,
           "--overwrite", "--quiet", "--tta", "1", "--scales", "1"]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit("python -m inference segment failed (%d):\n%s%s" % (r.returncode, r.stdout, r.stderr))
    stages = {}
    if os.path.exists(stage_file):
        with open(stage_file) as f:
            stages = json.load(f)
    regions = sum(int(line.split(":")[1].split()[0]) for line in r.stdout.splitlines()
                  if line.startswith("found ") and "regions" in line)
    with open(hwm) as f:
        peak = int(f.read()) / 1024.0
    return {"seconds": wall, "peak_rss_mb": peak, "stages": stages, "regions": regions}


def main_io(args, work: str) -> None:
    size = args.size or 10000
    height = args.height or size
    cache = os.path.join(args.keep or tempfile.gettempdir(), "tm-bench-cache")
    os.makedirs(cache, exist_ok=True)
    raster = os.path.join(cache, "io_%d.tif" % size if height == size else "io_%dx%d.tif" % (size, height))
    t = time.perf_counter()
    if not os.path.exists(raster):
        generate(raster, size, height=height, bands=("B4", "B3", "B2"))
        print("raster: generated in %.1f s" % (time.perf_counter() - t))
    print("raster: %s, %d x %d x 3 uint16 (%.0f MB on disk)" % (raster, size, height, os.path.getsize(raster) / 1e6))
    model = io_model(os.path.join(work, "io_bound.onnx"))
    runs = [segment_process(raster, model, os.path.join(work, "out"), os.path.join(work, "stages.json"))
            for _ in range(args.repeat)]
    best = min(runs, key=lambda r: r["seconds"])
    mpx = size * height / 1e6
    if args.repeat > 1:
        print("runs: %s s" % ", ".join("%.2f" % r["seconds"] for r in runs))
    print("python -m inference segment: %.2f s (%.2f Mpx/s), peak RSS %.0f MB, %d regions"
          % (best["seconds"], mpx / best["seconds"], max(r["peak_rss_mb"] for r in runs), best["regions"]))
    st = dict(best["stages"])
    if st:
        print("where the time goes (s; the stages on the writer thread -- sieve, foreground mask, write --")
        print("run beside the main thread's, so the stages add up to more than the wall time):")
        walls = ["run (wall)", "stream (wall)", "regions (wall)"]
        print("  " + ", ".join("%s %.2f" % (k, st[k]) for k in walls if k in st)
              + ", outside the run (start-up, plan, exit) %.2f" % (best["seconds"] - st.get("run (wall)", 0.0)))
        for k, v in sorted(((k, v) for k, v in st.items() if k not in walls), key=lambda kv: -kv[1]):
            print("  %-22s %6.2f" % (k, v))
    print(json.dumps({"mode": "io_bound", "size": size, "height": height, "wall_s": round(best["seconds"], 2),
                      "mpx_per_s": round(mpx / best["seconds"], 2),
                      "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1), "regions": best["regions"],
                      "stages": {k: round(v, 2) for k, v in st.items()}}))


def _peak_rss_mb() -> float:
    """This process's own peak resident memory (Linux VmHWM, which exec resets), else 0.

    os.wait4's ru_maxrss is not enough on its own: Linux carries the parent's peak over the
    exec into the child's figure, so a parent that generated a large raster would show its own
    peak in both children."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _scales(args):
    return tuple(float(v) for v in args.scales.split(","))


def child_engine(args, raster: str, model: str, out: str) -> dict:
    from inference import SegmentOptions, execute, plan
    from inference.model.runtime import ort_module
    from inference.run.gdal_settings import bound_block_cache
    bound_block_cache()  # as the command line does
    ort_module()   # onnxruntime imported before the clock, as the bare child imports it
    t = time.perf_counter()
    p = plan(raster, model, SegmentOptions(batch=args.batch, device=args.device, threads=args.threads,
                                           overwrite=True, tta=args.tta, scales=_scales(args),
                                           cloud_mask=args.cloud_mask, ood_check=not args.no_ood_check), out)
    res = execute(p)
    return {"seconds": time.perf_counter() - t, "tiles": res.tiles, "device": res.device,
            "regions": sum((s["count"] or 0) for s in res.stats.values()), "hwm_mb": _peak_rss_mb()}


def child_bare(args, model: str) -> dict:
    """The bare session over the same tiles: same count, batch and tile shape, and as many
    passes per tile as the engine makes (test-time augmentation)."""
    from inference import open_model
    from inference.tiling import positions
    os.environ["TM_ORT_SPIN"] = "1"   # onnxruntime's own defaults (spin-waiting: its fastest loop)
    m = open_model(model)
    info, session = m.info, m.session(args.device, args.threads)
    tile, overlap = info.tile_size, info.tile_overlap
    n = len(positions(args.size, tile, overlap)) * len(positions(args.height or args.size, tile, overlap))
    x = np.random.default_rng(0).normal(0, 1, (args.batch, len(info.bands), tile, tile)).astype(np.float32)
    xs = [x if s == 1.0 else np.ascontiguousarray(x[..., :int(tile * s), :int(tile * s)]) for s in _scales(args)]
    sess, name = session.ort, session.input_name
    # No warm-up call: like the engine, the bare loop pays for onnxruntime's first run.
    t = time.perf_counter()
    done = 0
    while done < n:
        k = min(args.batch, n - done)
        for xb in xs:
            for _ in range(args.tta):
                sess.run(None, {name: xb[:k]})
        done += k
    return {"seconds": time.perf_counter() - t, "tiles": n, "device": session.device, "hwm_mb": _peak_rss_mb()}


def _child(conn, fn, args, extra):
    try:
        conn.send(("ok", fn(args, *extra)))
    except BaseException as e:  # reported by the parent, which stops the benchmark
        import traceback
        conn.send(("error", "%s\n%s" % (e, traceback.format_exc()[-2000:])))
    finally:
        conn.close()


def run_child(fn, args, *extra) -> dict:
    """Run one measurement in a fresh process (spawned: its peak RSS, Linux VmHWM, is its own)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args, extra))
    proc.start()
    child.close()
    try:
        status, res = parent.recv()
    except EOFError:
        status, res = "error", "the child process died (exit code %s)" % proc.exitcode
    proc.join()
    if status != "ok":
        raise SystemExit("benchmark child %s failed:\n%s" % (fn.__name__, res))
    res["peak_rss_mb"] = res.pop("hwm_mb", 0.0)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, help="raster side in pixels (default 4096; 10980 = a Sentinel-2 tile; "
                                             "--io-bound: default 10000)")
    ap.add_argument("--io-bound", action="store_true",
                    help="the I/O-bound case: a 3-band raster, a trivial network, the whole command line process")
    ap.add_argument("--height", type=int, help="raster height in pixels when it is not square (--size is the width)")
    ap.add_argument("--model", help="ONNX model (default: the shipped models/tailings.onnx; 'standin': a "
                                     "random-weight CNN built here)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--tta", type=int, default=1, choices=[1, 2, 4, 8],
                    help="test-time augmentation passes (default 1, whatever the model's default: the overhead "
                         "figure compares the engine with the bare session making the same passes)")
    ap.add_argument("--scales", default="1", help="multi-scale inference, e.g. 1,0.5 (default 1; the bare session "
                                                  "runs the same smaller tiles)")
    ap.add_argument("--cloud-mask", default="off", choices=["off", "auto"],
                    help="the engine's cloud mask (default off: the bare loop runs no cloud network; auto runs "
                         "ukis-csmask's when installed, as a user's run does)")
    ap.add_argument("--no-ood-check", action="store_true",
                    help="skip the check against the training data (on by default, as in a user's run)")
    ap.add_argument("--repeat", type=int, default=1, help="alternate engine/bare runs N times, keep the fastest")
    ap.add_argument("--keep", help="folder to keep the generated raster and outputs in")
    args = ap.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="tm-bench-")
    os.makedirs(work, exist_ok=True)
    if args.io_bound:
        return main_io(args, work)
    args.size = args.size or 4096
    height = args.height or args.size
    raster = os.path.join(work, "bench_%d.tif" % args.size if height == args.size
                          else "bench_%dx%d.tif" % (args.size, height))
    t = time.perf_counter()
    if not os.path.exists(raster):
        generate(raster, args.size, height=height)
    print("raster: %d x %d x 4 uint16 (%.0f MB on disk), generated in %.1f s"
          % (args.size, height, os.path.getsize(raster) / 1e6, time.perf_counter() - t))
    shipped = os.path.join(ROOT, "models", "tailings.onnx")
    if args.model == "standin" or (not args.model and not os.path.exists(shipped)):
        model = bench_model(os.path.join(work, "bench.onnx"))
    else:
        model = args.model or shipped
    print("model: %s" % model)
    # Alternate engine and bare runs; the fastest of each is the figure least disturbed by
    # whatever else the machine is doing.
    engs, bares = [], []
    for _ in range(args.repeat):
        engs.append(run_child(child_engine, args, raster, model, os.path.join(work, "out")))
        bares.append(run_child(child_bare, args, model))
    eng = min(engs, key=lambda r: r["seconds"])
    eng["peak_rss_mb"] = max(r["peak_rss_mb"] for r in engs)
    bare = min(bares, key=lambda r: r["seconds"])
    if args.repeat > 1:
        print("engine runs: %s s; bare runs: %s s" % (", ".join("%.1f" % r["seconds"] for r in engs),
                                                    ", ".join("%.1f" % r["seconds"] for r in bares)))
    mpx = args.size * height / 1e6
    ratio = eng["seconds"] / bare["seconds"]
    print("engine end to end: %.1f s, %d tiles, device %s, %d regions" % (eng["seconds"], eng["tiles"],
                                                                          eng["device"], eng["regions"]))
    print("bare onnxruntime:  %.1f s, %d tiles, peak RSS %.0f MB" % (bare["seconds"], bare["tiles"],
                                                                  bare["peak_rss_mb"]))
    print("throughput: %.2f Mpx/s; overhead ratio %.3f; engine peak RSS %.0f MB"
          % (mpx / eng["seconds"], ratio, eng["peak_rss_mb"] or -1))
    print(json.dumps({"overhead_ratio": round(ratio, 4), "peak_rss_mb": round(eng["peak_rss_mb"] or -1, 1),
                      "mpx_per_s": round(mpx / eng["seconds"], 3), "size": args.size, "height": height, "tiles": eng["tiles"],
                      "engine_s": round(eng["seconds"], 2), "bare_s": round(bare["seconds"], 2),
                      "bare_peak_rss_mb": round(bare["peak_rss_mb"], 1), "device": eng["device"],
                      "tta": args.tta, "scales": args.scales, "cloud_mask": args.cloud_mask,
                      "ood_check": not args.no_ood_check}))


if __name__ == "__main__":
    main()
