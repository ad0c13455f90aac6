"""Which format a model speaks, and its validated metadata checked against its network.

A model is an ONNX file with our metadata (key ``tailings_mapper``), or with only the Deepness
plugin's keys, or with none (run on the user's settings, as Deepness does); or a STAC MLM item
(``*.json``) whose ``mlm:model`` asset is the ONNX file.  :func:`read` gives the network's path
and its :class:`~inference.model.metadata.ModelInfo`, checked against the network's input and outputs
(read by ``onnx_header``, without onnxruntime); :func:`write_metadata` stores ours, with the
Deepness keys, so that the models we export run there too.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Dict, Optional, Tuple

from . import deepness, mlm, onnx_header
from ..errors import ModelError
from .metadata import META_KEY, ModelInfo, parse_ours, validate


def _dim(d) -> Optional[int]:
    return d if isinstance(d, int) and d > 0 else None


def read(path: str) -> Tuple[str, ModelInfo]:
    """``(network path, validated metadata)`` of a model file or a STAC MLM item."""
    if mlm.is_item(path):
        item = mlm.load(path)
        onnx_path = mlm.model_asset(item, path)
        header = onnx_header.read(onnx_path)
        if META_KEY in header.metadata:   # the network's own description is the fuller one
            return onnx_path, info_from_header(header, onnx_path)
        info = mlm.read(item, _stem(path), _out_channels(header.outputs))
        return onnx_path, check_against(info, header, onnx_path)
    return path, info_from_header(onnx_header.read(path), path)


def _stem(path: str) -> str:
    base = os.path.basename(path)
    for suffix in (mlm.SUFFIX, ".json", ".onnx"):
        if base.lower().endswith(suffix):
            return base[:-len(suffix)]
    return os.path.splitext(base)[0]


def _out_channels(outputs) -> Optional[int]:
    """Channels of all outputs together (an (N, H, W) output is one); None when one is not fixed."""
    total = 0
    for o in outputs:
        s = o.shape
        if s is not None and len(s) == 3:
            total += 1
        elif s is not None and len(s) == 4 and _dim(s[1]):
            total += s[1]
        else:
            return None
    return total


def info_from_header(header, path: str) -> ModelInfo:
    """The validated metadata of a model file, checked against its network's input and output
    (``header``: an ``onnx_header.OnnxHeader``); :class:`ModelError` names what is wrong."""
    stem = _stem(path)
    if META_KEY in header.metadata:
        info = parse_ours(header.metadata[META_KEY], stem)
    else:   # Deepness's keys, or none at all: Deepness's rules
        info = deepness.read(header.metadata, header.inputs, header.outputs, stem)
    return check_against(info, header, path)


def check_against(info: ModelInfo, header, path: str) -> ModelInfo:
    inputs, outputs = header.inputs, header.outputs
    if len(inputs) != 1:
        raise ModelError("the network has %d inputs; a segmentation model has one (N, C, H, W)" % len(inputs))
    shape = inputs[0].shape
    if shape is None or len(shape) != 4:
        raise ModelError("the network input has shape %s; expected (N, C, H, W)" % (_shape_text(shape),))
    c = _dim(shape[1])
    if c is not None and c != len(info.bands):
        raise ModelError("the network reads %d channels but the metadata lists %d bands (%s)"
                         % (c, len(info.bands), ", ".join(info.bands)))
    h, w = _dim(shape[2]), _dim(shape[3])
    if h and w and h != w:
        raise ModelError("the network takes %d x %d tiles; only square tiles are supported" % (h, w))
    changes: Dict[str, Any] = {"fixed_input_size": h}
    if info.source_format != "tailings_mapper" and h:
        pct = float(info.extra.get("overlap_pct", 100.0 * info.tile_overlap / info.tile_size))
        changes.update(tile_size=h, tile_overlap=min(int(round(h * pct / 100.0)), h // 2))
    if not outputs:
        raise ModelError("the network has no output")
    if len(outputs) > 1 and info.source_format == "tailings_mapper":
        raise ModelError("the network has %d outputs; a model with our metadata has one (N, classes, H, W)"
                         % len(outputs))
    for o in outputs:
        if o.shape is None or len(o.shape) not in (3, 4):
            raise ModelError("the network output %s has shape %s; expected (N, classes, H, W)"
                             % (o.name, _shape_text(o.shape)))
    if len(outputs) == 1 and len(outputs[0].shape) == 4:
        k = _dim(outputs[0].shape[1])
    else:
        k = _out_channels(outputs)
    changes.update(output_channels=k, input_name=inputs[0].name, path=path)
    info = replace(info, **changes)
    validate(info)
    return info


def _shape_text(shape) -> str:
    return "unknown" if shape is None else "[%s]" % ", ".join("?" if d is None else str(d) for d in shape)


def write_metadata(onnx_model, info: ModelInfo, with_deepness: bool = True) -> None:
    """Store ``info`` (and the Deepness equivalent) in an ``onnx.ModelProto`` in place."""
    props = {META_KEY: info.to_json()}
    if with_deepness and info.task != "multilabel":   # (Deepness runs one class a pixel)
        props.update(deepness.props(info))
    keep = [p for p in onnx_model.metadata_props if p.key not in props]
    del onnx_model.metadata_props[:]
    for p in keep:
        onnx_model.metadata_props.add(key=p.key, value=p.value)
    for k, v in props.items():
        onnx_model.metadata_props.add(key=k, value=v)
