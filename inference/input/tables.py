"""Reading the tables a user hands the engine: text tables (CSV) in whatever encoding a
spreadsheet saved them, and vector files (GeoPackage, Shapefile...) that may be empty or
damaged -- an :class:`~inference.errors.InputError` naming the file, never a traceback.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

from osgeo import gdal

from ..errors import InputError

# What spreadsheets save "CSV" as besides UTF-8: Excel on Windows writes the ANSI code page
# (Windows-1252 in the Americas and western Europe); latin-1 decodes any byte (the last resort).
FALLBACK_ENCODINGS = (("cp1252", "Windows-1252"), ("latin-1", "ISO-8859-1 (latin-1)"))


def read_text(path: str, what: str) -> Tuple[str, Optional[str]]:
    """The text of a table and a note when it was not UTF-8 (``None`` when it was): UTF-8 first
    (with or without a byte-order mark), then Windows-1252, then latin-1."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise InputError("cannot read %s %s: %s" % (what, path, e.strerror or e)) from None
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as e:
        bad = e.start
    for codec, name in FALLBACK_ENCODINGS:
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        return text, ("%s %s is not UTF-8 (byte 0x%02x at offset %d): read as %s, the encoding spreadsheets save "
                      "on Windows; check its names, or save it as CSV UTF-8"
                      % (what, os.path.basename(path), data[bad], bad, name))
    raise AssertionError("latin-1 decodes every byte")   # (unreachable)


def open_vector(path: str, what: str, update: bool = False):
    """A vector dataset with at least one layer; an InputError naming the file and what is wrong
    with it (missing, zero bytes, not a vector format, damaged) otherwise."""
    if not os.path.exists(path) and not path.startswith("/vsi"):
        raise InputError("no such file: %s %s" % (what, path))
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise InputError("%s %s is empty (0 bytes): not a vector file" % (what, path))
    flags = gdal.OF_VECTOR | (gdal.OF_UPDATE if update else 0)
    reason = None
    try:
        ds = gdal.OpenEx(path, flags)
    except RuntimeError as e:
        ds, reason = None, gdal_reason(e)
    if ds is None:
        reason = reason or _first(gdal.GetLastErrorMsg()) or "not a vector format GDAL reads"
        raise InputError("cannot open %s %s: %s (is it damaged or truncated?)" % (what, path, reason))
    try:
        n = ds.GetLayerCount()
    except RuntimeError as e:
        raise InputError("cannot read %s %s: %s (is it damaged or truncated?)" % (what, path, gdal_reason(e))) from None
    if n == 0:
        raise InputError("%s %s holds no layer" % (what, path))
    return ds


def open_layer(spec: str, what: str):
    """``(dataset, layer)`` of ``path`` or ``path|layername=L`` (an OGR layer with a CRS); one
    error naming ``what`` and the file otherwise.  (Keep the dataset while using the layer.)"""
    parts = spec.split("|")
    name = next((p.split("=", 1)[1] for p in parts[1:] if p.startswith("layername=")), None)
    ds = open_vector(parts[0], what)
    lyr = ds.GetLayerByName(name) if name else ds.GetLayer(0)
    if lyr is None:
        raise InputError("%s %s have no layer %s" % (what, parts[0], name))
    if lyr.GetSpatialRef() is None:
        raise InputError("%s %s have no coordinate reference system" % (what, spec))
    return ds, lyr


def _first(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0][:300] if text else ""


def gdal_reason(e: BaseException) -> str:
    """The first line of a (GDAL) error's message; GDAL's last message when the exception carries
    none (some failures of its bindings), never the exception's type alone."""
    return _first(str(e)) or _first(gdal.GetLastErrorMsg()) or "no message"
