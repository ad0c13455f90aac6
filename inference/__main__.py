"""Command line: ``python -m inference segment|models|evaluate ...`` (``--help`` on each)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .errors import Cancelled, TailingsError


class Bar:
    """A one-line progress bar on stderr (only when stderr is a terminal, or when forced)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.t0 = time.time()
        self.last = -1.0

    def __call__(self, fraction: float, message: str) -> None:
        if not self.enabled or (fraction - self.last < 0.01 and fraction < 1.0):
            return
        self.last = fraction
        n = int(30 * fraction)
        el = time.time() - self.t0
        eta = el / fraction - el if fraction > 0.02 else 0
        sys.stderr.write("\r[%s%s] %3d%% %5.0fs eta %4.0fs  %-40s" % (
            "#" * n, "." * (30 - n), 100 * fraction, el, eta, message[:40]))
        if fraction >= 1.0:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _opts(a):
    from .engine import SegmentOptions
    extent = None
    if getattr(a, "extent", None):
        try:
            extent = tuple(float(v) for v in a.extent.split(","))
        except ValueError:
            raise TailingsError("--extent takes xmin,ymin,xmax,ymax") from None
        if len(extent) != 4:
            raise TailingsError("--extent takes xmin,ymin,xmax,ymax")
    return SegmentOptions(bands=a.bands, preset=a.preset, tile_size=a.tile, overlap=a.overlap, batch=a.batch,
                          device=a.device, threshold=a.threshold, min_area_ha=a.min_area,
                          tta=a.tta, scales=_scales(a.scales), simplify_m=getattr(a, "simplify", 0.0) or 0.0,
                          confidence=not getattr(a, "no_confidence", False),
                          polygons=not getattr(a, "no_polygons", False),
                          overwrite=getattr(a, "overwrite", False), extent=extent,
                          aoi=getattr(a, "aoi", None) or None,
                          prefix=getattr(a, "prefix", None), input_scale=a.input_scale)


def _scales(text):
    if not text:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise TailingsError("--scales takes numbers separated by commas, e.g. 1,0.5") from None


def _engine_args(p):
    p.add_argument("--model", required=True, help="ONNX file or the name of a shipped/user model (e.g. tailings)")
    p.add_argument("--bands", help="raster band per model input in model order (3,2,1) or NAME=BAND,... "
                                   "(S2:B04=3,S2:B03=2,S2:B02=1); default: by band name")
    p.add_argument("--preset", help="sensor preset of the raster (s2-l1c, s2-l2a, s2-rgb, gf6-pms, ...)")
    p.add_argument("--tile", type=int, help="tile size in pixels (default: the model's)")
    p.add_argument("--overlap", type=int, help="tile overlap in pixels (default: the model's)")
    p.add_argument("--batch", type=int, default=4, help="tiles per onnxruntime call (default 4)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threshold", type=float, help="binary threshold (default: the model's)")
    p.add_argument("--tta", type=int, choices=[1, 2, 4, 8],
                   help="test-time augmentation: network passes per tile, flipped/rotated and averaged "
                        "(1 = off; default: the model's). Slower, usually a little more accurate")
    p.add_argument("--scales", help="multi-scale inference: the scales each tile is seen at, averaged, among 1, 0.5, "
                                    "0.25 (e.g. 1,0.5: also at half resolution; default: the model's)")
    p.add_argument("--min-area", type=float, dest="min_area", help="minimum region area in hectares "
                                                                    "(default: the model's)")
    p.add_argument("--input-scale", type=float, dest="input_scale",
                   help="physical value = raw x this (default: the raster's declared scale, else the model's)")


def cmd_segment(a) -> int:
    from .engine import segment
    from .preview import write_preview
    opts = _opts(a)
    bar = Bar(not a.quiet and (sys.stderr.isatty() or a.progress))
    res = segment(a.input, a.model, a.out, opts, progress=bar)
    print("model: %s (%s)" % (res.model.name, res.model.path))
    print("device: %s (%s)" % (res.device, res.provider_reason))
    for n in res.notes:
        print("note: %s" % n)
    print("classes: %s" % res.class_raster)
    if res.confidence_raster:
        print("confidence: %s" % res.confidence_raster)
    if res.polygons:
        print("polygons: %s (layer %s)" % (res.polygons, res.layer_name))
    for cid, s in sorted(res.stats.items()):
        cnt = "" if s["count"] is None else "%d regions, " % s["count"]
        print("found %s: %s%.2f ha" % (s["name"], cnt, s["area_ha"]))
    if a.preview:
        write_preview(a.input, res, a.preview, opts)
        print("preview: %s" % a.preview)
    print("time: %.1f s for %d tiles" % (res.seconds, res.tiles))
    return 0


