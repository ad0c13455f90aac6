"""Deepness's model loader, as its rules are documented and coded (model_base.py, segmentor.py of
the Deepness plugin), restated for the tests: what Deepness would read from an ONNX file's
metadata and outputs.  Independent of the engine's own reader (``inference.model.deepness``), so the
two check each other.  And :func:`net`: networks of the shapes Deepness's models take.
"""
import ast
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _meta(path):
    return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}


def _json(meta, key):
    return json.loads(meta[key]) if key in meta else None


def outputs_channel_names(meta):
    """Per output, the class names: JSON (or a Python literal with integer keys); one dict is one
    output; keys sorted by number and consecutive from 0."""
    for key in ("class_names", "names"):
        if key not in meta:
            continue
        txt = meta[key]
        try:
            names = json.loads(txt)
        except json.JSONDecodeError:
            names = ast.literal_eval(txt)
        if isinstance(names, dict):
            names = [names]
        out = []
        for d in names:
            items = sorted(d.items(), key=lambda kv: int(kv[0]))
            assert [int(k) for k, _ in items] == list(range(len(items))), "not consecutive"
            out.append([v for _, v in items])
        return out
    return None


def read(path):
    """What Deepness takes from the model: model type, classes per output (a one-channel sigmoid
    output gets an implied background), resolution (cm/px), tile size, overlap (%),
    standardisation, threshold."""
    meta = _meta(path)
    graph = onnx.load(path, load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    outs = [[d.dim_value or None for d in o.type.tensor_type.shape.dim] for o in graph.output]
    names = outputs_channel_names(meta)
    sigmoid = [len(s) == 3 or s[-3] == 1 for s in outs]
    if names is not None:
        names = [["background", n[0]] if len(n) == 1 and sig else n for n, sig in zip(names, sigmoid)]
    inputs = [i for i in graph.input if i.name not in inits]
    return {
        "model_type": str(_json(meta, "model_type")).capitalize() if "model_type" in meta else None,
        "classes": names,
        "resolution_cm": float(_json(meta, "resolution")) if "resolution" in meta else None,
        "tile_size": int(_json(meta, "tile_size")) if "tile_size" in meta else None,
        "tiles_overlap_pct": int(_json(meta, "tiles_overlap")) if "tiles_overlap" in meta else None,
        "mean": _json(meta, "standardization_mean"),
        "std": _json(meta, "standardization_std"),
        "seg_thresh": float(_json(meta, "seg_thresh")) if "seg_thresh" in meta else None,
        "input_channels": inputs[0].type.tensor_type.shape.dim[1].dim_value,
    }


def net(path, heads, props=None, channels=3, fixed=None):
    """An ONNX network of 1x1 convolutions on (N, channels, H, W): ``heads`` is a list of
    ``(output name, weights (k, channels), bias (k), activation, squeeze)``; ``squeeze`` makes a
    one-channel head (N, H, W).  ``props``: metadata, each value JSON text (or a literal)."""
    hw = fixed or "h"
    nodes, inits, outs = [], [], []
    for i, (name, w, b, act, squeeze) in enumerate(heads):
        w = np.asarray(w, np.float32).reshape(len(b), channels, 1, 1)
        inits += [numpy_helper.from_array(w, "w%d" % i), numpy_helper.from_array(np.asarray(b, np.float32), "b%d" % i)]
        nodes.append(helper.make_node("Conv", ["x", "w%d" % i, "b%d" % i], ["z%d" % i]))
        last = "z%d" % i
        if act == "sigmoid":
            nodes.append(helper.make_node("Sigmoid", [last], ["a%d" % i]))
            last = "a%d" % i
        elif act == "softmax":
            nodes.append(helper.make_node("Softmax", [last], ["a%d" % i], axis=1))
            last = "a%d" % i
        if squeeze:
            inits.append(numpy_helper.from_array(np.array([1], np.int64), "ax%d" % i))
            nodes.append(helper.make_node("Squeeze", [last, "ax%d" % i], [name]))
            outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", hw, hw]))
        else:
            nodes.append(helper.make_node("Identity", [last], [name]))
            outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", len(b), hw, hw]))
    graph = helper.make_graph(nodes, "deepness_like", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["n", channels, hw, hw])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (props or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, path)
    return path
