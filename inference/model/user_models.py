"""The user's models, managed: what each is (``opened.list_models``' entries: classes, bands, date,
validation score, in words here), renamed, exported as one file to share, deleted.  Shipped
models are never changed.

A model in the user's folder is ``<name>.onnx`` with its card ``<name>.md`` and its STAC MLM item
``<name>.stac.json`` beside it (:func:`write_item`).  Renaming
rewrites the name inside the file too (its metadata, without touching the network); exporting
writes one ONNX file with the card inside (metadata key ``model_card``), which any Tailings
Mapper reads back as the model's card.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Optional

from . import mlm, onnx_header
from ..errors import ModelError
from .metadata import META_KEY
from .registry import card_path, user_dir

CARD_KEY = "model_card"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,79}$")


def write_item(path: str) -> str:
    """Write (or rewrite) the STAC MLM item of a model file beside it; its path."""
    from .opened import open_model
    return mlm.write_item(open_model(path).info, path, onnx_header.read(path))


def _user_file(path: str) -> str:
    if os.path.abspath(os.path.dirname(path)) != os.path.abspath(user_dir()):
        raise ModelError("%s is not in your models folder (%s): shipped models are not changed"
                         % (os.path.basename(path), user_dir()))
    return path


def _with_props(path: str, dest: str, changes) -> None:
    with open(path, "rb") as fh:
        buf = fh.read()
    header = onnx_header.parse(buf)
    props = {}
    if META_KEY in header.metadata:
        d = json.loads(header.metadata[META_KEY])
        changes(d, props)
        props[META_KEY] = json.dumps(d, indent=1)
    else:
        changes(None, props)
    tmp = dest + ".part"
    with open(tmp, "wb") as fh:
        fh.write(onnx_header.with_metadata(buf, props))
    os.replace(tmp, dest)


def rename(path: str, new_name: str) -> str:
    """Rename a user model (file, card and the name inside); returns its new path."""
    _user_file(path)
    new_name = new_name.strip()
    if not NAME_RE.match(new_name):
        raise ModelError("a model name is letters, digits, spaces, '.', '_' or '-' (up to 80), got %r" % new_name)
    dest = os.path.join(os.path.dirname(path), new_name + ".onnx")
    if os.path.abspath(dest) != os.path.abspath(path) and os.path.exists(dest):
        raise ModelError("a model named %s exists already" % new_name)

    def change(d, props):
        if d is not None:
            d["name"] = new_name
    _with_props(path, dest, change)
    card = card_path(path)
    if os.path.abspath(dest) != os.path.abspath(path):
        if card:
            text = open(card, encoding="utf-8").read()
            old = os.path.splitext(os.path.basename(path))[0]
            with open(os.path.splitext(dest)[0] + ".md", "w", encoding="utf-8") as fh:
                fh.write(text.replace("`%s`" % old, "`%s`" % new_name, 1))
            os.remove(card)
        if os.path.exists(mlm.item_path(path)):
            os.remove(mlm.item_path(path))
        os.remove(path)
    write_item(dest)
    return dest


def export(path: str, dest: str) -> str:
    """One file to share: the model with its card inside."""
    if os.path.abspath(dest) == os.path.abspath(path):
        raise ModelError("choose another file than the model itself")
    card = card_path(path)
    text = open(card, encoding="utf-8").read() if card else None

    def change(d, props):
        if text:
            props[CARD_KEY] = text
    _with_props(path, dest, change)
    if dest.lower().endswith(".onnx"):
        write_item(dest)
    return dest


def delete(path: str) -> None:
    """Delete a user model and its card."""
    _user_file(path)
    card = card_path(path)
    os.remove(path)
    if card:
        os.remove(card)
    if os.path.exists(mlm.item_path(path)):
        os.remove(mlm.item_path(path))


def import_model(path: str) -> str:
    """Copy a model file into the user's folder (its card written beside it from the file, when it
    carries one); returns the new path."""
    from .opened import open_model
    open_model(path)   # a model the engine can run
    d = user_dir()
    os.makedirs(d, exist_ok=True)
    dest = os.path.join(d, os.path.basename(path))
    if os.path.exists(dest):
        raise ModelError("a model named %s is in your models folder already" % os.path.basename(path)[:-5])
    shutil.copyfile(path, dest)
    text = embedded_card(dest)
    if text:
        with open(os.path.splitext(dest)[0] + ".md", "w", encoding="utf-8") as fh:
            fh.write(text)
    write_item(dest)
    return dest


def embedded_card(path: str) -> Optional[str]:
    """The card a shared model file carries inside (``export``)."""
    try:
        return onnx_header.read(path).metadata.get(CARD_KEY)
    except ModelError:
        return None
