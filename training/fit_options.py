"""Training's options, declared once: the arguments of ``training.fit.fit`` and everything a front
end needs to offer them, as entries of the engine's own :class:`~inference.run.options.Option` type.
The command line (``python -m training fit``), the Processing algorithm ``tailings_mapper:fit``
and the "Train a model from polygons" dialog are generated from :data:`FIT_OPTIONS`, and read
back with :func:`values` (each option's text parsed and checked, else its default).

No PyTorch here: the plugin's Processing algorithm and dialog load this in any QGIS.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from .engine import Option, add_arguments, values as _values

DEVICES = ("auto", "cpu", "cuda")

FIT_OPTIONS: Tuple[Option, ...] = (
    Option("rasters", "files", "Rasters", "a raster (or Sentinel-2 product); repeat for several scenes or years",
           cli="--raster", metavar="RASTER", required=True, repeat=True, fronts=("cli", "processing"),
           advanced=False),
    Option("labels", "vector", "Label polygons", "the label polygons (any OGR format and CRS; may be empty)",
           required=True, fronts=("cli", "processing"), advanced=False),
    Option("labels_layer", "text", "Label layer", "the layer of --labels (default: its first)", cli="--layer",
           metavar="LAYER", fronts=("cli",)),
    Option("field_name", "field", "Class field", "the field that holds each polygon's class (a class name or id); "
           "without it, every polygon is the positive class of a binary model", cli="--field", metavar="FIELD",
           param="FIELD", parent="labels", fronts=("cli", "processing"), advanced=False),
    Option("classes", "text", "Classes (tailings, mining10 or names)",
           "tailings, mining10 (the ten mining components) or names: pit,dump,pond (default: the --init model's)",
           fronts=("cli", "processing"), advanced=False),
    Option("multilabel", "bool", "Classes may overlap (multilabel)", "one sigmoid per class: classes may overlap",
           default=False, flag=True, advanced=False),
    Option("aoi", "vector", "Area (everything not drawn is background)",
           "polygons in which unlabelled pixels are background (default: near the labels only)",
           fronts=("cli", "processing"), advanced=False),
    Option("corrections_of", "text", "Corrections of", "the run (its GeoPackage or classes raster) whose polygons "
           "--labels corrects: only what was deleted, reshaped or added counts; detections left as they were are "
           "ignored", metavar="RUN", fronts=("cli",)),
    Option("review", "bool", "Reviewed layer", "--labels is a run's polygon layer reviewed in QGIS: its accepted "
           "regions are their class, its rejected ones background, the rest ignored (its 'review' field)",
           default=False, flag=True, fronts=("cli",)),
    Option("init", "text", "Start from (a model name or file, or scratch)",
           "the model to start from (a name or an ONNX file), or scratch", default="tailings",
           fronts=("cli", "processing"), advanced=False),
    Option("epochs", "int", "Epochs", "training epochs (each of --chips-per-epoch chips)", default=10, minimum=1,
           maximum=500, panel_max=500, advanced=False),
    Option("device", "choice", "Device", "auto uses an NVIDIA GPU when PyTorch can, else the CPU", default="auto",
           choices=DEVICES, choice_labels=("Auto", "CPU", "GPU (CUDA)"), unset_label="", advanced=False),
    Option("out", "model_file", "Model file (default: your models folder)",
           "the ONNX file to write (default: the user's models folder, named --name)", param="OUTPUT",
           fronts=("cli", "processing"), advanced=False),
    Option("name", "text", "New model's name", "the model's name (default: <init>-<date-time>)",
           default_text="<model>-<date-time>", advanced=False),
    Option("chip", "int", "Chip size (px)", "chip size in pixels", default=256, minimum=64, maximum=1024,
           fronts=("cli", "processing")),
    Option("batch", "int", "Batch size", "chips per training step", default=4, minimum=1, fronts=("cli",)),
    Option("chips_per_epoch", "int", "Chips per epoch", "chips drawn per epoch", default=64, minimum=4,
           maximum=100000, fronts=("cli", "processing")),
    Option("lr", "float", "Learning rate", "learning rate (default: 3e-5 from a model, 1e-3 from scratch)",
           minimum=0.0, exclusive=True, fronts=("cli",)),
    Option("train_encoder", "bool", "Train the encoder", "train the encoder too (from a model: kept by default)",
           flag=True, fronts=("cli",)),
    Option("seed", "int", "Seed", "random seed (the chips drawn, the part held back, new weights)", default=0,
           fronts=("cli",)),
    Option("register", "bool", "Add to the model list", "add the model to the user's model list", default=True,
           cli="--no-register", flag=False, fronts=("cli",)),
)

BY_NAME: Dict[str, Option] = {o.name: o for o in FIT_OPTIONS}


def for_front(front: str) -> Tuple[Option, ...]:
    return tuple(o for o in FIT_OPTIONS if front in o.fronts)


def add_fit_arguments(parser) -> None:
    """``python -m training fit``'s arguments."""
    add_arguments(parser, table=FIT_OPTIONS)


def values(texts: Mapping[str, Any], names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """``fit``'s keyword arguments from the options' text forms (a front end's fields; a value as
    a command-line flag sets it): each parsed and checked (``OptionError`` naming the option),
    else its default; ``names``: only these options."""
    return _values(texts, [o for o in FIT_OPTIONS if names is None or o.name in names])


def values_from_arguments(ns) -> Dict[str, Any]:
    """:func:`values` from the command line's namespace."""
    return values({o.name: getattr(ns, o.name, None) for o in for_front("cli")}, [o.name for o in for_front("cli")])
