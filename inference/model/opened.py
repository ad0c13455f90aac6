"""A model file, opened: its validated metadata, and its onnxruntime sessions.

Opening a model reads its metadata and the shapes of its network's input and output
(``onnx_header``): cheap, so a panel can check every edit against it.  The network itself is
loaded into onnxruntime once per device and thread count, the first time a run asks for it,
and the session is kept with the model for the next run (``Model.session``).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Union

from ..errors import TailingsError
from .metadata import ModelInfo
from .formats import read as read_model_file
from .registry import model_files, model_name, resolve_model
from .runtime import Session, create_session


class Model:
    """One model file: ``path``, ``info`` (its metadata), and sessions created on demand."""

    def __init__(self, path: str, info: ModelInfo, mtime: float):
        self.path = path
        self.info = info
        self.mtime = mtime
        self._sessions: Dict[tuple, Session] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.info.name

    def session(self, device: str = "auto", threads: Optional[int] = None, extra_outputs: tuple = ()) -> Session:
        """The onnxruntime session for ``device`` and ``threads`` (returning ``extra_outputs`` too),
        created the first time it is asked for (in the calling thread) and reused after; safe to
        call from several threads."""
        key = ((device or "auto").lower(), int(threads) if threads else None, tuple(extra_outputs))
        with self._lock:
            sess = self._sessions.get(key)
            if sess is None:
                sess = create_session(self.path, key[0], key[1], key[2])
                self._sessions[key] = sess
            return sess

    def is_current(self) -> bool:
        """False when the file changed (or went) since it was opened."""
        try:
            return os.path.getmtime(self.path) == self.mtime
        except OSError:
            return False

    def __repr__(self) -> str:
        return "Model(%r)" % self.path


def open_model(model: Union[str, Model]) -> Model:
    """A model by file path (an ONNX file, or a STAC MLM item with an ONNX asset) or by the name of a shipped or user model (a :class:`Model` is
    returned as it is); :class:`~inference.errors.ModelError` when it cannot be used."""
    if isinstance(model, Model):
        return model
    path, info = read_model_file(resolve_model(model))
    mtime = os.path.getmtime(path) if os.path.exists(path) else 0.0
    return Model(path, info, mtime)


def read_info(path: str) -> ModelInfo:
    """Metadata of a model file, validated."""
    return open_model(path).info


@dataclass
class ModelEntry:
    name: str
    path: str
    shipped: bool
    info: Optional[ModelInfo] = None   # when it opens
    error: Optional[str] = None        # why it does not


def list_models(load: bool = True) -> List[ModelEntry]:
    """Shipped and user models; with ``load``, each one's metadata or the reason it fails."""
    entries = []
    for path, shipped in model_files():
        e = ModelEntry(model_name(path), path, shipped)
        if load:
            try:
                e.info = read_info(path)
            except TailingsError as err:
                e.error = str(err)
        entries.append(e)
    return entries
