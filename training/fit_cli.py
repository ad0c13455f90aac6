"""``python -m training fit`` and ``corrections-check``: their arguments and what they print."""
from __future__ import annotations

import json
import signal
import sys


def add_parsers(sub) -> None:
    f = sub.add_parser("fit", help="train a model from polygons drawn on rasters (or fine-tune one from corrections)")
    f.add_argument("--raster", action="append", required=True, help="a raster (or Sentinel-2 product); repeat for "
                                                                    "several scenes or years")
    f.add_argument("--labels", required=True, help="the label polygons (any OGR format and CRS; may be empty)")
    f.add_argument("--layer", help="the layer of --labels (default: its first)")
    f.add_argument("--field", help="the field that holds each polygon's class (a class name or id); without it, "
                                   "every polygon is the positive class of a binary model")
    f.add_argument("--classes", help="tailings, mining10 (the ten mining components) or names: pit,dump,pond "
                                     "(default: the --init model's)")
    f.add_argument("--multilabel", action="store_true", help="one sigmoid per class: classes may overlap")
    f.add_argument("--aoi", help="polygons in which unlabelled pixels are background (default: near the labels only)")
    f.add_argument("--corrections-of", metavar="RUN", help="the run (its GeoPackage or classes raster) whose polygons "
                                                         "--labels corrects: only what was deleted, reshaped or added "
                                                         "counts; detections left as they were are ignored")
    f.add_argument("--review", action="store_true", help="--labels is a run's polygon layer reviewed in QGIS: its "
                                                         "accepted regions are their class, its rejected ones "
                                                         "background, the rest ignored (its 'review' field)")
    f.add_argument("--init", default="tailings", help="the model to start from (a name or an ONNX file), or scratch")
    f.add_argument("--epochs", type=int, default=10)
    f.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    f.add_argument("--out", help="the ONNX file to write (default: the user's models folder, named --name)")
    f.add_argument("--name", help="the model's name (default: <init>-<date-time>)")
    f.add_argument("--chip", type=int, default=256, help="chip size in pixels")
    f.add_argument("--batch", type=int, default=4)
    f.add_argument("--chips-per-epoch", type=int, default=64)
    f.add_argument("--lr", type=float, help="learning rate (default: 3e-5 from a model, 1e-3 from scratch)")
    f.add_argument("--train-encoder", action="store_true", help="train the encoder too (from a model: kept by default)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--no-register", action="store_true", help="do not add the model to the user's model list")
    c = sub.add_parser("corrections-check", help="learning from corrections on the demo scene, measured: flagged area "
                                                 "before/after, validation IoU before/after")
    c.add_argument("--data", default=None)
    c.add_argument("--epochs", type=int, default=1)
    c.add_argument("--json", help="write the result here")
    c.add_argument("--partial", action="store_true", help="the western half of the shipped model's "
                                                          "detections deleted, the others left as they were, learnt "
                                                          "as corrections of its run")


def run_fit(a) -> int:
    from .engine import Cancelled, TailingsError
    from .fit import fit
    stop = {"now": False}

    def on_sigint(*_):
        if stop["now"]:
            raise KeyboardInterrupt
        stop["now"] = True
        print("\nstopping after this step; the best epoch so far is kept (Ctrl-C again to abort)", file=sys.stderr)
    old = signal.signal(signal.SIGINT, on_sigint)
    last = {"msg": ""}

    def progress(fraction, message):
        if message.startswith("epoch") and ":" in message and message != last["msg"]:
            last["msg"] = message
        if sys.stderr.isatty():
            sys.stderr.write("\r%3d%% %-70s" % (100 * fraction, message[:70]))
            sys.stderr.flush()
    try:
        res = fit(a.raster, a.labels, a.field, a.classes, a.aoi, a.init, a.epochs, a.device, a.out, a.name,
                  a.multilabel, a.chip, a.batch, a.chips_per_epoch, a.lr, seed=a.seed,
                  train_encoder=True if a.train_encoder else None, register=not a.no_register,
                  labels_layer=a.layer, corrections_of=a.corrections_of, review=a.review, progress=progress, cancel=lambda: stop["now"], log=print)
    except Cancelled as e:
        print("cancelled: %s" % e, file=sys.stderr)
        return 130
    except (TailingsError, ValueError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, old)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    for w in res.warnings:
        print("warning: %s" % w)
    print("model: %s%s" % (res.path, " (cancelled: the best epoch so far)" if res.cancelled else ""))
    print("card: %s" % res.card)
    if res.registered:
        print("in your model list: %s" % res.registered)
    val = res.info.extra.get("validation_fit") or {}
    print("validation (held-back part): %s" % json.dumps(val.get("per_class") or "none held back"))
    fit = res.info.extra.get("fit") or {}
    print("threshold: %g (%s)" % (res.info.threshold, fit.get("threshold_why") or "the model's"))
    print("time: %.0f s, %d of %d epochs run%s" % (res.seconds, fit.get("epochs_run", 0), fit.get("epochs", 0),
                                                   ", best epoch %d" % res.best_epoch if fit.get("epochs_run") else
                                                   " (the veto only)"))
    return 0


def run_corrections_check(a) -> int:
    from .engine import TailingsError

    from . import data
    from .corrections_check import main
    try:
        main(a.data or data.default_data_dir(), a.epochs, {}, a.json, "partial" if a.partial else "area")
    except (TailingsError, RuntimeError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    return 0
