"""Tailings Mapper's segmentation engine: numpy, onnxruntime and GDAL, no Qt, no QGIS.

One way in: a plan, then its execution.

    from inference import SegmentOptions, execute, plan
    p = plan("scene.tif", "tailings", SegmentOptions(batch=4), out_dir="out/")
    print(p.mapping.as_text(p.info.bands), p.notes)      # what will be done, checked
    result = execute(p, progress=print_progress, cancel=lambda: False)

``segment(input, model, out_dir, options)`` does both.  Every option is declared once, in
``inference.run.options.OPTIONS``.
"""
import sys as _sys
import types as _types
from importlib import import_module

# Imported when first used (PEP 562): ``python -m inference`` starts in a few milliseconds and
# handles Ctrl-C and SIGTERM from the start (see inference.signals).
_EXPORTS = {"TailingsError": "errors", "OptionError": "errors", "Cancelled": "errors", "ModelError": "errors",
            "InputError": "errors", "BandMappingError": "errors", "OutputError": "errors", "ProviderError": "errors",
            "SegmentResult": "run.result", "execute": "run.execute", "segment": "run.execute", "ModelInfo": "model.metadata",
            "Model": "model.opened", "list_models": "model.opened", "open_model": "model.opened", "read_info": "model.opened",
            "OPTIONS": "run.options", "SegmentOptions": "run.options", "Plan": "run.planning", "plan": "run.planning",
            "resolve_model": "model.registry"}


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module("." + _EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    try:
        return import_module("." + name, __name__)
    except ModuleNotFoundError as e:
        if e.name != "%s.%s" % (__name__, name):
            raise
        raise AttributeError("module %r has no attribute %r" % (__name__, name)) from None


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(_types.ModuleType):
    """Importing the submodule ``execute`` would bind the package's ``execute`` to it (the import
    system sets it): the package's ``execute`` stays the function, as when imported eagerly."""

    def __setattr__(self, name, value):
        if name in _EXPORTS and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


__all__ = ["plan", "execute", "segment", "Plan", "SegmentOptions", "SegmentResult", "OPTIONS", "Model",
           "open_model", "read_info", "list_models", "resolve_model", "ModelInfo", "TailingsError", "OptionError",
           "Cancelled", "ModelError", "InputError", "BandMappingError", "OutputError", "ProviderError", "bands"]
