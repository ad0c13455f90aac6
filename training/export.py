"""Export a training run to a self-describing ONNX model (engine schema + Deepness keys)."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from .engine import ClassInfo, ModelInfo
from .engine import write_metadata
from .engine import read_info

from .train import build_model, load_checkpoint


class WithActivation(nn.Module):
    """Puts the sigmoid (binary) / softmax (multiclass) inside the graph: outputs are probabilities."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        z = self.net(x)
        return torch.sigmoid(z) if z.shape[1] == 1 else torch.softmax(z, 1)


def load_run(run_dir: str, which: str = "best"):
    p = os.path.join(run_dir, "%s.pt" % which)
    if not os.path.isfile(p):
        p = os.path.join(run_dir, "last.pt")
    ck = load_checkpoint(p)
    cfg = dict(ck["cfg"])
    cfg["pretrained"] = False  # weights come from the checkpoint
    model = build_model(cfg)
    model.load_state_dict(ck["model"])
    model.eval()
    return model, ck


def model_info(ck: Dict, threshold: Optional[float] = None, extra: Optional[Dict] = None,
               name: Optional[str] = None, description: str = "", version: str = "1.0", tta: int = 1,
               scales: Optional[List[float]] = None):
    cfg = ck["cfg"]
    th = threshold
    if th is None:   # the validation optimum of this checkpoint's epoch (best.pt keeps it, last.pt its history)
        th = (ck.get("val") or {}).get("best_threshold", (ck.get("history") or [{}])[-1].get("val_best_th"))
    if th is None:
        raise ValueError("this run has no validation sites to choose a threshold on: give one (--threshold)")
    n = len(cfg["bands"])
    classes = [ClassInfo(int(c["id"]), c["name"], c["color"]) for c in cfg["classes"]]
    val = ck.get("val", {})
    ex = {
        "architecture": cfg["arch"], "loss": cfg["loss"], "config": cfg.get("config"),
        "training_data": "tailings_s2_brazil (IsasGithub/tailings_seg, Sentinel-2 L1C TOA 2021 median, Brazil)",
        "split": {"val_sites": ck.get("split", {}).get("val_sites"), "train_sites": ck.get("split", {}).get("train_sites")},
        "validation_torch": {"threshold": th, "at_threshold": ck.get("val_table", {}).get(str(th), val.get("best")),
                             "at_0.5": val.get("at_0.5")},
        "epoch": ck.get("epoch"),
    }
    ex.update(extra or {})
    return ModelInfo(
        name=name or cfg.get("name", "tailings"), bands=list(cfg["bands"]), gsd_m=float(cfg["gsd_m"]),
        tile_size=int(cfg["tile_size"]), tile_overlap=int(cfg["tile_overlap"]), classes=classes,
        task="binary" if len(classes) == 2 else "multiclass", units="reflectance",
        scale=[1e-4] * n, offset=[0.0] * n, mean=[float(m) for m in ck["mean"]], std=[float(s) for s in ck["std"]],
        activation="none", threshold=float(th), tta=int(tta), tta_scales=list(scales or [1.0]), min_area_ha=float(cfg.get("min_area_ha", 0.0)),
        description=description or ("Binary segmentation of mining tailings ponds in Sentinel-2 RGB at 10 m (%s, %s)"
                                     % (cfg["arch"], cfg["loss"])),
        version=version, license="CC-BY-4.0", extra=ex)


def store_weights_fp16(proto) -> int:
    """Store the graph's float32 weights as float16, each read through a Cast back to float32:
    half the file, float32 arithmetic (onnxruntime folds the casts when it loads the model).
    Returns the number of weights converted."""
    from onnx import TensorProto, helper, numpy_helper
    g = proto.graph
    casts = []
    for i, t in enumerate(list(g.initializer)):
        if t.data_type != TensorProto.FLOAT:
            continue
        name = t.name
        half = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), name + "__fp16")
        g.initializer[i].CopyFrom(half)   # (t is that same message: read its name before)
        casts.append(helper.make_node("Cast", [half.name], [name], to=TensorProto.FLOAT, name=name + "__cast"))
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    return len(casts)


def round_weights_fp16(model: nn.Module) -> None:
    """Round the model's float weights and buffers to float16 values (kept in float32), so torch
    computes what the fp16-stored ONNX file computes."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())


def export(run_dir: str, out: str, threshold: Optional[float] = None, extra: Optional[Dict] = None,
           which: str = "best", name: Optional[str] = None, description: str = "", check: bool = True,
           tta: int = 1, scales: Optional[List[float]] = None, fp16_weights: bool = False) -> Dict:
    """``fp16_weights``: store the weights as float16 (half the file; the network still computes in
    float32, with the weights rounded to float16 values, torch's side of the check too)."""
    import onnx
    model, ck = load_run(run_dir, which)
    if fp16_weights:
        round_weights_fp16(model)
    for fn in ("summary.json",):
        p = os.path.join(run_dir, fn)
        if os.path.isfile(p):
            with open(p) as f:
                s = json.load(f)
            extra = dict(extra or {})
            extra.setdefault("training_time_s", s.get("train_time_s"))
            extra.setdefault("training_device", s.get("device"))
    info = model_info(ck, threshold, extra, name, description, tta=tta, scales=scales)
    wrapped = WithActivation(model).eval()
    c = len(ck["cfg"]["bands"])
    ts = min(int(ck["cfg"]["tile_size"]), 256)
    x = torch.randn(1, c, ts, ts)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.onnx.export(wrapped, (x,), out, input_names=["input"], output_names=["probability"],
                      dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                    "probability": {0: "batch", 2: "height", 3: "width"}},
                      opset_version=17, dynamo=False,
                      do_constant_folding=not fp16_weights)  # folded weights would be rounded twice
    proto = onnx.load(out)
    if fp16_weights:
        store_weights_fp16(proto)
    write_metadata(proto, info)
    proto.producer_name = "tailings-mapper-training"
    onnx.checker.check_model(proto)
    onnx.save(proto, out)
    from .engine import write_item
    write_item(out)
    result = {"path": out, "size_mb": os.path.getsize(out) / 1e6, "threshold": info.threshold, "tta": info.tta, "scales": info.tta_scales}
    if check:
        result["max_abs_diff"] = compare_with_torch(wrapped, out, c)
        read_info(out)  # the engine's own validation of the metadata
    return result


def compare_with_torch(wrapped: nn.Module, onnx_path: str, c: int, sizes=(64, 160), seed=0) -> float:
    """Largest |torch - onnxruntime| over random inputs of several sizes and batch 2."""
    import onnxruntime as ort
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for s in sizes:
        x = torch.randn(2, c, s, s, generator=g)
        with torch.no_grad():
            ref = wrapped(x).numpy()
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        if got.shape != ref.shape:
            raise AssertionError("ONNX output %s, torch %s" % (got.shape, ref.shape))
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst
