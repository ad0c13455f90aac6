"""Every option of a run, declared once.

An :class:`Option` is a field of :class:`SegmentOptions` and everything a front end needs to
offer it: its kind, its default (a value, or the model's), its allowed values (the engine's own
constants), its range, its help text and its one text form (scales ``1,0.5``, extent
``xmin,ymin,xmax,ymax``, band mapping ``3,2,1`` or ``S2:B04=3,...``).  The command line's
arguments (:func:`add_arguments`), the Processing parameters and the panel's advanced widgets
and QgsSettings keys (QGIS side) are generated from :data:`OPTIONS`; every front end turns what
the user typed into values with :meth:`Option.parse`.  Values are checked here, one by one
(:func:`check`), and against the model by ``planning.plan``; both raise
:class:`~inference.errors.OptionError`, whose message the front ends show as it is.

Adding an option is one entry in :data:`OPTIONS` (and the code that uses its value).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from ..model.bands import PRESETS, preset
from ..errors import OptionError
from ..model.runtime import DEVICES
from ..tiling import TTA_PASSES, TTA_SCALES, check_passes, check_scales
from ..output.compression import COMPRESSIONS

FRONTS = ("cli", "processing", "panel")

# Bounds on a run's size.  A tile of 4096 x 4096 px already takes about 1 GB per tile in a batch
# of the shipped network; 16384 took 18 GB.  Batches beyond 256 tiles gain nothing on any device.
# The processing resolution: 1 cm to 10 km a pixel (the plan also bounds it against the raster's).
MAX_TILE = 4096
MAX_BATCH = 256
GSD_RANGE = (0.01, 10000.0)


@dataclass(frozen=True)
class Option:
    name: str                 # SegmentOptions field; QgsSettings key; Processing parameter NAME.upper()
    kind: str                 # int, float, choice, scales, bool, text, bands, extent, aoi; training's files
    #                           (a list), vector (a polygon layer), field (its field), model_file (written)
    label: str                # panel and Processing label
    help: str
    default: Any = None       # the value when not given (None: the model's, or none)
    model_default: bool = False   # None means "decided by the run": the model's value (or as default_text says)
    default_text: str = "the model's"   # how help texts name that default
    cli: Optional[str] = None     # command-line flag (default: --name-with-dashes)
    flag: Any = None          # bool options: the value a bare command-line flag sets
    choices: Tuple = ()       # allowed values
    choice_labels: Tuple[str, ...] = ()   # the panel's words for them
    unset_label: str = "model default"    # the panel's / Processing's word for "not given"
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    exclusive: bool = False    # the bounds themselves are not allowed (0 < threshold < 1)
    multiple_of: Optional[int] = None
    unit: str = ""
    step: float = 1.0         # panel spin boxes: step, and the largest value they offer
    panel_max: float = 100000.0
    decimals: int = 2
    zero_label: str = ""      # the panel's word for 0 (simplification: "none")
    fronts: Tuple[str, ...] = FRONTS
    advanced: bool = True     # Processing's advanced parameters; the panel's Advanced box
    checker: Optional[Callable[[Any], Any]] = None   # the engine's own check, when it has one: returns
    #   the value normalised, raises ValueError (or a TailingsError) naming what is wrong
    required: bool = False    # the command line refuses to run without it (Processing: not optional)
    repeat: bool = False      # a list: the command line's flag is given once per item
    param: Optional[str] = None   # Processing parameter name (default: NAME.upper())
    parent: Optional[str] = None  # a field's layer: that option's name
    metavar: Optional[str] = None  # the command line's word for the value (default: NAME.upper())

    @property
    def flag_name(self) -> str:
        return self.cli or "--" + self.name.replace("_", "-")

    @property
    def noun(self) -> str:
        """How messages name the option: its label without a trailing unit in brackets."""
        return self.label.split(" (")[0].lower()

    # -- text form --------------------------------------------------------------------------
    def parse(self, text) -> Any:
        """A value from its text form (``""``, None or the unset label: not given -> None)."""
        if text is None:
            return None
        if not isinstance(text, str):
            return self.check(text)
        t = text.strip()
        if t == "" or (self.unset_label and t.lower() == self.unset_label.lower()):
            return None
        k = self.kind
        try:
            if k == "int":
                f = float(t)
                if not f.is_integer():
                    raise ValueError
                return self.check(int(f))
            if k == "float":
                return self.check(float(t))
            if k == "bool":
                low = t.lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return low in ("true", "1", "yes")
            if k == "choice":
                for c in self.choices:
                    if _text(c).lower() == t.lower():
                        return c
                if t.lower() == "gpu" and "cuda" in self.choices:
                    return "cuda"
                raise OptionError(self._not_a_choice(t), self.name)
            if k == "scales":
                return self.check(tuple(float(v) for v in t.split(",") if v.strip()))
            if k == "extent":
                return self.check(tuple(float(v) for v in t.split(",")))
        except ValueError:
            raise OptionError(self._bad_text(t), self.name) from None
        return self.check(t)   # text, bands, aoi: as given

    def format(self, value) -> str:
        """The text form of a value (``""`` for None)."""
        if value is None:
            return ""
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind in ("scales", "extent"):
            return ",".join(_text(v) for v in value)
        if self.kind == "bands" and isinstance(value, Mapping):
            return ",".join("%s=%d" % (k, v) for k, v in value.items())
        if self.kind == "aoi" and not isinstance(value, str):
            return ""   # polygons handed over by a front end have no text form
        return _text(value)

    def _bad_text(self, t: str) -> str:
        what = {"int": "a whole number", "float": "a number", "bool": "true or false",
                "scales": "numbers separated by commas, e.g. 1,0.5",
                "extent": "xmin,ymin,xmax,ymax"}.get(self.kind, "a value")
        return "%s takes %s, got %r" % (self.noun, what, t)

    def _not_a_choice(self, t) -> str:
        return "%s must be one of %s, got %r" % (self.noun, ", ".join(_text(c) for c in self.choices), t)

    # -- checking ----------------------------------------------------------------------------
    def check(self, value) -> Any:
        """``value`` normalised, or :class:`OptionError` saying what is wrong with it."""
        if value is None:
            return None
        if self.checker is not None:
            try:
                return self.checker(value)
            except ValueError as e:
                raise OptionError(str(e), self.name) from None
        k = self.kind
        if k == "choice":
            if isinstance(value, str) and value.lower() == "gpu" and "cuda" in self.choices:
                return "cuda"
            if value not in self.choices:
                raise OptionError(self._not_a_choice(value), self.name)
            return value
        if k in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise OptionError("%s must be a number, got %r" % (self.noun, value), self.name)
            if k == "int" and not float(value).is_integer():
                raise OptionError("%s must be a whole number, got %r" % (self.noun, value), self.name)
            value = int(value) if k == "int" else float(value)
            lo, hi = self.minimum, self.maximum
            low_bad = lo is not None and (value <= lo if self.exclusive else value < lo)
            if low_bad or (hi is not None and (value >= hi if self.exclusive else value > hi)) or (
                    self.multiple_of and value % self.multiple_of):
                raise OptionError(self.range_text(value), self.name)
            return value
        if k == "bool":
            return bool(value)
        if k == "extent":
            vals = tuple(float(v) for v in value)
            if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
                raise OptionError(self._bad_text(",".join(str(v) for v in value)), self.name)
            if not (vals[2] > vals[0] and vals[3] > vals[1]):
                raise OptionError("the extent must be xmin, ymin, xmax, ymax with xmax > xmin and ymax > ymin",
                                  self.name)
            return vals
        if k == "aoi" and not isinstance(value, str):
            return tuple(value)
        if k == "files":
            return [str(v) for v in ([value] if isinstance(value, str) else value)]
        if k == "bands" and isinstance(value, Mapping):
            return dict(value)
        if not isinstance(value, str):
            raise OptionError("%s must be text, got %r" % (self.noun, value), self.name)
        return value

    def range_text(self, value) -> str:
        """The message for a value out of range (the checks' and the panel's words)."""
        if self.name == "tile_size":
            return "tile size must be a multiple of 8 from 16 to %d, got %d" % (MAX_TILE, value)
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            return "%s must be between %g and %g, got %g" % (self.noun, lo, hi, value)
        if lo is not None:
            return "%s must be %s %g%s, got %g" % (self.noun, "more than" if self.exclusive else "at least", lo,
                                                   self.unit and " " + self.unit, value)
        return "%s must be at most %g, got %g" % (self.noun, hi, value)

    def describe(self) -> str:
        """Help text with the allowed values and the default: the command line's and Processing's."""
        parts = [self.help]
        if self.kind == "choice" and self.choices:
            parts.append("one of %s" % ", ".join(_text(c) for c in self.choices))
        if self.model_default and self.default_text:
            parts.append("default: %s" % self.default_text)
        elif self.default not in (None, False) and self.kind != "bool":
            parts.append("default %s" % self.format(self.default))
        return "; ".join(p for p in parts if p)


def _text(v) -> str:
    """The shortest text that reads back as ``v`` (``1`` for 1.0, ``0.5``, ``7698500.5``)."""
    if isinstance(v, float):
        short = "%g" % v
        return short if float(short) == v else repr(v)
    return str(v)


def check_date(text: str) -> str:
    """A date as YYYY-MM-DD, YYYY-MM or YYYY (a real one), else ValueError."""
    import datetime
    t = str(text).strip()
    for fmt, n in (("%Y-%m-%d", 10), ("%Y-%m", 7), ("%Y", 4)):
        if len(t) == n:
            try:
                datetime.datetime.strptime(t, fmt)
                return t
            except ValueError:
                break
    raise ValueError("acquisition date must be YYYY-MM-DD, YYYY-MM or YYYY, got %r" % t)


# The scales a user picks among (TTA_SCALES from the finest down).
SCALE_CHOICES = tuple(TTA_SCALES[:n] for n in range(1, len(TTA_SCALES) + 1))

OPTIONS: Tuple[Option, ...] = (
    Option("bands", "bands", "Band mapping",
           "raster band per model input in model order (3,2,1) or NAME=BAND,... (S2:B04=3,S2:B03=2,S2:B02=1); "
           "default: by band name", fronts=("cli", "processing"), advanced=False),
    Option("preset", "choice", "Sensor preset",
           "sensor preset of the raster: how to read its bands; default: detected from the band names",
           choices=tuple(PRESETS), unset_label="auto", fronts=("cli", "processing"), advanced=False,
           checker=lambda key: preset(key).key),
    Option("extent", "extent", "Extent", "xmin,ymin,xmax,ymax in the raster's CRS: segment only this area",
           fronts=("cli", "processing"), advanced=False),
    Option("aoi", "aoi", "Area of interest",
           "polygons (a vector file, any CRS) that limit the run: pixels outside them get no class",
           fronts=("cli", "processing"), advanced=False),
    Option("cloud_mask", "choice", "Cloud mask",
           "mask clouds, cloud shadows and defective pixels before segmenting: auto uses the product's scene "
           "classification (Sentinel-2 L2A SCL, or mask_raster), else ukis-csmask when installed and the raster has "
           "blue, green, red and NIR, else none (with a note)", default="auto", choices=("auto", "scl", "csmask", "off"),
           choice_labels=("automatic (SCL, else ukis-csmask)", "scene classification (SCL) only",
                          "ukis-csmask network only", "off"), unset_label=""),
    Option("mask_snow", "bool", "Mask snow too", "also mask snow and ice (scene classification class 11)",
           default=False, flag=True, cli="--mask-snow"),
    Option("mask_raster", "text", "Scene classification raster",
           "a Sentinel-2 SCL raster (any grid and CRS) whose clouds and shadows mask a stacked export",
           fronts=("cli", "processing"), advanced=False),
    Option("ood_check", "bool", "Check the scene against the training data",
           "score each tile against the model's training tiles (when its metadata has their statistics) and mark "
           "the tiles unlike them", default=True, cli="--no-ood-check", flag=False),
    Option("gsd", "float", "Processing resolution (m)",
           "ground sample distance the network sees, in metres per pixel (default: the model's; a model that "
           "states none runs at the raster's own)", model_default=True, minimum=GSD_RANGE[0], maximum=GSD_RANGE[1],
           unit="m", step=0.5, decimals=2, panel_max=GSD_RANGE[1]),
    Option("tile_size", "int", "Tile size (px)", "tile size in pixels", model_default=True, cli="--tile",
           minimum=16, maximum=MAX_TILE, multiple_of=8, unit="px", step=32, panel_max=MAX_TILE),
    Option("overlap", "int", "Overlap (px)", "tile overlap in pixels, at most half the tile", model_default=True,
           minimum=0, unit="px", step=8, panel_max=2048),
    Option("batch", "int", "Batch size", "tiles per onnxruntime call", default=4, minimum=1, maximum=MAX_BATCH,
           panel_max=MAX_BATCH),
    Option("device", "choice", "Device", "auto uses an NVIDIA GPU when onnxruntime-gpu can, else the CPU",
           default="auto", choices=DEVICES, choice_labels=("Auto", "GPU (CUDA)", "CPU"), unset_label=""),
    Option("threshold", "float", "Threshold", "binary decision threshold on the positive class probability",
           model_default=True, minimum=0.0, maximum=1.0, exclusive=True, step=0.05),
    Option("tta", "choice", "Test-time augmentation",
           "network passes per tile: the tile and its flips (2, 4) and rotations (8), averaged; "
           "1 = off. Slower in proportion, usually a little more accurate",
           model_default=True, choices=TTA_PASSES, checker=check_passes,
           choice_labels=("off (fastest)", "2 passes (flip)", "4 passes (flips)", "8 passes (flips and rotations)")),
    Option("scales", "scales", "Scales",
           "multi-scale inference: the scales each tile is seen at, averaged, among %s (1,0.5: also at half "
           "resolution, more context for large ponds)" % ", ".join("%g" % s for s in TTA_SCALES),
           model_default=True, choices=SCALE_CHOICES, checker=check_scales,
           choice_labels=("full resolution only", "full and half resolution", "full, half and quarter resolution")),
    Option("min_area_ha", "float", "Minimum polygon area (ha)", "minimum region area in hectares",
           model_default=True, cli="--min-area", minimum=0.0, unit="ha", step=0.5),
    Option("simplify_m", "float", "Simplify polygons (m)", "polygon simplification tolerance in metres (0 = none)",
           default=0.0, cli="--simplify", minimum=0.0, unit="m", step=1.0, decimals=1, panel_max=1000,
           zero_label="none"),
    Option("confidence", "bool", "Write the confidence raster", "write the confidence raster (percent)",
           default=True, cli="--no-confidence", flag=False, fronts=("cli", "panel")),
    Option("compression", "choice", "Raster compression",
           "GeoTIFF compression of the class and confidence rasters: zstd (3x faster to write; read by GDAL 2.3+ "
           "built with it, as every QGIS is) or deflate (read by any GeoTIFF software); auto: zstd when this "
           "GDAL writes it, else deflate", default="auto", choices=COMPRESSIONS,
           choice_labels=("automatic (zstd where GDAL has it)", "zstd (fastest)", "deflate (most widely read)"),
           unset_label=""),
    Option("polygons", "bool", "Write polygons", "write the polygon layer", default=True, cli="--no-polygons",
           flag=False, fronts=("cli",)),
    Option("overwrite", "bool", "Overwrite", "replace existing outputs", default=False, flag=True, fronts=("cli",)),
    Option("prefix", "text", "Output name", "output file name stem (default: the input's)", fronts=("cli",)),
    Option("unique_names", "bool", "New names", "when the output names are taken, add -2, -3... (never "
           "reuse a name) instead of refusing", default=False, flag=True, fronts=()),
    Option("date", "text", "Acquisition date",
           "the scene's acquisition date, YYYY-MM-DD (or YYYY-MM, YYYY), recorded in the outputs (TM_DATE) "
           "for change maps between years", fronts=("cli", "processing"), advanced=False, checker=check_date),
    Option("input_scale", "float", "Input scale",
           "reflectance = raw x this + the input offset (default: the product's metadata, the raster's declared "
           "scale, else the model's)", model_default=True, default_text="", unset_label="automatic", decimals=6,
           step=0.0001, minimum=0.0, exclusive=True, panel_max=1e9, fronts=("cli", "processing", "panel")),
    Option("input_offset", "float", "Input offset",
           "reflectance = raw x scale + this; -0.1 for Sentinel-2 DN of processing baseline 04.00+ given without "
           "their metadata (default: the product's, the raster's declared offset, else 0)", model_default=True,
           default_text="", unset_label="automatic", decimals=4, step=0.01, minimum=-1e9, panel_max=1e9,
           fronts=("cli", "processing", "panel")),
    Option("calibration", "text", "Calibration table",
           "a JSON file of GF-6 gains per sensor and year ({\"PMS\": {\"2023\": [g1, g2, g3, g4]}}) to use "
           "instead of the shipped table", fronts=("cli", "processing")),
    Option("threads", "int", "Threads", "onnxruntime threads (default: every core)", minimum=1, fronts=()),
)

BY_NAME: Dict[str, Option] = {o.name: o for o in OPTIONS}


def option(name: str) -> Option:
    return BY_NAME[name]


def for_front(front: str, advanced: Optional[bool] = None) -> Tuple[Option, ...]:
    """The options a front end shows (``advanced``: only those / only the others)."""
    return tuple(o for o in OPTIONS if front in o.fronts and (advanced is None or o.advanced == advanced))


SegmentOptions = dataclasses.make_dataclass(
    "SegmentOptions", [(o.name, Any, dataclasses.field(default=o.default)) for o in OPTIONS], frozen=True)
SegmentOptions.__module__ = __name__
SegmentOptions.__doc__ = ("The options of one run (None: the model's value, or not given); see "
                          "inference.run.options.OPTIONS:\n" + "\n".join("  %s: %s" % (o.name, o.describe())
                                                                      for o in OPTIONS))


def check(opts) -> "SegmentOptions":
    """``opts`` with every value checked on its own and normalised (scales as a tuple...); the
    checks against the model are ``plan``'s."""
    return dataclasses.replace(opts, **{o.name: o.check(getattr(opts, o.name)) for o in OPTIONS})


def from_texts(texts: Mapping[str, Any], base=None) -> "SegmentOptions":
    """Options from text forms by name (a front end's fields); names not given keep ``base``'s."""
    kw = {}
    for name, text in texts.items():
        kw[name] = BY_NAME[name].parse(text)
    return dataclasses.replace(base or SegmentOptions(), **{k: v for k, v in kw.items()
                                                            if v is not None or BY_NAME[k].default is None})


def to_texts(opts, names: Optional[Sequence[str]] = None) -> Dict[str, str]:
    return {n: BY_NAME[n].format(getattr(opts, n)) for n in (names or [o.name for o in OPTIONS])}


# -- the command line ---------------------------------------------------------------------------
def add_arguments(parser, names: Optional[Sequence[str]] = None, table: Sequence[Option] = None) -> None:
    """argparse arguments for the command-line options (or ``names``) of ``table`` (default: a
    run's :data:`OPTIONS`); values stay text until :func:`from_arguments`, so that the engine, not
    argparse, judges them."""
    for o in (OPTIONS if table is None else table):
        if (names is None and "cli" not in o.fronts) or (names is not None and o.name not in names):
            continue
        if o.kind == "bool":
            parser.add_argument(o.flag_name, dest=o.name, action="store_const", const=o.flag, default=None,
                                help=o.help if o.flag else "do not %s (on by default)" % o.help)
        else:
            parser.add_argument(o.flag_name, dest=o.name, default=None, metavar=o.metavar or o.name.upper(),
                                help=o.describe(), required=o.required, action="append" if o.repeat else "store")


def from_arguments(ns, base=None) -> "SegmentOptions":
    """Options from an argparse namespace made with :func:`add_arguments`."""
    return from_texts({o.name: getattr(ns, o.name) for o in OPTIONS if getattr(ns, o.name, None) is not None},
                      base)


def values(texts: Mapping[str, Any], table: Sequence[Option]) -> Dict[str, Any]:
    """Each option of ``table`` (another command's own table) from its text form in ``texts``
    (or a value, as a command-line flag sets it), else its default."""
    return {o.name: o.default if texts.get(o.name) is None else o.parse(texts[o.name]) for o in table}


def values_from_arguments(ns, table: Sequence[Option]) -> Dict[str, Any]:
    """:func:`values` from an argparse namespace made with ``add_arguments(table=table)``."""
    return values({o.name: getattr(ns, o.name, None) for o in table}, table)
