"""Tailings Mapper's segmentation engine: numpy, onnxruntime and GDAL, no Qt, no QGIS.

One way in: a plan, then its execution.

    from inference import plan, execute, SegmentOptions
    p = plan("scene.tif", "tailings", SegmentOptions(batch=4), out_dir="out/")
    print(p.mapping.as_text(p.info.bands), p.notes)      # what will be done, checked
    result = execute(p, progress=print_progress, cancel=lambda: False)

``segment(input, model, out_dir, options)`` does both.  Every option is declared once, in
``inference.options.OPTIONS``.
"""
from . import bands  # noqa: F401
from .errors import (BandMappingError, Cancelled, InputError, ModelError, OptionError, OutputError,  # noqa: F401
                     ProviderError, TailingsError)
from .execute import SegmentResult, execute, segment  # noqa: F401
from .metadata import ModelInfo  # noqa: F401
from .model import Model, list_models, open_model, read_info  # noqa: F401
from .options import OPTIONS, SegmentOptions  # noqa: F401
from .planning import Plan, plan  # noqa: F401
from .registry import resolve_model  # noqa: F401

__all__ = ["plan", "execute", "segment", "Plan", "SegmentOptions", "SegmentResult", "OPTIONS", "Model",
           "open_model", "read_info", "list_models", "resolve_model", "ModelInfo", "TailingsError", "OptionError",
           "Cancelled", "ModelError", "InputError", "BandMappingError", "OutputError", "ProviderError", "bands"]
