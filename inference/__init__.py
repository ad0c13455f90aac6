"""Tailings Mapper's segmentation engine: numpy, onnxruntime and GDAL, no Qt, no QGIS.

    from inference import segment, SegmentOptions
    result = segment("scene.tif", "tailings", "out/", SegmentOptions(batch=4))
"""
from . import bands  # noqa: F401
from .engine import Plan, SegmentOptions, SegmentResult, plan, segment  # noqa: F401
from .errors import (BandMappingError, Cancelled, InputError, ModelError, OutputError,  # noqa: F401
                     ProviderError, TailingsError)
from .model import ModelInfo, read_info  # noqa: F401
from .registry import list_models, resolve_model  # noqa: F401

__all__ = ["segment", "plan", "SegmentOptions", "SegmentResult", "Plan", "TailingsError", "Cancelled",
           "ModelError", "InputError", "BandMappingError", "OutputError", "ProviderError", "ModelInfo",
           "read_info", "list_models", "resolve_model", "bands"]
