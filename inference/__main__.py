"""Command line: ``python -m inference segment|models|evaluate|change|batch ...`` (``--help`` on each)."""
from __future__ import annotations

import sys

from .signals import STOP

if __name__ == "__main__":   # signals that come while the modules below load: held until main() is ready
    STOP.install()

import argparse  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

from .errors import Cancelled, OptionError, TailingsError  # noqa: E402
from .run.options import add_arguments, from_arguments, option  # noqa: E402
from .output.present import failure  # noqa: E402
from .run.gdal_settings import bound_block_cache  # noqa: E402
from .output.writing import quiet_unraisable  # noqa: E402


class Bar:
    """A one-line progress bar on stderr (only when stderr is a terminal, or when forced).

    Redrawn at each percent, and at least every second while the message changes (a huge
    raster's first percent takes minutes: its tiles still count); the time left is the plan's
    estimate (``expected`` seconds) until the run has made progress, then what the progress so
    far says, and "estimating" when there is neither."""

    def __init__(self, enabled: bool, expected: float = 0.0):
        self.enabled = enabled
        self.t0 = time.time()
        self.last = -1.0
        self.shown = 0.0
        self.expected = expected

    def eta(self, fraction: float) -> str:
        el = time.time() - self.t0
        if fraction > 0.001 and el > 1.0:
            return "eta %4.0fs" % max(0.0, el / fraction - el)
        if self.expected > 0:
            return "eta ~%3.0fs" % max(0.0, self.expected - el)
        return "eta estimating"

    def __call__(self, fraction: float, message: str) -> None:
        now = time.time()
        if not self.enabled or (fraction - self.last < 0.01 and fraction < 1.0 and now - self.shown < 1.0):
            return
        self.last, self.shown = fraction, now
        n = int(30 * fraction)
        sys.stderr.write("\r[%s%s] %5.1f%% %5.0fs %s  %-40s" % (
            "#" * n, "." * (30 - n), 100 * fraction, now - self.t0, self.eta(fraction), message[:40]))
        if fraction >= 1.0:
            sys.stderr.write("\n")
        sys.stderr.flush()


# The options evaluate takes (segment takes every command-line option).
EVALUATE_OPTIONS = ("bands", "preset", "tile_size", "overlap", "batch", "device", "threshold", "tta", "scales",
                    "min_area_ha", "input_scale")
MODEL_HELP = "ONNX file or the name of a shipped/user model (e.g. tailings)"


def cmd_segment(a) -> int:
    from .run.execute import execute
    from .run.planning import plan
    from .output.present import run_lines
    from .output.preview import check_preview_path, write_preview
    if a.preview:
        check_preview_path(a.preview)
    p = plan(a.input, a.model, from_arguments(a), a.out)
    if a.dry_run:   # the plan, and nothing written
        from .run.plan_text import describe
        for line in describe(p):
            print(line)
        if a.preview:
            print("output preview: %s" % a.preview)
        return 0
    for w in p.warnings:   # before the run, where they cannot be missed
        print("warning: %s" % w, file=sys.stderr)
    bar = Bar(not a.quiet and (sys.stderr.isatty() or a.progress),
              p.estimate.seconds if p.estimate is not None else 0.0)
    res = execute(p, progress=bar, cancel=STOP)
    for line in run_lines(res):
        print(line)
    if a.preview:
        write_preview(p, res, a.preview)
        print("preview: %s" % a.preview)
    return 0


def cmd_models(a) -> int:
    from .model.opened import list_models
    from .model.registry import user_dir
    entries = list_models()
    if not entries:
        print("no models found (shipped: models/, user: %s)" % user_dir())
    for e in entries:
        where = "shipped" if e.shipped else "user"
        if e.info is None:
            print("%s [%s] %s\n  UNUSABLE: %s" % (e.name, where, e.path, e.error))
            continue
        i = e.info
        print("%s [%s] %s" % (e.name, where, e.path))
        print("  inputs: %s; %s; tile %d, overlap %d; %s"
              % (", ".join(i.bands), "%g m GSD" % i.gsd_m if i.gsd_m else "the raster's own GSD", i.tile_size,
                 i.tile_overlap, i.task))
        if a.write_mlm:
            from .model.user_models import write_item
            print("  STAC MLM item: %s" % write_item(e.path))
        print("  classes: %s" % ", ".join("%d=%s" % (c.id, c.name) for c in i.classes))
        print("  defaults: threshold %g, minimum area %g ha, test-time augmentation %s, scales %s"
              % (i.threshold, i.min_area_ha, "off" if i.tta == 1 else "%d passes" % i.tta,
                 ", ".join("%g" % s for s in i.tta_scales)))
        if i.description:
            print("  %s" % i.description)
    print("user models folder: %s" % user_dir())
    return 0


