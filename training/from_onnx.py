"""A torch network from one of our ONNX models, to train further: the weights read back from the
graph into the architecture its metadata names (``architecture``, ``config``, ``arch_kw``).

The exporter folds each batch normalisation into the convolution before it, so the ONNX file
holds a weight and a bias per convolution and no normalisation.  The convolutions are matched to
the network's in the order the forward pass runs them (the graph's order); a folded bias goes to
the normalisation after the convolution, which is made the identity (scale 1, mean 0, variance
1 - eps).  The network is then checked against onnxruntime on a random input: a model whose
layout does not match is refused, never trained from wrong weights.  Keep its normalisation
layers in eval mode while training (``freeze_norm``): their statistics are the folded ones.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from .engine import open_model

from . import configs


def network_config(info) -> Dict:
    """The training config of a model's network, from its metadata."""
    ex = info.extra
    arch, name = ex.get("architecture"), ex.get("config")
    if name:
        try:
            cfg = configs.get(name)
        except KeyError:
            cfg = None
        if cfg is not None and (arch is None or cfg["arch"] == arch):
            return dict(cfg, pretrained=False, bands=list(info.bands), classes=_classes(info))
    if not arch:
        raise ValueError("%s does not say which network it is (metadata 'architecture'): only models exported by "
                         "Tailings Mapper's training can be trained further" % info.name)
    return dict(configs.get("effunet_focal_dice"), arch=arch, arch_kw=dict(ex.get("arch_kw") or {}), pretrained=False,
                bands=list(info.bands), classes=_classes(info))


def _classes(info) -> List[Dict]:
    return [{"id": c.id, "name": c.name, "color": c.color} for c in info.classes]


def _conv_order(model: nn.Module, c: int) -> List[Tuple[nn.Conv2d, Optional[nn.BatchNorm2d]]]:
    """The network's convolutions in the order its forward pass runs them, each with the
    normalisation that takes its output (if any)."""
    calls = []

    def hook(mod, inp, out):
        calls.append((mod, id(inp[0]), id(out)))
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, c, 64, 64))
    finally:
        for h in handles:
            h.remove()
    order = []
    for i, (m, _, out) in enumerate(calls):
        if isinstance(m, nn.Conv2d):
            nxt = calls[i + 1] if i + 1 < len(calls) else None
            bn = nxt[0] if nxt is not None and isinstance(nxt[0], nn.BatchNorm2d) and nxt[1] == out else None
            order.append((m, bn))
    return order


def load_network(model_path: str, check: bool = True):
    """``(torch network, training config, model info)`` of an ONNX model of ours."""
    import onnx
    from onnx import numpy_helper
    from .train import build_model
    info = open_model(model_path).info
    cfg = network_config(info)
    net = build_model(cfg)
    vt = info.extra.get("veto")
    if vt:   # a model fine-tuned from corrections: the network and its veto (``veto.Vetoed``)
        from .veto import Vetoed
        net = Vetoed(net, int(vt["channels"]), int(vt["components_n"]))
    proto = onnx.load(model_path)
    inits = {t.name: t for t in proto.graph.initializer}
    consts = {n.output[0]: n for n in proto.graph.node if n.op_type == "Constant"}

    def array(name):
        if name in inits:
            return numpy_helper.to_array(inits[name]).astype(np.float32)
        if name in consts:
            return numpy_helper.to_array(consts[name].attribute[0].t).astype(np.float32)
        raise ValueError("%s: the weights %r are computed in the graph, not stored" % (model_path, name))
    nodes = [n for n in proto.graph.node if n.op_type == "Conv"]
    order = _conv_order(net, len(info.bands))
    if len(nodes) != len(order):
        raise ValueError("%s has %d convolutions, its architecture %s has %d: it is not the network its metadata "
                         "names" % (model_path, len(nodes), cfg["arch"], len(order)))
    with torch.no_grad():
        for node, (conv, bn) in zip(nodes, order):
            w = array(node.input[1])
            b = array(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0], np.float32)
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise ValueError("%s: a convolution of shape %s where the network has %s" % (
                    model_path, tuple(w.shape), tuple(conv.weight.shape)))
            conv.weight.copy_(torch.from_numpy(w))
            if bn is not None:
                bn.weight.fill_(1.0)
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                if conv.bias is not None:
                    conv.bias.copy_(torch.from_numpy(b))
                    bn.bias.zero_()
                else:
                    bn.bias.copy_(torch.from_numpy(b))
            elif conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(b))
            elif np.abs(b).max() > 0:
                raise ValueError("%s: a convolution with a bias where the network has none" % model_path)
    net.eval()
    if check:
        diff = _compare(net, model_path, info)
        if diff > 1e-3:
            raise ValueError("%s does not match its architecture %s (largest difference %.3g): it cannot be trained "
                             "further" % (model_path, cfg["arch"], diff))
    return net, cfg, info


def _compare(net, model_path: str, info) -> float:
    import onnxruntime as ort
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    x = torch.randn(1, len(info.bands), 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = net(x)
        if info.extra.get("veto"):   # probabilities already
            ref = z.numpy()
        else:
            ref = (torch.sigmoid(z) if info.task == "multilabel" or z.shape[1] == 1 else torch.softmax(z, 1)).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    if info.activation == "sigmoid":
        got = 1 / (1 + np.exp(-got))
    elif info.activation == "softmax":
        e = np.exp(got - got.max(1, keepdims=True))
        got = e / e.sum(1, keepdims=True)
    return float(np.abs(got - ref).max())


def freeze_norm(net: nn.Module) -> None:
    """Normalisation layers in eval mode (their statistics kept), to call after ``net.train()``."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
