"""Self-describing ONNX segmentation models: our metadata schema, parsed and validated.

Our schema lives in one ONNX ``metadata_props`` entry, key ``tailings_mapper``, a JSON
object (see README, "Model metadata"): :class:`ModelInfo` is what the engine knows of a
model whatever its file said it in (ours, Deepness's keys: ``deepness``; a STAC MLM item:
``mlm``; ``formats`` chooses and checks against the network).  Nothing here needs
onnxruntime.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple

from . import bands as bandlib
from ..errors import ModelError
from ..tiling import check_passes, check_scales

META_KEY = "tailings_mapper"
SCHEMA_VERSION = 1
DEFAULT_COLOURS = ["#000000", "#e6550d", "#3182bd", "#31a354", "#756bb1", "#fdd0a2", "#636363",
                   "#e7ba52", "#9c9ede", "#d6616b", "#17becf", "#bcbd22"]


# Files written before the explicit ``background`` flag: a class with one of these names is the
# background (no polygons, drawn transparent).
BACKGROUND_NAMES = ("background", "other", "none", "no data")


def rgb(colour: str) -> Tuple[int, int, int]:
    """``(r, g, b)`` of a ``#rrggbb`` colour."""
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    color: str  # "#rrggbb"
    background: Optional[bool] = None   # no polygons, drawn transparent; None: by its name (older files)

    @property
    def is_background(self) -> bool:
        if self.background is not None:
            return bool(self.background)
        return self.name.strip().lower() in BACKGROUND_NAMES

    @property
    def rgb(self) -> Tuple[int, int, int]:
        return rgb(self.color)

    def to_dict(self) -> Dict[str, Any]:
        return {"id": self.id, "name": self.name, "color": self.color, "background": self.is_background}


@dataclass(frozen=True)
class ModelInfo:
    """Everything the engine needs to know about a model; parsed and validated."""
    name: str
    bands: List[str]                 # model input channels, in order, by band name
    gsd_m: float                     # ground sample distance the model was trained at (0: not stated, the raster's)
    tile_size: int
    tile_overlap: int                # pixels
    classes: List[ClassInfo]
    task: str = "binary"             # "binary", "multiclass" (one class a pixel) or "multilabel" (a sigmoid
    #   per non-background class, in id order: labels may overlap)
    units: str = "reflectance"       # "reflectance": raster scale/offset apply; "raw": values as they are
    scale: List[float] = field(default_factory=list)   # raster value * scale + offset ...
    offset: List[float] = field(default_factory=list)
    mean: List[float] = field(default_factory=list)    # ... then (x - mean) / std
    std: List[float] = field(default_factory=list)
    activation: str = "none"         # applied by the engine to the output: none|sigmoid|softmax
    threshold: float = 0.5
    min_area_ha: float = 0.0
    tta: int = 1                     # test-time augmentation passes by default: 1 (off), 2, 4 or 8
    tta_scales: List[float] = field(default_factory=lambda: [1.0])  # scales each tile is seen at
    thresholds: List[float] = field(default_factory=list)   # multilabel: per label class (else threshold)
    description: str = ""
    version: str = ""
    license: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)  # training data, metrics...: carried, not used
    source_format: str = "tailings_mapper"  # or "deepness", "mlm", "none" (no metadata)
    notes: Tuple[str, ...] = ()      # what reading the file had to assume (said with every run; not stored)
    path: Optional[str] = None
    input_name: Optional[str] = None
    fixed_input_size: Optional[int] = None
    output_channels: Optional[int] = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def class_names(self) -> Dict[int, str]:
        return {c.id: c.name for c in self.classes}

    def positive_class(self) -> int:
        return self.classes[-1].id

    def label_classes(self) -> List[ClassInfo]:
        """The classes that get polygons, in id order (a multilabel model's output channels)."""
        return [c for c in self.classes if not c.is_background]

    def label_thresholds(self) -> List[float]:
        """Per label class, its decision threshold (multilabel)."""
        n = len(self.label_classes())
        return list(self.thresholds) if len(self.thresholds) == n else [self.threshold] * n

    @property
    def channels(self) -> int:
        """Output channels the network is expected to have."""
        if self.task == "multilabel":
            return len(self.label_classes())
        return self.output_channels or (1 if self.n_classes == 2 else self.n_classes)

    def background_ids(self) -> set:
        """Classes that get no polygons and are drawn transparent."""
        return {c.id for c in self.classes if c.is_background}

    def summary(self) -> str:
        return ("%s: %s model, inputs %s, %g m GSD, tile %d/%d, classes %s"
                % (self.name, self.task, ", ".join(self.bands), self.gsd_m, self.tile_size,
                   self.tile_overlap, ", ".join("%d=%s" % (c.id, c.name) for c in self.classes)))

    def to_json(self) -> str:
        """Our metadata document (what :func:`write_metadata` stores)."""
        d = {
            "schema_version": SCHEMA_VERSION, "name": self.name, "task": self.task,
            "bands": self.bands, "units": self.units, "scale": self.scale, "offset": self.offset,
            "mean": self.mean, "std": self.std, "gsd_m": self.gsd_m, "tile_size": self.tile_size,
            "tile_overlap": self.tile_overlap, "classes": [c.to_dict() for c in self.classes],
            "activation": self.activation, "threshold": self.threshold, "min_area_ha": self.min_area_ha,
            "tta": self.tta, "tta_scales": self.tta_scales,
            **({"thresholds": self.thresholds} if self.thresholds else {}),
            "description": self.description, "version": self.version, "license": self.license,
        }
        d.update({k: v for k, v in self.extra.items() if k not in d})
        return json.dumps(d, indent=1)


