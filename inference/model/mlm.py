"""STAC Machine Learning Model (MLM) items: the ecosystem's model card, written and read.

An MLM item is a STAC Item whose properties describe the model (``mlm:input`` bands, value
scaling and shape, ``mlm:output`` classes and shape, framework...) and whose ``mlm:model``
asset is the network.  We write one beside every shipped and exported model
(``<model>.stac.json``) and run a model given only as an item with an ONNX asset.

The mapping onto :class:`~inference.model.metadata.ModelInfo`:

- ``mlm:input[0].bands``: band names (``B04`` of a ``sentinel-2`` constellation is ``S2:B04``;
  else a catalogue name, else the band's ``eo:common_name``, else the raster's bands in order).
- the item's ``bands`` with ``scale``/``offset`` (STAC 1.1): the model reads physical values
  (reflectance = raw x scale + offset, the product's own conversion first); without them it
  reads raw values.  ``value_scaling`` (per band, or one for all): ``z-score``, ``min-max``,
  ``scale``, ``offset`` or null.
- ``mlm:output[0]``: ``classification:classes`` (or ``classification_classes``) with
  ``color_hint``; ``result.shape`` gives the channels; a ``post_processing_function`` naming a
  sigmoid (``expit``) or a softmax is the activation, else the outputs are probabilities.
- ``gsd`` (metres) the resolution; ``tailings_mapper:tile_overlap``, ``:threshold``,
  ``:thresholds``, ``:min_area_ha``, ``:tta``, ``:tta_scales``, ``:task`` our run settings
  (defaults, said in the notes, when absent).  The training statistics of the out-of-distribution
  check stay in the ONNX file (tens of kB): a model run from its item alone does not have them.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from . import bands as bandlib
from ..errors import BandMappingError, ModelError
from .metadata import ModelInfo, _parse_classes

SCHEMA = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
NS = "tailings_mapper:"
SIGMOID = "scipy.special:expit"
SOFTMAX = "scipy.special:softmax"
SUFFIX = ".stac.json"
DEFAULT_OVERLAP_PCT = 15


def item_path(model_path: str) -> str:
    """Where a model's MLM item lies: ``<model>.stac.json`` beside it."""
    return os.path.splitext(model_path)[0] + SUFFIX


def is_item(path: str) -> bool:
    return path.lower().endswith(".json")


def _band_entry(name: str) -> Tuple[str, Dict[str, Any]]:
    b = bandlib.band(name)
    short = name[3:] if name.upper().startswith("S2:") else name
    entry: Dict[str, Any] = {"name": short, "eo:common_name": b.common}
    if b.wavelength_nm:
        entry["eo:center_wavelength"] = round(b.wavelength_nm / 1000.0, 4)
    return short, entry


def item(info: ModelInfo, model_path: str, header=None) -> Dict[str, Any]:
    """The MLM item (a dict, JSON-ready) of a model file and its metadata (``header``: the
    network's inputs and outputs, read from the file when not given)."""
    if header is None and os.path.isfile(model_path):
        from .onnx_header import read as read_header
        header = read_header(model_path)
    names, entries = zip(*(_band_entry(b) for b in info.bands))
    entries = [dict(e) for e in entries]
    if info.units == "reflectance":
        for e, s, o in zip(entries, info.scale, info.offset):
            e.update(scale=s, offset=o)
        scaling = [{"type": "z-score", "mean": m, "stddev": sd} for m, sd in zip(info.mean, info.std)]
    else:   # (raw x s + o - m) / sd == (raw - (m - o) / s) / (sd / s)
        scaling = [{"type": "z-score", "mean": (m - o) / s, "stddev": sd / s}
                   for m, sd, s, o in zip(info.mean, info.std, info.scale, info.offset)]
    t = info.tile_size
    inp_name = (header.inputs[0].name if header is not None else info.input_name) or "input"
    out_name = (header.outputs[0].name if header is not None else None) or "output"
    post = {"sigmoid": SIGMOID, "softmax": SOFTMAX}.get(info.activation)
    classes = [{"value": c.id, "name": c.name, "color_hint": c.color[1:].upper(),
                **({"description": "background (no polygons)"} if c.is_background else {})}
               for c in info.classes]
    props: Dict[str, Any] = {
        "datetime": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
        .replace("+00:00", "Z"),
        "description": info.description or info.summary(),
        "mlm:name": info.name,
        "mlm:architecture": str(info.extra.get("architecture") or "U-Net"),
        "mlm:tasks": ["semantic-segmentation"],
        "mlm:framework": "ONNX",
        "mlm:accelerator": None,
        "mlm:accelerator_constrained": False,
        "mlm:batch_size_suggestion": 4,
        "mlm:pretrained": True,
        "mlm:input": [{
            "name": inp_name, "bands": list(names),
            "input": {"shape": [-1, len(names), t, t], "dim_order": ["batch", "channel", "height", "width"],
                      "data_type": "float32"},
            "value_scaling": scaling, "resize_type": None,
            "description": ("surface reflectance (raw x scale + offset of each band)" if info.units == "reflectance"
                            else "raw band values"),
        }],
        "mlm:output": [{
            "name": out_name, "tasks": ["semantic-segmentation"],
            "result": {"shape": [-1, info.channels, t, t], "dim_order": ["batch", "channel", "height", "width"],
                       "data_type": "float32"},
            "classification:classes": classes,
            "post_processing_function": {"format": "python", "expression": post} if post else None,
        }],
        "bands": entries,
        NS + "task": info.task,
        NS + "tile_overlap": info.tile_overlap,
        NS + "threshold": info.threshold,
        NS + "min_area_ha": info.min_area_ha,
        NS + "tta": info.tta,
        NS + "tta_scales": list(info.tta_scales),
    }
    if info.thresholds:
        props[NS + "thresholds"] = list(info.thresholds)
    if info.gsd_m > 0:
        props["gsd"] = info.gsd_m
    if any(b.upper().startswith("S2:") for b in info.bands):
        props["constellation"] = "sentinel-2"
    if info.license:
        props["license"] = info.license
    return {
        "type": "Feature", "stac_version": "1.1.0", "stac_extensions": [SCHEMA],
        "id": info.name, "geometry": None, "properties": props, "links": [],
        "assets": {"model": {"href": os.path.basename(model_path), "title": info.name + " (ONNX)",
                             "type": "application/octet-stream; framework=onnx; profile=onnx",
                             "roles": ["mlm:model"], "mlm:artifact_type": "onnx"}},
    }


