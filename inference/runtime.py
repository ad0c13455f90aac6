"""onnxruntime sessions: which execution provider, and why.

onnxruntime is imported lazily so that a QGIS without it can still load the plugin
and explain what is missing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional

from .errors import ModelError, ProviderError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def ort_module():
    try:
        import onnxruntime
    except ImportError:
        raise ModelError("the Python package onnxruntime is not installed; install it with "
                         "'pip install onnxruntime' (or onnxruntime-gpu for NVIDIA GPUs)") from None
    return onnxruntime


@dataclass
class ProviderChoice:
    providers: List[str]
    device: str            # "cuda" or "cpu"
    reason: str            # why this device (e.g. why CUDA was not used)


def choose_providers(device: str = "auto") -> ProviderChoice:
    """``auto``: CUDA when onnxruntime offers it, else CPU; ``cuda``: CUDA or an error; ``cpu``."""
    device = (device or "auto").lower()
    if device not in ("auto", "cpu", "cuda", "gpu"):
        raise ProviderError("device must be auto, cpu or cuda, got %r" % device)
    ort = ort_module()
    available = ort.get_available_providers()
    if device == "cpu":
        return ProviderChoice([CPU], "cpu", "CPU requested")
    if CUDA in available:
        return ProviderChoice([CUDA, CPU], "cuda", "onnxruntime offers CUDA")
    why = ("onnxruntime %s has no CUDA provider (available: %s); install onnxruntime-gpu for NVIDIA GPUs"
           % (ort.__version__, ", ".join(available)))
    if device in ("cuda", "gpu"):
        raise ProviderError("GPU requested but " + why)
    return ProviderChoice([CPU], "cpu", why)


def make_session(path: str, device: str = "auto", threads: Optional[int] = None):
    """``(info, session, provider_used, reason)`` for a model file.

    The provider actually used is read back from the session: onnxruntime silently
    falls back to CPU when CUDA libraries are missing, and we report that.
    """
    from .model import info_from_session
    ort = ort_module()
    choice = choose_providers(device)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
    if not os.path.isfile(path):
        raise ModelError("model file not found: %s" % path)
    try:
        sess = ort.InferenceSession(path, sess_options=so, providers=choice.providers)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError("%s is not a valid ONNX model: %s" % (os.path.basename(path), msg[:300])) from None
    info = info_from_session(sess, path)
    used = sess.get_providers()[0]
    reason = choice.reason
    if choice.device == "cuda" and used != CUDA:
        reason = "CUDA provider failed to start (CUDA/cuDNN libraries missing?); fell back to CPU"
        if device in ("cuda", "gpu"):
            raise ProviderError("GPU requested but " + reason)
    return info, sess, ("cuda" if used == CUDA else "cpu"), reason
