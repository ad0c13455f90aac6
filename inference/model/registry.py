"""Where model files live: shipped ones in the plugin's models/ folder, user ones in a folder of
the user's (``TAILINGS_MAPPER_MODELS``, else ~/.local/share/tailings_mapper/models)."""
from __future__ import annotations

import glob
import os
from typing import List, Optional, Tuple

from ..errors import ModelError

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "models")


def user_dir() -> str:
    env = os.environ.get("TAILINGS_MAPPER_MODELS")
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "tailings_mapper", "models")


def model_files() -> List[Tuple[str, bool]]:
    """``[(path, shipped)]`` of every model file, shipped ones first."""
    out = []
    for folder, shipped in ((SHIPPED_DIR, True), (user_dir(), False)):
        for f in sorted(glob.glob(os.path.join(folder, "*.onnx"))):
            out.append((f, shipped))
    return out


def model_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def resolve_model(name_or_path: str) -> str:
    """A model file path from a path or the name of a shipped or user model."""
    if not name_or_path:
        raise ModelError("no model given")
    if os.path.isfile(name_or_path):
        return name_or_path
    if name_or_path.lower().endswith((".onnx", ".json")) or os.sep in name_or_path:
        raise ModelError("model file not found: %s" % name_or_path)
    files = model_files()
    for path, _ in files:
        if model_name(path).lower() == name_or_path.lower():
            return path
    known = ", ".join(model_name(p) for p, _ in files) or "none installed"
    raise ModelError("no model named %r (known models: %s)" % (name_or_path, known))


def card_path(model_path: str) -> Optional[str]:
    """The model card (``<model>.md`` beside the ONNX file), when there is one."""
    p = os.path.splitext(model_path)[0] + ".md"
    return p if os.path.isfile(p) else None


def card_summary(text: str) -> Optional[str]:
    """The card's summary in plain words (its ``**In short:** ...`` paragraph, else its
    ``**Status...**`` one), else the first point of its "Known limits" section: a one-glance
    warning before a run."""
    paras = [p.strip() for p in text.split("\n\n")]
    for lead in ("**In short", "**Status"):
        for p in paras:
            if p.startswith(lead):
                return " ".join(p.replace("**", "").split())
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().lower().startswith("## known limits"):
            point = []
            for nxt in lines[i + 1:]:
                if nxt.startswith("- ") and point:
                    break
                if nxt.startswith("#"):
                    break
                if nxt.strip():
                    point.append(nxt.strip().lstrip("- "))
            return " ".join(point) or None
    return None
