"""The Deepness plugin's model format: its metadata keys read by its loader's rules, and written.

Deepness (a QGIS plugin) reads a few ONNX ``metadata_props``, each a JSON value (or a Python
literal): ``model_type``, ``class_names`` (a dict ``{"0": "name"}`` per model output, or a list
of them, one per output), ``resolution`` (cm per pixel; optional: its panel sets it),
``tile_size`` (also written ``tiles_size``), ``tiles_overlap`` (percent),
``standardization_mean``/``_std``, ``seg_thresh``, ``seg_small_segment``.  It feeds the
raster's first bands, ``raw / 255``, then standardised; the outputs are probabilities; a
one-channel (or ``(N, H, W)``) output is that class against an implied background.  A model
with no metadata at all runs on its panel's settings.

:func:`read` gives such a model's :class:`~inference.model.metadata.ModelInfo`, saying in
``notes`` what it assumed; :func:`props` writes the keys for the models we export.
"""
from __future__ import annotations

import ast
import json
from typing import Dict, List, Optional, Sequence

from . import bands as bandlib
from ..errors import ModelError
from .metadata import ModelInfo, _f_list, _parse_classes

KEYS = ("model_type", "class_names", "names", "resolution", "tiles_size", "tile_size", "tiles_overlap",
        "standardization_mean", "standardization_std", "seg_thresh", "seg_small_segment")
DEFAULT_TILE = 512       # Deepness's panel defaults
DEFAULT_OVERLAP_PCT = 15


def has_keys(props: Dict[str, str]) -> bool:
    return any(k in props for k in KEYS)


def value(text: str):
    """A Deepness metadata value: JSON, else a Python literal (integer keys)."""
    try:
        return json.loads(text)
    except ValueError:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ModelError("Deepness metadata value %r is neither JSON nor a Python literal" % text) from None


def output_names(raw) -> List[List[str]]:
    """``class_names`` as Deepness's loader reads it: per model output, its names in key order
    (keys 0, 1, 2... without gaps); a plain list of names is one output's."""
    if isinstance(raw, dict):
        raw = [raw]
    if isinstance(raw, list) and raw and all(isinstance(n, str) for n in raw):
        raw = [{str(i): n for i, n in enumerate(raw)}]
    if not isinstance(raw, list) or not raw or not all(isinstance(d, dict) and d for d in raw):
        raise ModelError("Deepness metadata 'class_names' must be a dict {\"0\": \"name\", ...} or a list of them "
                         "(one per model output), got %r" % (raw,))
    out = []
    for i, d in enumerate(raw):
        try:
            items = sorted(((int(k), str(v)) for k, v in d.items()), key=lambda kv: kv[0])
        except (TypeError, ValueError):
            raise ModelError("Deepness metadata 'class_names' of output %d has keys that are not numbers: %s"
                             % (i + 1, ", ".join(map(repr, d)))) from None
        if [k for k, _ in items] != list(range(len(items))):
            raise ModelError("Deepness metadata 'class_names' of output %d are not numbered 0, 1, 2...: %s"
                             % (i + 1, [k for k, _ in items]))
        out.append([n for _, n in items])
    return out


def _channels(shape) -> Optional[int]:
    """Channels of an output: (N, H, W) is one; (N, C, H, W) is C (None when not fixed)."""
    if shape is not None and len(shape) == 3:
        return 1
    if shape is not None and len(shape) == 4:
        return shape[1] if isinstance(shape[1], int) and shape[1] > 0 else None
    raise ModelError("a Deepness segmentation model's outputs are (N, C, H, W) or (N, H, W); one has shape %s"
                     % (list(shape) if shape else "unknown",))


def _head_classes(names: Optional[List[str]], channels: Optional[int], head: int) -> List[str]:
    """One output's class names, background first for a one-channel (sigmoid) output."""
    if names is None:
        n = channels or 1
        return ["background", "channel_0"] if n == 1 else ["channel_%d" % c for c in range(n)]
    if channels == 1 or (channels is None and len(names) == 1):
        return ["background", names[0]] if len(names) == 1 else names
    if channels is not None and len(names) != channels:
        raise ModelError("Deepness metadata names %d classes for output %d (%s) but it has %d channels"
                         % (len(names), head + 1, ", ".join(names), channels))
    return names


