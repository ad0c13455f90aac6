"""What a raster says its bands are, wherever it says it.

In order: each band's description (``B4``, ``S2:B04``, ``red``); its metadata (``BANDNAME``,
``band_name``, ``long_name``...; ENVI, netCDF and many exporters); for a VRT, the file each band
is read from (``gdalbuildvrt -separate *_B02.jp2 *_B03.jp2 *_B04.jp2`` names nothing, but its
sources do); and, when no band is named, the file's own name (``..._B04_B03_B02.tif``,
``..._TCI.tif``, ``scene_rgb.tif``).  ``bands.map_bands`` then maps by these names; a raster
none of them names is read by its band count, and the run warns that the order is a guess.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

from osgeo import gdal

from ..model.bands import parse_description

METADATA_KEYS = ("BANDNAME", "band_name", "BAND_NAME", "long_name", "standard_name", "name", "NAME",
                 "DESCRIPTION", "wavelength_name")
# Sentinel-2 band codes as products spell them in file names (two digits: B02, B8A, B11).
_S2_CODE = re.compile(r"(?:^|[_\-.])(B(?:0[1-9]|1[0-2]|8A))(?=$|[_\-.]|\d\dm)", re.I)
_SOURCE = re.compile(r"<SourceFilename[^>]*>([^<]+)</SourceFilename>")
# Whole words in a file name that say the band order of a 3- or 4-band file.
_ORDER_WORDS = {"rgb": ("red", "green", "blue"), "bgr": ("blue", "green", "red"),
                "rgbn": ("red", "green", "blue", "nir"), "bgrn": ("blue", "green", "red", "nir"),
                "tci": ("S2:B04", "S2:B03", "S2:B02")}


def _known(text: str) -> Optional[str]:
    """``text`` when it names a band the catalogue knows."""
    return text if text and parse_description(text) is not None else None


def _from_metadata(band) -> Optional[str]:
    md = band.GetMetadata() or {}
    for k in METADATA_KEYS:
        if _known(md.get(k, "")):
            return md[k]
    return None


def _code_in(name: str) -> Optional[str]:
    codes = _S2_CODE.findall(os.path.splitext(os.path.basename(name))[0])
    return codes[-1].upper() if len(codes) >= 1 and len(set(c.upper() for c in codes)) == 1 else None


def _from_vrt_source(band) -> Optional[str]:
    """The Sentinel-2 band code in the name of the one file a VRT band reads."""
    sources = band.GetMetadata("vrt_sources") or {}
    files = {m.group(1) for xml in sources.values() for m in _SOURCE.finditer(xml)}
    if len(files) != 1:
        return None
    return _known(_code_in(files.pop()) or "")


def _from_file_name(path: str, count: int) -> Optional[List[str]]:
    stem = os.path.splitext(os.path.basename(path))[0]
    codes = [c.upper() for c in _S2_CODE.findall(stem)]
    if len(codes) == count and len(set(codes)) == count:
        return codes
    if count == 1 and len(set(codes)) == 1:
        return codes[:1]
    for word in re.split(r"[^a-z]+", stem.lower()):
        names = _ORDER_WORDS.get(word)
        if names and len(names) == count:
            return list(names)
    return None


def band_names(ds: gdal.Dataset, path: str) -> Tuple[List[str], List[str]]:
    """``(names, sources)`` per band: the name ("" when unknown) and where it was read
    ("description", "band metadata", "VRT source file", "file name" or "")."""
    names, sources = [], []
    for i in range(1, ds.RasterCount + 1):
        b = ds.GetRasterBand(i)
        desc = b.GetDescription() or ""
        for name, source in ((_known(desc), "description"), (_from_metadata(b), "band metadata"),
                             (_from_vrt_source(b), "VRT source file")):
            if name:
                names.append(name)
                sources.append(source)
                break
        else:
            names.append(desc)   # kept: shown to the user, maybe read by a preset
            sources.append("")
    if not any(sources) and os.path.exists(path):
        from_name = _from_file_name(path, ds.RasterCount)
        if from_name:
            return from_name, ["file name"] * len(from_name)
    return names, sources
