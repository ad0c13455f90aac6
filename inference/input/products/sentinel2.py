"""Sentinel-2 products as delivered: a SAFE folder or its zip (L1C, L2A), or a folder of band files.

A SAFE's ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` says where the band files are (``IMAGE_FILE``,
without extension), the processing baseline, and how digital numbers become reflectance:
``reflectance = (DN + offset) / quantification``, with ``RADIO_ADD_OFFSET`` (L1C) or
``BOA_ADD_OFFSET`` (L2A) per ``band_id`` (0 = B01 ... 8 = B8A ... 12 = B12): -1000 from baseline
04.00 on (every product since 25 January 2022, and the reprocessed archive), absent before.  GDAL
applies neither (checked), so the engine does.  DN 0 is no data.  The bands are stacked on the
10 m grid (bilinear); an L2A's scene classification (``SCL_20m``) is kept for cloud masking.
Damaged metadata is an error naming the file, element and value (numbers that are not finite,
a quantification not above 0, an offset beyond it, an IMAGE_FILE outside the SAFE), and so are band
files that are empty or not of one tile (another CRS, another extent); what the MTD leaves open
or contradicts (no offsets for baseline 04.00+, offsets for an older one) is assumed and warned.
"""
from __future__ import annotations

import glob
import math
import os
import re
import threading
import zipfile
from typing import Dict, List, Optional, Tuple

from osgeo import gdal, osr

from ...errors import InputError, first_line
from ...grid import Grid
from . import Product
from .xml_elements import XmlError, elements

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
    one SAFE, or a zip of one, or its MTD file; else None."""
    if os.path.isfile(path) and os.path.basename(path) in _MTD:
        return find_safe(os.path.dirname(os.path.abspath(path)))
    if os.path.isfile(path) and path.lower().endswith(".zip"):
        _check_zip(path)
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


def _check_zip(path: str) -> None:
    """A zip whose directory cannot be read (cut short by a download, damaged) is said to be so."""
    try:
        with zipfile.ZipFile(path) as zf:
            zf.infolist()
    except zipfile.BadZipFile as e:
        raise InputError("%s is a damaged or truncated zip (%s, %d bytes): download it again"
                         % (path, first_line(e), os.path.getsize(path))) from None
    except OSError as e:
        raise InputError("cannot read %s: %s" % (path, e.strerror or first_line(e))) from None


# -- the product metadata -------------------------------------------------------------------------
def parse_mtd(text: str, label: str) -> Dict[str, object]:
    """What the engine needs of an MTD_MSIL1C/2A.xml: level, baseline, date, spacecraft,
    quantification, offsets by band, image files."""
    try:
        els = elements(text)
    except XmlError as e:
        raise InputError("cannot read %s: it is not complete XML (%s)" % (label, e)) from None
    out: Dict[str, object] = {"files": [], "offsets": {}}
    for el in els:
        tag, txt = el.tag, el.text.strip()
        if tag == "PROCESSING_BASELINE":
            out["baseline"] = txt
        elif tag in ("PRODUCT_TYPE",):
            out["level"] = "L2A" if "2A" in txt else "L1C" if "1C" in txt else txt
        elif tag == "PRODUCT_START_TIME":
            out["date"] = txt[:10]
        elif tag == "SPACECRAFT_NAME":
            out["sensor"] = txt
        elif tag in ("QUANTIFICATION_VALUE", "BOA_QUANTIFICATION_VALUE"):
            out["quantification"] = q = _number(txt, tag, label)
            if q <= 0:
                raise InputError("%s: %s is %s; expected a positive number (10000 in Sentinel-2 products)"
                                 % (label, tag, txt))
        elif tag in ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET"):
            band = BAND_ID.get(el.get("band_id", ""))
            if band:
                out["offsets"][band] = _number(txt, "%s of %s" % (tag, band), label)
        elif tag == "IMAGE_FILE":
            out["files"].append(_inside(txt, label))
    if "quantification" not in out:
        raise InputError("%s gives no QUANTIFICATION_VALUE: how its DN become reflectance is unknown" % label)
    return out


def _number(text: str, what: str, label: str) -> float:
    """A finite number of the MTD, or an error naming the file, the element and its text."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        raise InputError("%s: %s is %r, not a number: the product metadata is damaged" % (label, what, text))
    return v


def _inside(rel: str, label: str) -> str:
    """An IMAGE_FILE path, which must stay inside the product (no absolute path, no ``..``)."""
    parts = rel.replace("\\", "/").split("/")
    if not rel or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel) or ".." in parts:
        raise InputError("%s: IMAGE_FILE %r points outside the product; band files must be inside the SAFE"
                         % (label, rel))
    return rel


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
        _not_empty(path, rel + ("" if rel.lower().endswith(".jp2") else ".jp2"))
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
    offsets, warnings = _offsets(md, codes, os.path.basename(mtd))
    notes = []
    baseline = md.get("baseline")
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


