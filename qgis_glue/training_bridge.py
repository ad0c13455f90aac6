"""The training package inside QGIS: imported when first asked for, never when the plugin loads.

``training`` imports the engine as the top-level package ``inference`` (it also runs as
``python -m training`` from a checkout).  Inside the plugin the engine is this package's
``inference``: every one of its modules is registered under the top-level name too, so that
training and the plugin share one engine.  Another package of that name already loaded is an
error, not a silent mix.  PyTorch is an optional extra (the dependency dialog installs it).
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import sys

TORCH_MISSING = ("training needs PyTorch, which this QGIS does not have: install it with Raster > Tailings "
                 "Mapper > Python packages… (its CPU build, about 200 MB)")


def _plugin_package() -> str:
    return __package__.rsplit(".", 1)[0]


def _share_engine() -> None:
    eng = importlib.import_module(_plugin_package() + ".inference")
    here = os.path.dirname(os.path.realpath(eng.__file__))
    cur = sys.modules.get("inference")
    if cur is not None:
        if os.path.dirname(os.path.realpath(getattr(cur, "__file__", "") or "")) != here:
            raise RuntimeError("another Python package named 'inference' is loaded (%s): training cannot run "
                               "beside it in this QGIS" % getattr(cur, "__file__", "?"))
        return    # (a checkout's engine, the same files: tests)
    for info in pkgutil.walk_packages(eng.__path__, eng.__name__ + "."):
        if not info.name.endswith(".__main__"):
            importlib.import_module(info.name)
    for name, mod in list(sys.modules.items()):
        if name == eng.__name__ or name.startswith(eng.__name__ + "."):
            sys.modules.setdefault("inference" + name[len(eng.__name__):], mod)


def fit_module():
    """``training.fit`` (raises RuntimeError with what to do when PyTorch is missing)."""
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        raise RuntimeError(TORCH_MISSING)
    _share_engine()
    return importlib.import_module(_plugin_package() + ".training.fit")