def write_item(info: ModelInfo, model_path: str, header=None) -> str:
    """Write the model's MLM item beside it; its path."""
    path = item_path(model_path)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(item(info, model_path, header), fh, indent=1)
        fh.write("\n")
    return path


def load(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
    except OSError as e:
        raise ModelError("cannot read the STAC item %s: %s" % (path, e.strerror or e)) from None
    except ValueError as e:
        raise ModelError("%s is not valid JSON: %s" % (os.path.basename(path), e)) from None
    if not isinstance(d, dict) or not isinstance(d.get("properties"), dict) or \
            not any(k.startswith("mlm:") for k in d["properties"]):
        raise ModelError("%s is not a STAC MLM item (no mlm: properties)" % os.path.basename(path))
    return d


def model_asset(d: Dict[str, Any], item_file: str) -> str:
    """The path of the item's ONNX model asset (relative to the item's folder)."""
    assets = d.get("assets") or {}
    chosen = [a for a in assets.values() if "mlm:model" in (a.get("roles") or [])] or list(assets.values())
    onnx = [a for a in chosen if "onnx" in (str(a.get("type", "")) + str(a.get("mlm:artifact_type", ""))
                                            + str(a.get("href", ""))).lower()]
    if not onnx:
        raise ModelError("the STAC item %s has no ONNX model asset (an asset with role mlm:model and an .onnx file); "
                         "Tailings Mapper runs ONNX models" % os.path.basename(item_file))
    href = str(onnx[0].get("href", ""))
    if href.startswith("file://"):
        href = href[7:]
    if "://" in href:
        raise ModelError("the model asset %s is not a local file: download it beside the item first" % href)
    path = href if os.path.isabs(href) else os.path.join(os.path.dirname(os.path.abspath(item_file)), href)
    if not os.path.isfile(path):
        raise ModelError("the STAC item's model asset %s is missing" % path)
    return path


def _model_band(name: str, entry: Dict[str, Any], s2: bool) -> Optional[str]:
    for cand in ([("S2:" + name) if s2 else None, name, entry.get("eo:common_name") or entry.get("common_name")]):
        if isinstance(cand, str) and cand:
            try:
                bandlib.band(cand)
                return cand
            except BandMappingError:   # not a band name the engine knows: the next candidate
                continue
    return None


def _scaling(objs, n: int) -> Tuple[List[float], List[float], List[float], List[float]]:
    """``value_scaling`` as (scale, offset, mean, std): raw * scale + offset, then (x - mean) / std."""
    if objs is None:
        objs = [None]
    if not isinstance(objs, list) or len(objs) not in (1, n):
        raise ModelError("mlm:input value_scaling must hold one object per band (%d) or one for all" % n)
    objs = objs * n if len(objs) == 1 else objs
    sc, of, mn, sd = [], [], [], []
    for o in objs:
        kind = (o or {}).get("type") if isinstance(o, dict) or o is None else "?"
        a, b, m, s = 1.0, 0.0, 0.0, 1.0
        if kind is None:
            pass
        elif kind == "z-score":
            m, s = float(o["mean"]), float(o["stddev"])
        elif kind == "min-max":
            lo, hi = float(o["minimum"]), float(o["maximum"])
            m, s = lo, hi - lo
        elif kind == "scale":
            s = float(o["value"])
        elif kind == "offset":
            m = float(o["value"])
        else:
            raise ModelError("mlm:input value_scaling %r is not one Tailings Mapper applies (z-score, min-max, "
                             "scale, offset or null)" % (kind,))
        sc.append(a), of.append(b), mn.append(m), sd.append(s)
    return sc, of, mn, sd


def read(d: Dict[str, Any], name: str, out_channels: Optional[int]) -> ModelInfo:
    """A :class:`ModelInfo` from an MLM item's properties (``out_channels``: the network's, when
    fixed); ``notes`` say what was assumed."""
    p = d["properties"]
    notes: List[str] = []
    inputs, outputs = p.get("mlm:input") or [], p.get("mlm:output") or []
    if len(inputs) != 1:
        raise ModelError("the STAC MLM item has %d inputs; a segmentation model has one" % len(inputs))
    inp = inputs[0]
    names = [b if isinstance(b, str) else b.get("name") for b in inp.get("bands") or []]
    entries = {e.get("name"): e for e in p.get("bands") or p.get("eo:bands") or [] if isinstance(e, dict)}
    shape = (inp.get("input") or {}).get("shape") or []
    n = len(names) or (int(shape[1]) if len(shape) == 4 and shape[1] and shape[1] > 0 else 3)
    s2 = "sentinel-2" in str(p.get("constellation", "")).lower() or "sentinel-2" in str(p.get("platform", "")).lower()
    bands = [_model_band(nm, entries.get(nm, {}), s2) for nm in names] if names else [None] * n
    if not all(bands):
        notes.append("the item's bands %s are not ones Tailings Mapper knows: the model reads the raster's first "
                     "%d bands in order (give a band mapping for others)" % (", ".join(map(str, names)) or "(none)", n))
        bands = [bandlib.positional(i + 1) for i in range(n)]
    physical = [entries.get(nm, {}) for nm in names]
    reflectance = bool(names) and all("scale" in e or "offset" in e for e in physical)
    sc, of, mn, sd = _scaling(inp.get("value_scaling"), n)
    if reflectance:
        sc = [float(e.get("scale", 1.0)) for e in physical]
        of = [float(e.get("offset", 0.0)) for e in physical]
    if not outputs:
        raise ModelError("the STAC MLM item has no mlm:output")
    out = outputs[0]
    raw_classes = out.get("classification:classes", out.get("classification_classes"))
    t = (out.get("result") or {}).get("shape") or []
    k = out_channels or (int(t[1]) if len(t) == 4 and t[1] and t[1] > 0 else None)
    task = p.get(NS + "task")
    if raw_classes:
        classes = _parse_classes([{"id": int(c["value"]), "name": str(c.get("name") or c.get("title") or c["value"]),
                                   **({"color": "#" + str(c["color_hint"]).lstrip("#")} if c.get("color_hint") else {})}
                                  for c in raw_classes])
    else:
        kk = k or 1
        classes = _parse_classes(["background", "channel_0"] if kk == 1 else ["channel_%d" % i for i in range(kk)])
        notes.append("the item names no classes: they are named by output channel")
    post = json.dumps(out.get("post_processing_function") or "").lower()
    activation = "sigmoid" if ("expit" in post or "sigmoid" in post) else "softmax" if "softmax" in post else "none"
    if activation == "none" and not out.get("post_processing_function"):
        notes.append("the item gives no post-processing: the network's outputs are taken as probabilities")
    tile = int(shape[-1]) if len(shape) == 4 and shape[-1] and shape[-1] > 0 else 512
    if NS + "tile_overlap" in p:
        overlap = int(p[NS + "tile_overlap"])
    else:
        overlap = int(round(tile * DEFAULT_OVERLAP_PCT / 100.0))
        notes.append("tile overlap %d px (%d %%), the item states none" % (overlap, DEFAULT_OVERLAP_PCT))
    gsd = float(p.get("gsd") or 0.0)
    if not gsd:
        notes.append("the item states no gsd: run at the raster's own resolution (or the run's GSD option)")
    if not task:
        task = "binary" if len(classes) == 2 else "multiclass"
    return ModelInfo(
        name=str(p.get("mlm:name") or d.get("id") or name), bands=bands, gsd_m=gsd, tile_size=tile,
        tile_overlap=overlap, classes=classes, task=str(task),
        units="reflectance" if reflectance else "raw", scale=sc, offset=of, mean=mn, std=sd,
        activation=activation, threshold=float(p.get(NS + "threshold", 0.5)),
        thresholds=[float(x) for x in p.get(NS + "thresholds") or []],
        min_area_ha=float(p.get(NS + "min_area_ha", 0.0)), tta=int(p.get(NS + "tta", 1)),
        tta_scales=[float(x) for x in p.get(NS + "tta_scales") or [1.0]], description=str(p.get("description", "")),
        license=str(p.get("license", "")), source_format="mlm", notes=tuple(notes),
    )