def cmd_evaluate(a) -> int:
    from .scores.evaluate import evaluate
    bar = Bar(not a.quiet and (sys.stderr.isatty() or a.progress))
    res = evaluate(a.model, a.images, a.masks, from_arguments(a), progress=bar)
    for n in res.get("notes", ()):
        print("note: %s" % n)
    print("model %s on %d images" % (res["model"], res["images"]))
    print("%-20s %9s %9s %9s %9s %9s %12s" % ("class", "precision", "recall", "f1", "iou", "pa", "pixels"))
    for name, v in res["per_class"].items():
        print("%-20s %9.4f %9.4f %9.4f %9.4f %9.4f %12d" % (name, v["precision"], v["recall"], v["f1"], v["iou"],
                                                            v["pa"], v["pixels"]))
    print("overall: precision %.4f recall %.4f f1 %.4f iou %.4f mpa %.4f pixel accuracy %.4f" % (
        res["precision"], res["recall"], res["f1"], res["iou"], res["mpa"], res["pixel_accuracy"]))
    print(json.dumps(res))
    return 0


def cmd_change(a) -> int:
    from .change import CHANGE_OPTIONS, options_from_texts, plan_change, run_change
    from .change.products import doubt_lines
    try:
        opts = options_from_texts({o.name: getattr(a, o.name, None) for o in CHANGE_OPTIONS})
    except OptionError as err:
        flag = next((o.flag_name for o in CHANGE_OPTIONS if o.name == err.option), None)
        print("error: %s%s" % ("%s: " % flag if flag else "", err), file=sys.stderr)
        return 2
    p = plan_change(a.results, opts, a.out)
    print("comparing %s on one grid: %s" % (", ".join("%s (%s)" % (y, i.label) for y, i in zip(p.years, p.inputs)),
                                            p.grid.describe()))
    bar = Bar(not a.quiet and (sys.stderr.isatty() or a.progress))
    res = run_change(p, progress=bar)
    s = res.summary
    print("compared: %.2f ha (common ground %.2f ha, no data %.2f ha)" % (
        s["compared_area_ha"], s["common_area_ha"], s["nodata_area_ha"]))
    for y in s["series"]["years"]:
        print("%s: %s" % (y, ", ".join("%s %.2f ha" % kv for kv in s["series"]["area_ha"][y].items())))
    for t in s["transitions"]:
        if t["from"] != t["to"] and t["area_ha"] > 0:
            print("%s%s -> %s: %.2f ha" % ("uncertain: " if t.get("uncertain") else "", t["from"], t["to"], t["area_ha"]))
    for line in doubt_lines(s):
        print(line)
    for w in res.warnings:
        print("warning: %s" % w)
    for k in ("transitions", "polygons", "report", "summary"):
        print("%s: %s" % (k, res.outputs[k]))
    return 0


def cmd_batch(a) -> int:
    from .batch import BATCH_OPTIONS, plan_batch, run_batch
    from .run.options import values_from_arguments
    b = values_from_arguments(a, BATCH_OPTIONS)
    opts = from_arguments(a)   # the job options, as segment reads them
    p = plan_batch(a.jobs, a.model, a.out, opts, workers=b["workers"], scheduler=b["scheduler"], resume=b["resume"],
                   buffer_m=b["buffer_m"], facilities=a.facilities, facility_field=a.facility_field, scenes=a.scenes,
                   changes=b["changes"])
    for n in p.notes:
        print("note: %s" % n)
    t0 = time.time()

    def progress(done, failed, running, total, eta, message):
        if not a.quiet:
            print("[%d/%d] done %d, failed %d, running %d, eta %.0f s: %s"
                  % (done + failed, total, done, failed, running, eta, message), flush=True)
    res = run_batch(p, progress, on_dashboard=lambda link: print("Dask dashboard: %s" % link, flush=True))
    s = res.summary
    print("jobs: %d (%d run now, %d done before); done %d, failed %d; %.1f s"
          % (s["jobs"], res.ran, s["jobs"] - res.ran, s["done"], s["failed"], time.time() - t0))
    for f in s["failures"]:
        print("failed: %s %s (%s): %s" % (f["facility"], f["year"], f["raster"], f["error"]))
    for k, v in res.outputs.items():
        print("%s: %s" % (k, v))
    return 0 if s["failed"] == 0 else 1


def main(argv=None) -> int:
    """The command line; Ctrl-C, SIGTERM and SIGHUP stop it with one line, at any moment
    (``inference.signals``), with the exit status 128 + the signal's number."""
    STOP.install()
    hook = sys.unraisablehook
    sys.unraisablehook = quiet_unraisable(hook)
    try:
        _load_libraries()
        STOP.arm()
        status = _main(argv)
        if STOP() and status == 0:   # an interrupt a library swallowed after the run's last check
            status = _stopped()
    except KeyboardInterrupt:   # (before or after the command's own handling)
        status = _stopped()
    finally:
        STOP.restore()
        sys.unraisablehook = hook
    return status