def read(props: Dict[str, str], inputs: Sequence, outputs: Sequence, name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a model with Deepness's keys, or with no metadata at all
    (``inputs``/``outputs``: the network's ``onnx_header.ValueInfo``); what it had to assume is in
    ``notes``."""
    v = {k: value(props[k]) for k in KEYS if k in props}
    notes: List[str] = []
    if not v:
        notes.append("the model carries no metadata: run as Deepness would, on the settings given here "
                     "(the raster's own resolution, tile %d px, overlap %d %%, raw values / 255, outputs "
                     "taken as probabilities) unless the run's options say otherwise"
                     % (DEFAULT_TILE, DEFAULT_OVERLAP_PCT))
    mtype = str(v.get("model_type", "Segmentor")).capitalize()
    if mtype != "Segmentor":
        raise ModelError("this is a Deepness %r model; Tailings Mapper runs segmentation models (Segmentor) only"
                         % mtype)
    shape = inputs[0].shape if inputs else None
    c = shape[1] if shape is not None and len(shape) == 4 and isinstance(shape[1], int) and shape[1] > 0 else None
    mean = v.get("standardization_mean", 0.0)
    n = c or (len(mean) if isinstance(mean, list) else 3)
    if "class_names" in v or "names" in v:
        bands = ["red", "green", "blue", "nir"][:n] if n in (3, 4) else [bandlib.positional(i + 1) for i in range(n)]
        if n not in (3, 4):
            notes.append("the model's %d inputs read the raster's first %d bands in order (give a band mapping "
                         "for others)" % (n, n))
    else:
        bands = [bandlib.positional(i + 1) for i in range(n)]
        notes.append("the model's %d inputs read the raster's first %d bands in order (give a band mapping for "
                     "others)" % (n, n))
    raw_names = v.get("class_names", v.get("names"))
    per_output = output_names(raw_names) if raw_names is not None else None
    if per_output is None:
        notes.append("the model names no classes: they are named by output channel (channel_0, ...)")
    heads = [_channels(o.shape) for o in outputs] if outputs else [None]
    if per_output is not None and len(per_output) != len(heads):
        raise ModelError("Deepness metadata 'class_names' describes %d outputs but the network has %d"
                         % (len(per_output), len(heads)))
    threshold = float(v.get("seg_thresh", 0.5))
    if len(heads) == 1:
        names = _head_classes(per_output[0] if per_output else None, heads[0], 0)
        task, thresholds, channels = ("binary" if len(names) == 2 and heads[0] in (1, None) else "multiclass"), [], None
        if heads[0] == 1:
            channels = 1
    elif all(h == 1 for h in heads):
        # several sigmoid heads: each one a class of its own, with a band of its own
        labels = [(per_output[i][-1] if per_output else "output_%d" % i) for i in range(len(heads))]
        names, task, thresholds, channels = ["background"] + labels, "multilabel", [threshold] * len(labels), None
        notes.append("the model has %d outputs, one sigmoid channel each: each is its own class (%s), with its own "
                     "band in the class raster; band 1 holds the most probable" % (len(heads), ", ".join(labels)))
    else:
        raise ModelError("this Deepness model has %d outputs (heads) with %s channels: Tailings Mapper runs several "
                         "outputs only when each is one sigmoid channel (each its own class band); export the head "
                         "you need as a model of its own"
                         % (len(heads), ", ".join("?" if h is None else str(h) for h in heads)))
    classes = _parse_classes([{"id": i, "name": nm} for i, nm in enumerate(names)])
    if "resolution" in v:
        gsd = float(v["resolution"]) / 100.0
    else:
        gsd = 0.0
        if "class_names" in v or "names" in v:
            notes.append("the model states no resolution: run at the raster's own (or the run's GSD option)")
    tile = int(v.get("tile_size", v.get("tiles_size", DEFAULT_TILE)))
    overlap_pct = float(v.get("tiles_overlap", DEFAULT_OVERLAP_PCT))
    return ModelInfo(
        name=name, bands=bands, gsd_m=gsd, tile_size=tile,
        tile_overlap=int(round(tile * overlap_pct / 100.0)), classes=classes, task=task, units="raw",
        scale=[1 / 255.0] * n, offset=[0.0] * n,
        mean=_f_list(mean, n, "standardization_mean", 0.0),
        std=_f_list(v.get("standardization_std", 1.0), n, "standardization_std", 1.0),
        activation="none", threshold=threshold, thresholds=thresholds, min_area_ha=0.0,
        source_format="deepness" if v else "none", output_channels=channels,
        extra={"deepness_small_segment": v.get("seg_small_segment"), "overlap_pct": overlap_pct},
        notes=tuple(notes),
    )


def props(info: ModelInfo) -> Dict[str, str]:
    """Deepness metadata equivalent to ``info``, for models we export.

    Deepness feeds ``raw / 255`` then standardises with (mean', std'); we feed
    ``raw * scale + offset`` then standardise with (mean, std).  They agree when
    mean' = (mean - offset) / (255 * scale) and std' = std / (255 * scale).
    """
    mean = [(m - o) / (255.0 * s) for m, o, s in zip(info.mean, info.offset, info.scale)]
    std = [sd / (255.0 * s) for sd, s in zip(info.std, info.scale)]
    return {
        "model_type": json.dumps("Segmentor"),
        "class_names": json.dumps({str(c.id): c.name for c in info.classes}),
        "resolution": json.dumps(info.gsd_m * 100.0),
        "tiles_size": json.dumps(info.tile_size),
        "tile_size": json.dumps(info.tile_size),
        "tiles_overlap": json.dumps(int(round(100.0 * info.tile_overlap / info.tile_size))),
        "standardization_mean": json.dumps(mean),
        "standardization_std": json.dumps(std),
        "seg_thresh": json.dumps(info.threshold),
        "seg_small_segment": json.dumps(0),
    }
