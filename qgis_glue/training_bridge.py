"""The training package inside QGIS: imported when first asked for, never when the plugin loads.

Training reaches the engine through ``training.engine``, which takes the ``inference`` package
beside it: inside the plugin, this plugin's ``<plugin>.inference``, the one the panel and
Processing use (nothing is registered under a second name).  PyTorch is an optional extra (the
dependency dialog installs it).
"""
from __future__ import annotations

import importlib
import importlib.util

TORCH_MISSING = ("training needs PyTorch, which this QGIS does not have: install it with Raster > Tailings "
                 "Mapper > Python packages… (its CPU build, about 200 MB)")


def _plugin_package() -> str:
    return __package__.rsplit(".", 1)[0]


def fit_module():
    """``training.fit`` (raises RuntimeError with what to do when PyTorch is missing)."""
    if importlib.util.find_spec("torch") is None:
        raise RuntimeError(TORCH_MISSING)
    return importlib.import_module(_plugin_package() + ".training.fit")