def _load_libraries() -> None:
    """numpy, GDAL and onnxruntime imported while a signal is only held: an interrupt inside a
    C extension's import becomes that library's ImportError (and a traceback it prints itself), not
    an interrupt.  A library that fails to import is reported where it is needed."""
    for name in ("numpy", "osgeo.gdal", "onnxruntime"):
        try:
            __import__(name)
        except Exception:  # nosec B110 - any failure is reported by the code that needs the library (ort_module)
            pass


def _stopped() -> int:
    if STOP.signum is None:   # a KeyboardInterrupt raised by other means
        STOP.signum = int(signal.SIGINT)
    print("%serror: %s; partial outputs removed" % ("\n" if sys.stderr.isatty() else "", STOP.message),
          file=sys.stderr)
    return STOP.exit_status


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inference", description="Tailings Mapper segmentation engine")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("segment", help="segment a raster (or a Sentinel-2 folder of band files)")
    s.add_argument("input")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--model", required=True, help=MODEL_HELP)
    add_arguments(s)
    s.add_argument("--preview", help="also write a PNG preview (image with the classes over it)")
    s.add_argument("--dry-run", action="store_true",
                   help="print the plan (bands, scaling, grid, tiles, outputs, time and memory estimates) and stop")
    s.add_argument("--progress", action="store_true", help="progress bar even when not on a terminal")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_segment)
    m = sub.add_parser("models", help="list shipped and user models")
    m.add_argument("--write-mlm", action="store_true",
                   help="(re)write each model's STAC MLM item beside it (<model>.stac.json)")
    m.set_defaults(func=cmd_models)
    e = sub.add_parser("evaluate", help="score a model on images with masks of the same file name")
    e.add_argument("images")
    e.add_argument("masks")
    e.add_argument("--model", required=True, help=MODEL_HELP)
    add_arguments(e, EVALUATE_OPTIONS)
    e.add_argument("--progress", action="store_true")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_evaluate)
    from .change import CHANGE_OPTIONS
    c = sub.add_parser("change", help="change map between two or more results of the same ground (class rasters or "
                                      "polygon layers as edited)")
    c.add_argument("results", nargs="+", help="class rasters or polygon layers (gpkg, or gpkg|layername=L)")
    c.add_argument("--out", required=True, help="output folder")
    add_arguments(c, table=CHANGE_OPTIONS)
    c.add_argument("--progress", action="store_true")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_change)
    from .batch import BATCH_OPTIONS, JOB_OPTIONS
    bp = sub.add_parser("batch", help="segment many facilities over many years (jobs on Dask)")
    bp.add_argument("jobs", nargs="?", help="a CSV or OGR layer of jobs: facility, year or date, raster[, aoi]")
    bp.add_argument("--out", required=True, help="output folder (DIR/<facility>/<year>/)")
    bp.add_argument("--model", default="tailings", help=MODEL_HELP)
    bp.add_argument("--facilities", help="instead of a jobs table: facilities (polygons, or points with --buffer-m)")
    bp.add_argument("--facility-field", help="the facilities' id field")
    bp.add_argument("--scenes", help="... and a folder of scenes, matched by footprint and date")
    add_arguments(bp, table=BATCH_OPTIONS)
    add_arguments(bp, JOB_OPTIONS)
    bp.add_argument("--quiet", action="store_true")
    bp.set_defaults(func=cmd_batch, own_options=BATCH_OPTIONS)
    a = ap.parse_args(argv)
    bound_block_cache()
    try:
        return a.func(a)
    except Cancelled:
        if STOP():
            return _stopped()
        print("error: %s" % failure(Cancelled()), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        return _stopped()
    except OptionError as err:
        if a.debug:
            raise
        known = [o for o in getattr(a, "own_options", ()) if o.name == err.option]
        o = known[0] if known else option(err.option) if err.option else None
        where = "%s: " % o.flag_name if o is not None else ""
        print("error: %s%s" % (where, err), file=sys.stderr)
        return 2
    except TailingsError as err:
        if a.debug:
            raise
        print("error: %s" % err, file=sys.stderr)
        return 2
    except Exception as err:  # a bug: still one line unless --debug
        if STOP():   # (an interrupt that came inside a library's lock or cleanup: still the interrupt)
            return _stopped()
        if a.debug:
            raise
        print("error: %s; rerun with --debug for the traceback" % failure(err), file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.unraisablehook = quiet_unraisable(sys.unraisablehook)   # (also while the interpreter exits)
    status = main()
    STOP.install()   # a second signal while the interpreter waits for the run's threads: held, no traceback
    sys.exit(status)
