"""Sentinel-2 products as delivered: a SAFE folder or its zip (L1C, L2A), or a folder of band files.

A SAFE's ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` says where the band files are (``IMAGE_FILE``,
without extension), the processing baseline, and how digital numbers become reflectance:
``reflectance = (DN + offset) / quantification``, with ``RADIO_ADD_OFFSET`` (L1C) or
``BOA_ADD_OFFSET`` (L2A) per ``band_id`` (0 = B01 ... 8 = B8A ... 12 = B12): -1000 from baseline
04.00 on (every product since 25 January 2022, and the reprocessed archive), absent before.  GDAL
applies neither (checked), so the engine does.  DN 0 is no data.  The bands are stacked on the
10 m grid (bilinear); an L2A's scene classification (``SCL_20m``) is kept for cloud masking.
"""
from __future__ import annotations

import glob
import os
import re
import threading
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Tuple

from osgeo import gdal

from ..errors import InputError, first_line
from . import Product

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
BAND_ID = {str(i): b for i, b in enumerate(BANDS)}            # the MTD's band_id -> band
BASELINE_WITH_OFFSET = (4, 0)
ESA_OFFSET = -1000.0
_FILE = re.compile(r"(?:^|[_\-])(B(?:0[1-9]|1[0-2]|8A))(?:[_\-.]|_\d+m|$)", re.I)
_RES = re.compile(r"_(\d\d)m(?:\.|$)")
_MTD = ("MTD_MSIL1C.xml", "MTD_MSIL2A.xml")


# -- where the files are ------------------------------------------------------------------------
def _vsi_exists(path: str) -> bool:
    return gdal.VSIStatL(path) is not None


def _read_text(path: str) -> str:
    f = gdal.VSIFOpenL(path, "rb")
    if f is None:
        raise InputError("cannot read %s" % path)
    try:
        gdal.VSIFSeekL(f, 0, 2)
        n = gdal.VSIFTellL(f)
        gdal.VSIFSeekL(f, 0, 0)
        return gdal.VSIFReadL(1, n, f).decode("utf-8", errors="replace")
    finally:
        gdal.VSIFCloseL(f)


def find_safe(path: str) -> Optional[Tuple[str, str]]:
    """``(SAFE root as GDAL reads it, its MTD file)`` when ``path`` is a SAFE folder, a folder holding
    one SAFE, or a zip of one; else None."""
    if os.path.isfile(path) and path.lower().endswith(".zip"):
        root = "/vsizip/" + os.path.abspath(path)
        for entry in gdal.ReadDirRecursive(root) or []:
            name = entry.rstrip("/")
            if os.path.basename(name) in _MTD and name.count("/") <= 1:
                safe = os.path.dirname(name)
                return (root + "/" + safe if safe else root), root + "/" + name
        raise InputError("%s holds no Sentinel-2 SAFE product (no MTD_MSIL1C.xml or MTD_MSIL2A.xml)" % path)
    if not os.path.isdir(path):
        return None
    for mtd in _MTD:
        if os.path.isfile(os.path.join(path, mtd)):
            return os.path.abspath(path), os.path.join(os.path.abspath(path), mtd)
    inner = [d for d in glob.glob(os.path.join(path, "*.SAFE")) if os.path.isdir(d)]
    if len(inner) == 1:
        return find_safe(inner[0])
    if path.rstrip("/").upper().endswith(".SAFE"):
        raise InputError("%s is named like a SAFE product but holds no MTD_MSIL1C.xml or MTD_MSIL2A.xml: "
                         "the product metadata (how its DN become reflectance) is missing" % path)
    return None