def _f_list(value, n, what, default):
    if value is None or value == []:
        return [default] * n
    if isinstance(value, (int, float)):
        return [float(value)] * n
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) for v in value):
        raise ModelError("metadata %r must be a number or a list of numbers, got %r" % (what, value))
    if len(value) == 1:
        return [float(value[0])] * n
    if len(value) != n:
        raise ModelError("metadata %r has %d values but the model reads %d bands" % (what, len(value), n))
    return [float(v) for v in value]


_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


def _parse_classes(raw) -> List[ClassInfo]:
    if isinstance(raw, dict):  # {"0": "background", ...}
        raw = [{"id": int(k), "name": v} for k, v in raw.items()]
    if not isinstance(raw, list) or not raw:
        raise ModelError("metadata 'classes' must be a non-empty list of {id, name, color}")
    out = []
    for i, c in enumerate(raw):
        if isinstance(c, str):
            c = {"id": i, "name": c}
        if not isinstance(c, dict) or "name" not in c:
            raise ModelError("metadata class entry %r has no name" % (c,))
        cid = int(c.get("id", i))
        colour = c.get("color") or DEFAULT_COLOURS[cid % len(DEFAULT_COLOURS)]
        if not _COLOUR.match(colour):
            raise ModelError("class %r has colour %r; colours are #rrggbb" % (c["name"], colour))
        bg = c.get("background")
        if bg is not None and not isinstance(bg, bool):
            raise ModelError("class %r: 'background' must be true or false, got %r" % (c["name"], bg))
        out.append(ClassInfo(cid, str(c["name"]), colour.lower(), bg))
    ids = [c.id for c in out]
    if sorted(ids) != list(range(len(ids))):
        raise ModelError("class ids must be 0..%d without gaps or repeats, got %s" % (len(ids) - 1, ids))
    return sorted(out, key=lambda c: c.id)


def parse_ours(text: str, name: str = "model") -> ModelInfo:
    """A :class:`ModelInfo` from our metadata document (the ``tailings_mapper`` entry)."""
    try:
        d = json.loads(text)
    except ValueError as e:
        raise ModelError("metadata %r is not valid JSON: %s" % (META_KEY, e)) from None
    if not isinstance(d, dict):
        raise ModelError("metadata %r must be a JSON object" % META_KEY)
    return _from_ours(d, name)


