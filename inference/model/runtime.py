"""onnxruntime: which execution provider, and why; creating a session.

onnxruntime is imported lazily so that a QGIS without it can still load the plugin
and explain what is missing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional

from ..errors import ModelError, ProviderError, first_line

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEVICES = ("auto", "cuda", "cpu")   # what a user chooses ("gpu" is read as "cuda")


def ort_module():
    """onnxruntime, imported; a :class:`ModelError` saying whether it is missing or installed but
    broken (a library it loads fails, a file of it is damaged: the reason's first line)."""
    try:
        import onnxruntime
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "onnxruntime":
            raise _broken(e) from None
        raise ModelError("the Python package onnxruntime is not installed; install it with "
                         "'pip install onnxruntime' (or onnxruntime-gpu for NVIDIA GPUs)") from None
    except Exception as e:   # (an interrupt during the import is the user's: not caught)
        raise _broken(e) from None
    return onnxruntime


def _broken(e: BaseException) -> ModelError:
    return ModelError("the Python package onnxruntime is installed but cannot be loaded (%s: %s); reinstall it "
                      "with 'pip install --force-reinstall onnxruntime' (or onnxruntime-gpu)"
                      % (type(e).__name__, first_line(e)))


@dataclass(frozen=True)
class ProviderChoice:
    providers: List[str]
    device: str            # "cuda" or "cpu"
    reason: str            # why this device (e.g. why CUDA was not used)


def choose_providers(device: str = "auto") -> ProviderChoice:
    """``auto``: CUDA when onnxruntime offers it, else CPU; ``cuda``: CUDA or an error; ``cpu``."""
    device = (device or "auto").lower()
    if device not in DEVICES + ("gpu",):
        raise ProviderError("device must be auto, cpu or cuda, got %r" % device)
    ort = ort_module()
    available = ort.get_available_providers()
    if device == "cpu":
        return ProviderChoice([CPU], "cpu", "CPU requested")
    if CUDA in available:
        return ProviderChoice([CUDA, CPU], "cuda", "onnxruntime offers CUDA")
    if device in ("cuda", "gpu"):
        raise ProviderError("GPU requested but onnxruntime %s has no CUDA provider (available: %s); install "
                            "onnxruntime-gpu for NVIDIA GPUs" % (ort.__version__, ", ".join(available)))
    # Said once where it can be acted on (the dependency dialog), not in every output.
    return ProviderChoice([CPU], "cpu", "no CUDA provider in onnxruntime %s" % ort.__version__)


@dataclass(frozen=True)
class Session:
    """An onnxruntime session and the device it really runs on."""
    ort: Any               # onnxruntime.InferenceSession
    device: str            # "cuda" or "cpu": the provider actually used
    reason: str            # why that device
    extra_outputs: tuple = ()   # graph tensors it also returns, after the model's own output

    @property
    def input_name(self) -> str:
        return self.ort.get_inputs()[0].name

    @property
    def n_outputs(self) -> int:
        """The model's own outputs (heads), before ``extra_outputs``."""
        return len(self.ort.get_outputs()) - len(self.extra_outputs)

    @property
    def fixed_batch(self) -> Optional[int]:
        """The network's batch size when its batch dimension is fixed, else None."""
        dim = self.ort.get_inputs()[0].shape[0]
        return dim if isinstance(dim, int) and dim > 0 else None


def create_session(path: str, device: str = "auto", threads: Optional[int] = None,
                   extra_outputs: tuple = ()) -> Session:
    """Load the network of ``path`` on ``device`` (also returning the graph tensors
    ``extra_outputs``: the file is read and edited in memory, ``onnx_header.with_outputs``).

    The provider actually used is read back from the session: onnxruntime silently
    falls back to CPU when CUDA libraries are missing, and we report that.
    """
    ort = ort_module()
    choice = choose_providers(device)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
    # No spin-waiting between runs (TM_ORT_SPIN=1 keeps it): onnxruntime's pool threads would
    # keep a core busy that the engine's writer and polygonising threads want (I/O-bound case:
    # -1 s wall and -4 s CPU of 15 s; the shipped model's runs measured no slower without it).
    if os.environ.get("TM_ORT_SPIN", "0") == "0":
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not os.path.isfile(path):
        raise ModelError("model file not found: %s" % path)
    source = path
    if extra_outputs:
        from .onnx_header import with_outputs
        with open(path, "rb") as fh:
            source = with_outputs(fh.read(), extra_outputs)
    try:
        sess = ort.InferenceSession(source, sess_options=so, providers=choice.providers)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/...
        raise ModelError("%s is not a valid ONNX model: %s" % (os.path.basename(path), first_line(e))) from None
    used = sess.get_providers()[0]
    reason = choice.reason
    if choice.device == "cuda" and used != CUDA:
        reason = "CUDA provider failed to start (CUDA/cuDNN libraries missing?); fell back to CPU"
        if device in ("cuda", "gpu"):
            raise ProviderError("GPU requested but " + reason)
    return Session(sess, "cuda" if used == CUDA else "cpu", reason, tuple(extra_outputs))
