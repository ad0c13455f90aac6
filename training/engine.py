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
    "Option": "options", "add_arguments": "options", "from_arguments": "options", "option": "options",
    "values_from_arguments": "options", "values": "options",
    "sibling_raster": "change.inputs", "evaluate": "evaluate",
    "downsample2": "tiling", "positions": "tiling", "rescale": "tiling",
    "ClassInfo": "metadata", "write_metadata": "model_formats", "write_item": "model_files",
    "classes_from_spec": "class_schemas", "definition": "class_schemas", "user_dir": "registry",
    "fids_on_grid": "region_stats", "ACCEPTED": "likeness", "REJECTED": "likeness", "REVIEW": "likeness",
    "UNREVIEWED": "likeness", "unpack": "likeness", "item_path": "mlm", "binary_scores": "metrics",
    "Grid": "grid",
}


def module(name: str = ""):
    """The engine package (``""``) or one of its modules (``"options"``, ``"change.inputs"``)."""
    return import_module(ENGINE + ("." + name if name else ""))


def __getattr__(name):
    if name in _WHERE:
        return getattr(module(_WHERE[name]), name)
    return getattr(module(), name)   # the package's own names, and its submodules
