"""The engine as training reaches it: the ``inference`` package beside ``training``, under the one
name it was imported by -- the top-level ``inference`` from a checkout (``python -m training``),
``<plugin>.inference`` inside QGIS.  No module is ever registered under a second name.

Training imports every engine name from here (``from .engine import open_model, InputError``);
a name is looked up when first asked for, so importing this costs nothing (training's option
table, ``training.fit_options``, loads in a QGIS without PyTorch).
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # (never run: says to readers and tools which package this is)
    import inference  # noqa: F401

ENGINE = (__package__.rpartition(".")[0] + "." if "." in __package__ else "") + "inference"

# Where each name training takes from the engine lives (names of the package itself, or its
# submodules, need no entry).
_WHERE = {
    "Option": "run.options", "add_arguments": "run.options", "from_arguments": "run.options", "option": "run.options",
    "values_from_arguments": "run.options", "values": "run.options",
    "sibling_raster": "change.inputs", "evaluate": "scores.evaluate",
    "downsample2": "tiling", "positions": "tiling", "rescale": "tiling",
    "ClassInfo": "model.metadata", "write_metadata": "model.formats", "write_item": "model.user_models",
    "classes_from_spec": "model.class_schemas", "definition": "model.class_schemas", "user_dir": "model.registry",
    "fids_on_grid": "output.region_stats", "ACCEPTED": "run.likeness", "REJECTED": "run.likeness", "REVIEW": "run.likeness",
    "UNREVIEWED": "run.likeness", "unpack": "run.likeness", "item_path": "model.mlm", "binary_scores": "scores.metrics",
    "Grid": "grid",
}


def module(name: str = ""):
    """The engine package (``""``) or one of its modules (``"options"``, ``"change.inputs"``)."""
    return import_module(ENGINE + ("." + name if name else ""))


# The engine's modules training imports by name (``from .engine import strips``): where each is.
_MODULES = {"ood": "run.ood", "strips": "run.strips", "work_grid": "run.work_grid", "evaluate": "scores.evaluate"}


def __getattr__(name):
    if name in _WHERE:
        return getattr(module(_WHERE[name]), name)
    if name in _MODULES:
        return module(_MODULES[name])
    return getattr(module(), name)   # the package's own names, and its submodules