# -- the product metadata -------------------------------------------------------------------------
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_mtd(text: str, label: str) -> Dict[str, object]:
    """What the engine needs of an MTD_MSIL1C/2A.xml: level, baseline, date, spacecraft,
    quantification, offsets by band, image files."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise InputError("cannot read %s: it is not complete XML (%s)" % (label, e)) from None
    out: Dict[str, object] = {"files": [], "offsets": {}}
    for el in root.iter():
        tag, txt = _local(el.tag), (el.text or "").strip()
        if tag == "PROCESSING_BASELINE":
            out["baseline"] = txt
        elif tag in ("PRODUCT_TYPE",):
            out["level"] = "L2A" if "2A" in txt else "L1C" if "1C" in txt else txt
        elif tag == "PRODUCT_START_TIME":
            out["date"] = txt[:10]
        elif tag == "SPACECRAFT_NAME":
            out["sensor"] = txt
        elif tag in ("QUANTIFICATION_VALUE", "BOA_QUANTIFICATION_VALUE"):
            out["quantification"] = float(txt)
        elif tag in ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET"):
            band = BAND_ID.get(el.get("band_id", ""))
            if band:
                out["offsets"][band] = float(txt)
        elif tag == "IMAGE_FILE":
            out["files"].append(txt)
    if "quantification" not in out:
        raise InputError("%s gives no QUANTIFICATION_VALUE: how its DN become reflectance is unknown" % label)
    return out


def _baseline(text: Optional[str]) -> Tuple[int, int]:
    try:
        major, minor = (text or "").split(".")
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


def _code(path: str) -> Optional[str]:
    m = _FILE.search(os.path.basename(path))
    return m.group(1).upper() if m else None


def _res(path: str) -> int:
    m = _RES.search(os.path.basename(path))
    return int(m.group(1)) if m else 0


def open_safe(safe: str, mtd: str, label: str) -> Tuple[str, List[str], Product]:
    """``(VRT XML of the bands on 10 m, band files, Product)`` of a SAFE product."""
    md = parse_mtd(_read_text(mtd), os.path.basename(mtd))
    files: Dict[str, str] = {}
    scl = None
    missing = []
    for rel in md["files"]:
        path = safe + "/" + rel + ("" if rel.lower().endswith(".jp2") else ".jp2")
        name = os.path.basename(rel)
        is_scl = "_SCL_" in name.upper()
        code = _code(name)
        if not (is_scl or code):
            continue
        if not _vsi_exists(path):
            missing.append(rel)
            continue
        if is_scl:
            if scl is None or _res(path) < _res(scl):
                scl = path
        elif code not in files or _res(path) < _res(files[code]):
            files[code] = path
    if missing:
        raise InputError("%s lists band files that are not in the product: %s" % (
            os.path.basename(mtd), ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else "")))
    if not files:
        raise InputError("%s lists no band files (IMAGE_FILE) that the product holds" % os.path.basename(mtd))
    codes = [b for b in BANDS if b in files]
    q = float(md["quantification"])
    offsets: Dict[str, float] = dict(md["offsets"])
    notes, warnings = [], []
    baseline = md.get("baseline")
    if not offsets and _baseline(baseline) >= BASELINE_WITH_OFFSET:
        offsets = {b: ESA_OFFSET for b in codes}
        warnings.append("%s says processing baseline %s but gives no %s: assumed ESA's %g for every band"
                        % (os.path.basename(mtd), baseline, "BOA_ADD_OFFSET" if md.get("level") == "L2A"
                           else "RADIO_ADD_OFFSET", ESA_OFFSET))
    radiometry = tuple((1.0 / q, offsets.get(b, 0.0) / q) for b in codes)
    used = sorted({offsets.get(b, 0.0) for b in codes})
    note = ("%s %s, baseline %s: reflectance = (DN %s) / %g, from %s" % (
        md.get("sensor", "Sentinel-2"), md.get("level", ""), baseline or "?",
        " / ".join("%+g" % o for o in used), q, os.path.basename(mtd)))
    xml = stack(files, codes, nodata=0)
    product = Product(sensor=str(md.get("sensor", "Sentinel-2")), level=str(md.get("level", "")), baseline=baseline,
                      date=md.get("date"), radiometry=radiometry, radiometry_note=note, scene_classes=scl,
                      notes=tuple(notes), warnings=tuple(warnings))
    return xml, [files[c] for c in codes], product


def open_band_folder(folder: str) -> Tuple[str, List[str], Product]:
    """A folder of per-band files (``*_B02.jp2``, ``*_B8A_20m.tif``...) without product metadata."""
    found: Dict[str, str] = {}
    for f in sorted(glob.glob(os.path.join(os.path.abspath(folder), "**", "*"), recursive=True)):
        if not os.path.isfile(f) or not f.lower().endswith((".jp2", ".tif", ".tiff")):
            continue
        code = _code(f)
        if code and (code not in found or _res(f) < _res(found[code])):
            found[code] = f   # the finest copy when there are R10m/R20m/R60m ones
    if not found:
        raise InputError("folder %s holds no Sentinel-2 band files (*_B02.jp2, *_B04.tif...)" % folder)
    codes = [b for b in BANDS if b in found]
    product = Product(sensor="Sentinel-2", notes=(
        "no product metadata (MTD_MSI*.xml) in %s: its DN are read as the model expects; a product of "
        "processing baseline 04.00 or later (any since 25 January 2022) stores DN + 1000: then give "
        "--input-offset -0.1 (or open its SAFE folder)" % os.path.basename(os.path.normpath(folder)),))
    return stack(found, codes), [found[c] for c in codes], product


# -- the stack ------------------------------------------------------------------------------------
def stack(files: Dict[str, str], codes: List[str], res_m: float = 10.0, nodata=None) -> str:
    """A VRT (its XML text, which GDAL opens as it is) of ``files`` (band code -> file) in the order
    of ``codes`` on a ``res_m`` grid (bilinear), descriptions ``S2:<code>``."""
    paths = [files[c] for c in codes]
    best = None   # the finest band file's grid (the 10 m bands) is the output grid
    for f in paths:
        d = gdal.Open(f)
        gt = d.GetGeoTransform()
        if best is None or abs(gt[1]) < best[1]:
            best = (gt[0], abs(gt[1]), gt[3], abs(gt[5]), d.RasterXSize, d.RasterYSize)
        d = None
    x0, px, y0, py, w, h = best
    bounds = [x0, y0 - py * h, x0 + px * w, y0] if abs(px - res_m) < 1e-6 else None
    mem = "/vsimem/tm-s2-%d-%d.vrt" % (os.getpid(), threading.get_ident())
    try:
        vrt = gdal.BuildVRT(mem, paths, separate=True, xRes=res_m, yRes=res_m, resampleAlg="bilinear",
                            outputBounds=bounds, srcNodata=nodata, VRTNodata=nodata)
    except RuntimeError as e:
        raise InputError("cannot stack the band files %s: %s" % (os.path.dirname(paths[0]), first_line(e))) from None
    if vrt is None:
        raise InputError("cannot stack the band files in %s" % os.path.dirname(paths[0]))
    try:
        for i, code in enumerate(codes, start=1):
            vrt.GetRasterBand(i).SetDescription("S2:" + code)
        vrt.FlushCache()
        vrt = None
        return _read_text(mem)
    finally:
        gdal.Unlink(mem)