def _from_ours(d: Dict[str, Any], name: str) -> ModelInfo:
    missing = [k for k in ("bands", "gsd_m", "classes", "tile_size") if k not in d]
    if missing:
        raise ModelError("model metadata lacks %s" % ", ".join(repr(m) for m in missing))
    if int(d.get("schema_version", 1)) > SCHEMA_VERSION:
        raise ModelError("model metadata schema %s is newer than this Tailings Mapper reads (%d); update the plugin"
                         % (d["schema_version"], SCHEMA_VERSION))
    bands = d["bands"]
    if not isinstance(bands, list) or not bands or not all(isinstance(b, str) for b in bands):
        raise ModelError("metadata 'bands' must be a non-empty list of band names")
    for b in bands:
        try:
            bandlib.band(b)
        except Exception as e:
            raise ModelError("metadata 'bands': %s" % e) from None
    n = len(bands)
    meta_name = str(d.get("name") or name)
    numbers = ("scale", "offset", "mean", "std", "gsd_m", "tile_size", "tile_overlap", "threshold", "min_area_ha",
               "tta", "tta_scales", "thresholds") + NUMERIC_EXTRA
    label = meta_name if meta_name == name else "%s (%s)" % (meta_name, name)
    _check_finite({k: d[k] for k in numbers if k in d}, label)
    known = {"schema_version", "name", "task", "bands", "units", "scale", "offset", "mean", "std", "gsd_m",
             "tile_size", "tile_overlap", "classes", "activation", "threshold", "min_area_ha", "tta", "tta_scales",
             "thresholds", "description", "version", "license"}
    info = ModelInfo(
        name=str(d.get("name") or name), bands=list(bands), gsd_m=_num(d, "gsd_m"),
        tile_size=int(_num(d, "tile_size")), tile_overlap=int(_num(d, "tile_overlap", 0)),
        classes=_parse_classes(d["classes"]), task=str(d.get("task", "")),
        units=str(d.get("units", "reflectance")),
        scale=_f_list(d.get("scale"), n, "scale", 1.0), offset=_f_list(d.get("offset"), n, "offset", 0.0),
        mean=_f_list(d.get("mean"), n, "mean", 0.0), std=_f_list(d.get("std"), n, "std", 1.0),
        activation=str(d.get("activation", "none")), threshold=_num(d, "threshold", 0.5),
        min_area_ha=_num(d, "min_area_ha", 0.0), tta=_whole(_num(d, "tta", 1)),
        tta_scales=_scales(d.get("tta_scales", [1.0])), thresholds=_thresholds(d.get("thresholds")),
        description=str(d.get("description", "")),
        version=str(d.get("version", "")), license=str(d.get("license", "")),
        extra={k: v for k, v in d.items() if k not in known},
    )
    if not info.task:
        info = replace(info, task="binary" if info.n_classes == 2 else "multiclass")
    return info


def _thresholds(v) -> List[float]:
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise ModelError("metadata 'thresholds' must be a list of numbers (one per label class), got %r" % (v,))
    return [float(x) for x in v]


def _scales(v) -> List[float]:
    """Metadata ``tta_scales``: a number or a list of numbers."""
    v = v if isinstance(v, list) else [v]
    if not v or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise ModelError("metadata 'tta_scales' must be a list of numbers such as [1, 0.5], got %r" % (v,))
    return [float(x) for x in v]


def _whole(v: float):
    """An integral number as int (validate() then rejects anything else by value)."""
    return int(v) if float(v).is_integer() else v


def _num(d, key, default=None):
    v = d.get(key, default)
    if v is None:
        raise ModelError("model metadata lacks %r" % key)
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ModelError("metadata %r must be a number, got %r" % (key, v)) from None
    if not math.isfinite(v):
        raise ModelError("metadata %r must be finite, got %r" % (key, v))
    return v


# Statistics in ``extra`` that the engine computes with (the check against the training data, the
# replay of the training locations): a NaN there turns every comparison false, silently.
NUMERIC_EXTRA = ("ood", "replay")