def _offsets(md: Dict[str, object], codes: List[str], label: str) -> Tuple[Dict[str, float], List[str]]:
    """The offset of each band the run reads, from the MTD checked against its processing baseline,
    and warnings saying what was assumed where the MTD is silent or contradicts itself."""
    q = float(md["quantification"])
    given: Dict[str, float] = dict(md["offsets"])
    tag = "BOA_ADD_OFFSET" if md.get("level") == "L2A" else "RADIO_ADD_OFFSET"
    baseline = md.get("baseline")
    known = _baseline(baseline) != (0, 0)
    with_offset = _baseline(baseline) >= BASELINE_WITH_OFFSET
    for b, o in given.items():
        if abs(o) >= q:
            raise InputError("%s: %s of %s is %g, beyond the quantification value %g; expected %g (baseline "
                             "04.00 and later) or none" % (label, tag, b, o, q, ESA_OFFSET))
    warnings: List[str] = []
    if not given:
        if with_offset:
            warnings.append("%s says processing baseline %s but gives no %s: assumed ESA's %g for every band"
                            % (label, baseline, tag, ESA_OFFSET))
            return {b: ESA_OFFSET for b in codes}, warnings
        if not known:
            warnings.append("%s gives no readable processing baseline (%r) and no %s: assumed none (as before "
                            "baseline 04.00); if its DN are stored + 1000, give --input-offset -0.1"
                            % (label, baseline or "", tag))
        return {}, warnings
    lacking = [b for b in codes if b not in given]
    if lacking:
        values = sorted(set(given.values()))
        if len(values) != 1:
            raise InputError("%s gives no %s for %s, and differing ones for the other bands (%s): the offset "
                             "of %s is unknown" % (label, tag, ", ".join(lacking), ", ".join("%g" % v for v in values),
                                                   ", ".join(lacking)))
        warnings.append("%s gives no %s for %s: assumed %g, the value it gives every other band"
                        % (label, tag, ", ".join(lacking), values[0]))
        given.update({b: values[0] for b in lacking})
    if known and not with_offset and any(given.get(b, 0.0) for b in codes):
        warnings.append("%s says processing baseline %s, whose products have no offset, but gives %s %s: "
                        "applied the offsets it gives (if the DN are not stored + 1000, give --input-offset 0)"
                        % (label, baseline, tag, " / ".join("%g" % v for v in sorted({given[b] for b in codes}))))
    return given, warnings


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
    best = _check_grids(files, codes)
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


def _not_empty(path: str, name: str) -> None:
    if gdal.VSIStatL(path).size == 0:
        raise InputError("band file %s is empty (0 bytes): the product is incomplete; download or copy it again"
                         % name)


def _grid(path: str, code: str):
    """(CRS, bounds, pixel size, the grid as stack wants it) of a band file, or an error naming it."""
    _not_empty(path, os.path.basename(path))
    try:
        d = gdal.Open(path)
    except RuntimeError as e:
        d, why = None, first_line(e)
    else:
        why = "not a raster GDAL reads"
    if d is None:
        raise InputError("cannot read band file %s (%s): %s" % (os.path.basename(path), code, why))
    grid = Grid.of_dataset(d)
    d = None
    srs = osr.SpatialReference()
    if grid.wkt:
        srs.ImportFromWkt(grid.wkt)
    (px, py), gt = grid.pixel_size, grid.gt
    return srs, grid.bounds, px, (gt[0], px, gt[3], py, grid.width, grid.height)


def _crs_name(srs) -> str:
    if srs.GetAuthorityCode(None):
        return "%s:%s" % (srs.GetAuthorityName(None), srs.GetAuthorityCode(None))
    return srs.GetName() or "no CRS"


def _check_grids(files: Dict[str, str], codes: List[str]):
    """The finest band file's grid (the 10 m bands: the output grid), after checking that every
    band file lies in its CRS and covers its extent (within a pixel): band files of another tile,
    zone or clip are an error naming the file, never a stack of misplaced bands."""
    grids = {c: _grid(files[c], c) for c in codes}
    ref = min(codes, key=lambda c: grids[c][2])
    srs, bounds, px, best = grids[ref]
    for c in codes:
        s2, b2, px2, _ = grids[c]
        name = os.path.basename(files[c])
        if bool(s2.GetName()) != bool(srs.GetName()) or (srs.GetName() and not s2.IsSame(srs)):
            raise InputError("band file %s (%s) is in %s, the other bands in %s: the band files are not of one tile"
                             % (name, c, _crs_name(s2), _crs_name(srs)))
        off = max(abs(a - b) for a, b in zip(b2, bounds))
        if off > max(px, px2) + 1e-6:
            raise InputError("band file %s (%s) covers %s, %.0f m off the other bands (%s): the band files "
                             "are not of one tile" % (name, c, _box(b2), off, _box(bounds)))
    return best


def _box(b) -> str:
    return "%.0f, %.0f - %.0f, %.0f" % b
