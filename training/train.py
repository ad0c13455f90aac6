"""Training loop: seeded, resumable, checkpoints, per-epoch log and plot."""
from __future__ import annotations

import json
import math
import os
import platform
import random
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch

from .engine import tiling
from .engine import binary_scores

from . import data as D
from . import losses, nets


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return "CPU (%s, %d threads)" % (platform.processor() or platform.machine(), torch.get_num_threads())


def pick_device(want: Optional[str] = None) -> torch.device:
    if want:
        return torch.device(want)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_all(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


class Progress:
    """Minimal progress bar on stderr (no tqdm dependency)."""

    def __init__(self, total: int, prefix: str, enabled: bool = True):
        self.total, self.prefix, self.n, self.t0 = total, prefix, 0, time.time()
        self.enabled = enabled and sys.stderr.isatty()

    def update(self, k=1, **info):
        self.n += k
        if not self.enabled:
            return
        frac = self.n / max(1, self.total)
        bar = "#" * int(25 * frac) + "-" * (25 - int(25 * frac))
        el = time.time() - self.t0
        extra = " ".join("%s=%.4g" % kv for kv in info.items())
        sys.stderr.write("\r%s [%s] %d/%d %.0fs %s " % (self.prefix, bar, self.n, self.total, el, extra))
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")


# ----------------------------------------------------------------------------- metrics
THRESHOLDS = [round(x, 2) for x in np.arange(0.05, 0.96, 0.05)]


def confusion_at(probs: List[np.ndarray], masks: List[np.ndarray], thresholds=THRESHOLDS) -> Dict[float, Dict]:
    """Micro-averaged binary confusion counts over all valid pixels, for each threshold."""
    out = {}
    for th in thresholds:
        tp = fp = fn = tn = 0
        for p, m in zip(probs, masks):
            v = m != 255
            pr, gt = (p >= th)[v], (m == 1)[v]
            tp += int(np.sum(pr & gt)); fp += int(np.sum(pr & ~gt))
            fn += int(np.sum(~pr & gt)); tn += int(np.sum(~pr & ~gt))
        out[th] = binary_scores(tp, fp, fn, tn)
    return out


@torch.no_grad()
def predict(model, img_norm: np.ndarray, dev, multiple: int = 32, tta: int = 1, scales=(1.0,)) -> np.ndarray:
    """Probability of the positive class for one normalised (C, H, W) image (padded to a multiple of 32),
    averaged over ``tta`` flipped views at each of ``scales`` as the engine does (tiling.tta_views,
    tiling.rescale), so validation can score the inference settings a model ships with."""
    c, h, w = img_norm.shape
    m = int(multiple / min(scales))
    x = np.pad(img_norm, ((0, 0), (0, (-h) % m), (0, (-w) % m)), mode="reflect")
    total, views = None, tiling.tta_views(tta)
    for s in scales:
        xs = tiling.rescale(x, s)
        z = model(torch.from_numpy(np.stack([np.ascontiguousarray(f(xs)) for f, _ in views])).to(dev))
        p = (torch.sigmoid(z[:, 0]) if z.shape[1] == 1 else torch.softmax(z, 1)[:, 1]).float().cpu().numpy()
        p = tiling.rescale(sum(inv(p[k]) for k, (_, inv) in enumerate(views)), s, up=True)
        total = p if total is None else total + p
    return (total / (len(scales) * tta))[:h, :w]


def validate(model, tiles: List[D.Tile], mean, std, dev, tta: int = 1, scales=(1.0,)) -> Dict:
    model.eval()
    probs = [predict(model, D.normalise(t.image, mean, std) * (t.mask != 255)[None], dev, tta=tta, scales=scales)
             for t in tiles]
    masks = [t.mask for t in tiles]
    table = confusion_at(probs, masks)
    best_th = max(table, key=lambda th: (table[th]["iou"], -abs(th - 0.5)))
    return {"at_0.5": table[0.5], "best_threshold": best_th, "best": table[best_th], "table": table}


# ----------------------------------------------------------------------------- training
def _param_groups(model, cfg):
    enc = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    groups = [{"params": rest, "lr": cfg["lr"]}]
    if enc:
        groups.append({"params": enc, "lr": cfg["lr"] * cfg.get("encoder_lr_mult", 1.0)})
    return groups


def _lr_factor(epoch_f: float, cfg) -> float:
    w = cfg.get("warmup_epochs", 0)
    if epoch_f < w:
        return (epoch_f + 1e-3) / w
    t = (epoch_f - w) / max(1e-9, cfg["epochs"] - w)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _numpy_scalar_globals() -> list:
    """What a pickled numpy scalar refers to: its reconstructor and the dtypes."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:   # numpy 1.x
        from numpy.core.multiarray import scalar
    return [scalar, np.dtype] + sorted({type(np.dtype(t)) for t in "?bBhHiIlLqQefdg"}, key=str)


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """A checkpoint of :func:`train`, loaded with ``weights_only`` (tensors and plain values: the
    file cannot run code).  Checkpoints of earlier versions hold numpy scalars: those, and no
    other objects, are allowed too."""
    with torch.serialization.safe_globals(_numpy_scalar_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)


def plain(x):
    """``x`` with numpy scalars as Python numbers (a checkpoint of plain values), recursively."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(plain(v) for v in x)
    return x.item() if isinstance(x, np.generic) else x


def build_model(cfg, in_ch=None):
    in_ch = in_ch or len(cfg["bands"])
    n_out = 1 if len(cfg["classes"]) == 2 else len(cfg["classes"])
    kw = dict(cfg.get("arch_kw", {}))
    if kw.get("encoder") == "b4_s2":
        kw["bands"] = cfg["bands"]   # its pretrained first layer maps input bands by name
    return nets.build(cfg["arch"], in_ch, n_out, pretrained=cfg.get("pretrained", False), **kw)


def train(cfg: Dict, data_dir: str, out_dir: str, seed: int = 0, resume: bool = False,
          device: Optional[str] = None, threads: Optional[int] = None, max_tiles: Optional[int] = None,
          log=print, init: Optional[str] = None) -> Dict:
    os.makedirs(out_dir, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    seed_all(seed)
    dev = pick_device(device)
    tiles = D.load_folder(data_dir, cfg["bands"], max_tiles=max_tiles)
    train_t, val_t = D.split_by_site(tiles, cfg["val_fraction"], cfg["split_seed"], cfg.get("val_sites"))
    if not val_t and cfg.get("val_sites") != []:
        raise ValueError("the validation split is empty")
    # val_sites [] trains on every site: no validation, best.pt is the last epoch (for a final model
    # whose recipe and epoch count were settled on held-out sites before)
    mean, std = D.band_stats(train_t)
    last_p, best_p = os.path.join(out_dir, "last.pt"), os.path.join(out_dir, "best.pt")
    ck = load_checkpoint(last_p, dev) if resume and os.path.isfile(last_p) else None
    ck0 = load_checkpoint(init) if init else None
    norm = ck if ck is not None else ck0
    if norm is not None and len(norm.get("mean") or ()) == len(mean):
        # a warm start keeps the normalisation its weights were trained with, whatever tiles this run
        # adds, and a resumed run the one it started with
        mean, std = [float(v) for v in norm["mean"]], [float(v) for v in norm["std"]]
    split = {"train_sites": sorted({t.site for t in train_t}, key=lambda s: (len(s), s)),
             "val_sites": sorted({t.site for t in val_t}, key=lambda s: (len(s), s)),
             "train_tiles": [t.name for t in train_t], "val_tiles": [t.name for t in val_t]}
    aug = D.AugConfig(**cfg.get("aug", {}))
    negs = D.load_negatives(cfg.get("negatives"))
    if cfg.get("negatives") and not negs:
        log("warning: no negative scenes found for %s" % cfg.get("negatives"))
    sampler = D.CropSampler(train_t, cfg["crop"], mean, std, aug, seed, cfg.get("pos_p", 0.5),
                            negs, cfg.get("neg_p", 0.0), cfg.get("water_p", 0.0), cfg.get("half_p", 0.0))
    model = build_model(cfg).to(dev)
    init_time = 0.0
    if init:  # warm start from another run's weights (same architecture); its time counts as training time
        model.load_state_dict(ck0["model"])
        init_dir = os.path.dirname(os.path.abspath(init))
        try:
            with open(os.path.join(init_dir, "summary.json")) as f:
                init_time = float(json.load(f).get("train_time_s", 0.0))
        except (OSError, ValueError):
            init_time = float(ck0.get("elapsed_s", 0.0))
        log("initialised from %s (epoch %s, %.0f s of training)" % (init, ck0.get("epoch"), init_time))
    crit = losses.build(cfg["loss"])
    opt = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    base_lrs = [g["lr"] for g in opt.param_groups]
    history, start_epoch, best_iou, elapsed0 = [], 0, -1.0, 0.0
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sampler.set_state(ck["sampler"])
        torch.set_rng_state(ck["torch_rng"])
        history, start_epoch, best_iou = ck["history"], ck["epoch"], ck["best_iou"]
        elapsed0 = ck.get("elapsed_s", 0.0)
        log("resumed from %s at epoch %d" % (last_p, start_epoch))
    meta = {"config": cfg, "seed": seed, "data_dir": os.path.abspath(data_dir), "split": split,
            "mean": mean, "std": std, "device": device_name(dev), "n_params": nets.n_params(model),
            "torch": torch.__version__, "init": init, "init_train_time_s": init_time}
    with open(os.path.join(out_dir, "run.json"), "w") as f:
        json.dump(meta, f, indent=1)
    log("config %s arch %s loss %s | %d train tiles (%d sites), %d val tiles (sites %s) | %s | %.2fM params"
        % (cfg.get("config"), cfg["arch"], cfg["loss"], len(train_t), len(split["train_sites"]), len(val_t),
           ",".join(split["val_sites"]), meta["device"], meta["n_params"] / 1e6))
    n_batches = math.ceil(cfg["samples_per_epoch"] / cfg["batch"])
    t_start = time.time()
    for epoch in range(start_epoch, cfg["epochs"]):
        model.train()
        bar = Progress(n_batches, "epoch %d/%d" % (epoch + 1, cfg["epochs"]))
        tot, nb = 0.0, 0
        for bi, (x, y) in enumerate(sampler.epoch(cfg["batch"], cfg["samples_per_epoch"])):
            f = _lr_factor(epoch + bi / n_batches, cfg)
            for g, lr0 in zip(opt.param_groups, base_lrs):
                g["lr"] = lr0 * f
            x, y = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item(); nb += 1
            bar.update(loss=tot / nb)
        bar.close()
        rec = {"epoch": epoch + 1, "train_loss": tot / max(1, nb)}
        if val_t:
            v = validate(model, val_t, mean, std, dev, cfg.get("val_tta", 1), tuple(cfg.get("val_scales", (1.0,))))
            rec.update({"val_iou@0.5": v["at_0.5"]["iou"], "val_f1@0.5": v["at_0.5"]["f1"],
                        "val_best_th": v["best_threshold"], "val_iou_best": v["best"]["iou"],
                        "val_f1_best": v["best"]["f1"]})
        elapsed = elapsed0 + time.time() - t_start
        rec.update({"elapsed_s": round(elapsed, 1), "lr": opt.param_groups[0]["lr"]})
        history.append(rec)
        log(json.dumps(rec))
        if not val_t or v["best"]["iou"] > best_iou:
            best_iou = v["best"]["iou"] if val_t else best_iou
            torch.save({"model": model.state_dict(), **plain({
                "cfg": cfg, "epoch": epoch + 1, "mean": mean, "std": std,
                "val": {k: v[k] for k in ("at_0.5", "best_threshold", "best")} if val_t else {},
                "val_table": {str(k): s for k, s in v["table"].items()} if val_t else {}, "split": split})}, best_p)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                    **plain({"sampler": sampler.state(), "history": history, "epoch": epoch + 1,
                             "best_iou": best_iou, "cfg": cfg, "mean": mean, "std": std, "split": split,
                             "elapsed_s": elapsed})}, last_p + ".tmp")
        os.replace(last_p + ".tmp", last_p)
        with open(os.path.join(out_dir, "history.json"), "w") as fh:
            json.dump(history, fh, indent=1)
        plot_history(history, os.path.join(out_dir, "history.png"))
    summary = {"epochs": len(history), "best_val_iou": best_iou,
               "train_time_s": (history[-1]["elapsed_s"] if history else 0.0) + init_time,
               "this_run_time_s": history[-1]["elapsed_s"] if history else 0.0,
               "init": init, "device": meta["device"]}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def plot_history(history, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(ep, [h["train_loss"] for h in history]); ax[0].set_title("train loss"); ax[0].set_xlabel("epoch")
    for key, label in (("val_iou@0.5", "IoU@0.5"), ("val_iou_best", "IoU@best th"), ("val_f1_best", "F1@best th")):
        if all(key in h for h in history):
            ax[1].plot(ep, [h[key] for h in history], label=label)
    ax[1].set_title("validation (held-out sites)"); ax[1].set_xlabel("epoch"); ax[1].legend(); ax[1].set_ylim(0, 1)
    fig.tight_layout(); fig.savefig(path, dpi=80); plt.close(fig)
