"""A model file, opened: its validated metadata, and its onnxruntime sessions.

Opening a model reads its metadata and the shapes of its network's input and output
(``onnx_header``): cheap, so a panel can check every edit against it.  The network itself is
loaded into onnxruntime once per device and thread count, the first time a run asks for it,
and the session is kept with the model for the next run (``Model.session``).
"""
from __future__ import annotations

import datetime
import os
import re
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Union

from .metadata import ModelInfo
from .formats import read as read_model_file
from ..errors import TailingsError
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


class OpenedModels:
    """Opened models by file (shipped and user models by name too), reopened when the file
    changes; thread-safe.  The front ends keep one (:data:`MODELS`): the panel checks every edit
    against it without reading a file again, and a run reuses the previous run's sessions."""

    def __init__(self):
        self._models: Dict[str, Model] = {}
        self._lock = threading.Lock()

    def get(self, name_or_path: str) -> Model:
        path = os.path.abspath(resolve_model(name_or_path))
        with self._lock:
            m = self._models.get(path)
            if m is not None and m.is_current():
                return m
        m = open_model(path)
        with self._lock:
            self._models[path] = m
        return m

    def info_or_error(self, name_or_path: Optional[str]):
        """The model's metadata, or why it cannot be used (a one-line string)."""
        if not name_or_path:
            return "no model chosen"
        try:
            return self.get(name_or_path).info
        except TailingsError as e:
            return str(e)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


MODELS = OpenedModels()


@dataclass
class ModelEntry:
    """A shipped or user model as every list shows it (the panel's picker, My models, training's
    starting model, Processing): its file, and when it was opened its metadata or why it does not
    open; what the lists say of it (classes, bands, date, score) comes from them."""
    name: str
    path: str
    shipped: bool
    info: Optional[ModelInfo] = None   # when it opens
    error: Optional[str] = None        # why it does not

    @property
    def task(self) -> str:
        return self.info.task if self.info else ""

    @property
    def classes(self) -> List[str]:
        return [c.name for c in self.info.classes] if self.info else []

    @property
    def bands(self) -> List[str]:
        return list(self.info.bands) if self.info else []

    @property
    def score(self) -> Optional[str]:
        """The validation score in words (:func:`score_text`)."""
        return score_text(self.info.extra) if self.info else None

    @property
    def measured_on(self) -> Optional[str]:
        """What the score was measured on, in words."""
        return measured_on(self.info.extra) if self.score else None

    @property
    def date(self) -> str:
        """The day it was trained (its metadata), else its file's date: YYYY-MM-DD ("" when it does not open)."""
        return trained_date(self.path, self.info.extra)[0] if self.info else ""

    @property
    def date_from(self) -> str:
        """Where :attr:`date` comes from: ``training`` (the fit's date in its metadata) or ``file``."""
        return trained_date(self.path, self.info.extra)[1] if self.info else "file"


def list_models(load: bool = True) -> List[ModelEntry]:
    """Shipped and user models; with ``load``, each one's metadata or the reason it fails."""
    entries = []
    for path, shipped in model_files():
        e = ModelEntry(model_name(path), path, shipped)
        if load:
            try:
                e.info = read_info(path)
            except Exception as err:   # (a broken file is listed with why)
                e.error = str(err)
        entries.append(e)
    return entries


def measured_on(extra: dict) -> Optional[str]:
    """What a model's validation score was measured on, in words: a user model's own held-back blocks
    (near its training ground) are not the shipped model's held-out sites."""
    if extra.get("validation_fit"):
        return "its own held-back blocks (of the scenes it was trained on)"
    val = extra.get("validation_engine") or {}
    if not val:
        return None
    sites, tiles = val.get("sites") or [], val.get("tiles")
    what = ", ".join(p for p in ("%d held-out sites" % len(sites) if sites else "",
                                 "%d tiles" % tiles if tiles else "") if p)
    return "validation sites" + (" (%s)" % what if what else "")


def trained_date(path: str, extra: dict) -> tuple:
    """``(date, from)``: the day a model was trained (its metadata: from ``training``), else its
    file's date (from ``file``), YYYY-MM-DD."""
    trained = (extra.get("fit") or {}).get("date")
    return (trained, "training") if _is_date(trained) else (_file_date(path), "file")


def score_text(extra: dict) -> Optional[str]:
    """A model's validation score in words (``IoU 0.51``), when its metadata has one."""
    val = extra.get("validation_fit") or extra.get("validation_engine") or {}
    if val.get("iou") is not None:
        return "IoU %.2f" % val["iou"]
    if val.get("miou") is not None:
        return "mean IoU %.2f" % val["miou"]
    return None


def _is_date(text) -> bool:
    return isinstance(text, str) and re.match(r"^\d{4}-\d{2}-\d{2}$", text) is not None


def _file_date(path: str) -> str:
    try:
        return datetime.date.fromtimestamp(os.path.getmtime(path)).isoformat()
    except (OSError, ValueError, OverflowError):
        return ""