def cmd_models(a) -> int:
    from .registry import list_models, user_dir
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
        print("  inputs: %s; %g m GSD; tile %d, overlap %d; %s" % (", ".join(i.bands), i.gsd_m, i.tile_size,
                                                                   i.tile_overlap, i.task))
        print("  classes: %s" % ", ".join("%d=%s" % (c.id, c.name) for c in i.classes))
        print("  defaults: threshold %g, minimum area %g ha, test-time augmentation %s, scales %s"
              % (i.threshold, i.min_area_ha, "off" if i.tta == 1 else "%d passes" % i.tta,
                 ", ".join("%g" % s for s in i.tta_scales)))
        if i.description:
            print("  %s" % i.description)
    print("user models folder: %s" % user_dir())
    return 0


def cmd_evaluate(a) -> int:
    from .evaluate import evaluate
    opts = _opts(a)
    bar = Bar(not a.quiet and (sys.stderr.isatty() or a.progress))
    res = evaluate(a.model, a.images, a.masks, opts, progress=bar)
    print("model %s on %d images" % (res["model"], res["images"]))
    print("%-20s %9s %9s %9s %9s %9s %12s" % ("class", "precision", "recall", "f1", "iou", "pa", "pixels"))
    for name, v in res["per_class"].items():
        print("%-20s %9.4f %9.4f %9.4f %9.4f %9.4f %12d" % (name, v["precision"], v["recall"], v["f1"], v["iou"],
                                                            v["pa"], v["pixels"]))
    print("overall: precision %.4f recall %.4f f1 %.4f iou %.4f mpa %.4f pixel accuracy %.4f" % (
        res["precision"], res["recall"], res["f1"], res["iou"], res["mpa"], res["pixel_accuracy"]))
    print(json.dumps(res))
    return 0


def _bound_gdal_cache() -> None:
    """GDAL's block cache defaults to 5 % of RAM; the engine streams and needs little. Keep the
    command line's memory bounded unless the user set GDAL_CACHEMAX."""
    if "GDAL_CACHEMAX" not in os.environ:
        from osgeo import gdal
        gdal.SetCacheMax(64 * 1024 * 1024)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inference", description="Tailings Mapper segmentation engine")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("segment", help="segment a raster (or a Sentinel-2 folder of band files)")
    s.add_argument("input")
    s.add_argument("--out", required=True, help="output folder")
    _engine_args(s)
    s.add_argument("--simplify", type=float, default=0.0, help="polygon simplification tolerance in metres")
    s.add_argument("--extent", help="xmin,ymin,xmax,ymax in the raster's CRS")
    s.add_argument("--aoi", help="vector file whose polygons limit the run (any CRS): pixels outside them get "
                   "no class")
    s.add_argument("--prefix", help="output file name stem (default: the input's)")
    s.add_argument("--no-confidence", action="store_true", dest="no_confidence")
    s.add_argument("--no-polygons", action="store_true", dest="no_polygons")
    s.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    s.add_argument("--preview", help="also write a PNG preview (image with the classes over it)")
    s.add_argument("--progress", action="store_true", help="progress bar even when not on a terminal")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_segment)
    m = sub.add_parser("models", help="list shipped and user models")
    m.set_defaults(func=cmd_models)
    e = sub.add_parser("evaluate", help="score a model on images with masks of the same file name")
    e.add_argument("images")
    e.add_argument("masks")
    _engine_args(e)
    e.add_argument("--progress", action="store_true")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_evaluate)
    a = ap.parse_args(argv)
    _bound_gdal_cache()
    try:
        return a.func(a)
    except Cancelled:
        print("error: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\nerror: interrupted; partial outputs removed", file=sys.stderr)
        return 130
    except TailingsError as err:
        if a.debug:
            raise
        print("error: %s" % err, file=sys.stderr)
        return 2
    except Exception as err:  # a bug: still one line unless --debug
        if a.debug:
            raise
        print("error: internal error (%s: %s); rerun with --debug for the traceback"
              % (type(err).__name__, str(err).splitlines()[0] if str(err) else ""), file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