def _non_finite(value, where: str) -> Optional[Tuple[str, float]]:
    """``(place, value)`` of the first NaN or infinity in ``value`` (numbers, lists, dicts of them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, value
    items = (enumerate(value) if isinstance(value, list) else value.items() if isinstance(value, dict) else ())
    for k, v in items:
        bad = _non_finite(v, "%s[%d]" % (where, k) if isinstance(k, int) else "%s.%s" % (where, k))
        if bad:
            return bad
    return None


def check_finite(info: ModelInfo) -> None:
    """:class:`ModelError` naming the model and the key when a number the engine computes with is
    NaN or infinite (scale, offset, mean, std, thresholds, the training statistics)."""
    fields = {"scale": info.scale, "offset": info.offset, "mean": info.mean, "std": info.std,
              "threshold": info.threshold, "thresholds": info.thresholds, "tta_scales": info.tta_scales,
              "min_area_ha": info.min_area_ha, "gsd_m": info.gsd_m}
    _check_finite(dict(fields, **{k: info.extra[k] for k in NUMERIC_EXTRA if k in info.extra}), model_label(info))


def _check_finite(d: Dict[str, Any], label: str) -> None:
    for key in sorted(d):
        bad = _non_finite(d[key], key)
        if bad:
            raise ModelError("model %s: metadata %s is %s, not a number the engine can compute with (the file is "
                             "damaged or was exported wrongly): export the model again"
                             % (label, bad[0], "NaN" if math.isnan(bad[1]) else repr(bad[1])))


def model_label(info: ModelInfo) -> str:
    """The model as a message names it: its name, and its file when that is not called so."""
    base = os.path.basename(info.path or "")
    return info.name if not base or os.path.splitext(base)[0] == info.name else "%s (%s)" % (info.name, info.path)


def validate(info: ModelInfo) -> None:
    """Raise :class:`ModelError` naming what is wrong or contradictory."""
    check_finite(info)
    if info.gsd_m < 0 or (info.gsd_m == 0 and info.source_format == "tailings_mapper"):
        raise ModelError("metadata gsd_m must be > 0, got %g" % info.gsd_m)
    if info.tile_size < 16:
        raise ModelError("metadata tile_size must be at least 16, got %d" % info.tile_size)
    if not 0 <= info.tile_overlap < info.tile_size // 2 + 1:
        raise ModelError("tile_overlap %d must be between 0 and half the tile size %d"
                         % (info.tile_overlap, info.tile_size))
    if any(s <= 0 for s in info.std):
        raise ModelError("metadata std must be > 0 for every band, got %s" % info.std)
    if any(s == 0 for s in info.scale):
        raise ModelError("metadata scale must not be 0, got %s" % info.scale)
    if info.task not in ("binary", "multiclass", "multilabel"):
        raise ModelError("metadata task must be 'binary', 'multiclass' or 'multilabel', got %r" % info.task)
    if info.task == "multilabel":
        labels = info.label_classes()
        if not labels:
            raise ModelError("a multilabel model needs classes that are not background")
        if info.thresholds and len(info.thresholds) != len(labels):
            raise ModelError("metadata 'thresholds' has %d values for %d label classes"
                             % (len(info.thresholds), len(labels)))
        if any(not 0.0 < t < 1.0 for t in info.thresholds):
            raise ModelError("metadata thresholds must be between 0 and 1, got %s" % info.thresholds)
        if info.activation == "softmax":
            raise ModelError("a multilabel model's outputs are independent: activation sigmoid or none, not softmax")
    if info.task == "binary" and info.n_classes != 2:
        raise ModelError("a binary model has 2 classes; metadata lists %d" % info.n_classes)
    if info.units not in ("reflectance", "raw"):
        raise ModelError("metadata units must be 'reflectance' or 'raw', got %r" % info.units)
    if info.activation not in ("none", "sigmoid", "softmax"):
        raise ModelError("metadata activation must be none, sigmoid or softmax, got %r" % info.activation)
    if not 0.0 < info.threshold < 1.0:
        raise ModelError("metadata threshold must be between 0 and 1, got %g" % info.threshold)
    if info.min_area_ha < 0:
        raise ModelError("metadata min_area_ha must be >= 0")
    try:
        check_scales(info.tta_scales, info.tile_size)
    except ValueError as e:
        raise ModelError("metadata tta_scales: %s" % e) from None
    try:
        check_passes(info.tta)
    except ValueError as e:
        raise ModelError("metadata tta: %s" % e) from None
    if info.fixed_input_size and info.fixed_input_size != info.tile_size:
        raise ModelError("the network takes %d x %d tiles but the metadata says tile_size %d"
                         % (info.fixed_input_size, info.fixed_input_size, info.tile_size))
    if info.output_channels is not None and info.task == "multilabel":
        if info.output_channels != len(info.label_classes()):
            raise ModelError("the network outputs %d channels but a multilabel model has one per label class: %d (%s)"
                             % (info.output_channels, len(info.label_classes()),
                                ", ".join(c.name for c in info.label_classes())))
    elif info.output_channels is not None:
        ok = info.output_channels == info.n_classes or (info.output_channels == 1 and info.n_classes == 2)
        if not ok:
            raise ModelError("the network outputs %d channels but the metadata lists %d classes (%s)"
                             % (info.output_channels, info.n_classes,
                                ", ".join(c.name for c in info.classes)))
