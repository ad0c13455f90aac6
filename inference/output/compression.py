"""The GeoTIFF compression of the engine's rasters: the choices, and what GDAL is told."""
from __future__ import annotations

from osgeo import gdal

from ..errors import OutputError

COMPRESSIONS = ("auto", "zstd", "deflate")
# Level 1 of either: on a run's noisy confidence raster, ZSTD 1 compresses 100 Mpx in 0.4 s of
# CPU against 1.3 s for DEFLATE 1 (files 10 % larger), and higher levels cost 2-3x for a few %.
CODEC_OPTIONS = {"zstd": ["COMPRESS=ZSTD", "ZSTD_LEVEL=1"], "deflate": ["COMPRESS=DEFLATE", "ZLEVEL=1"]}


def codec(choice: str = "auto") -> str:
    """The GeoTIFF compression of the outputs: ``zstd`` or ``deflate`` as chosen; ``auto``: zstd
    when this GDAL writes it (then it reads it: every QGIS build has it), else deflate."""
    choice = (choice or "auto").lower()
    if choice == "auto":
        opts = gdal.GetDriverByName("GTiff").GetMetadataItem("DMD_CREATIONOPTIONLIST") or ""
        return "zstd" if "ZSTD" in opts else "deflate"
    if choice not in CODEC_OPTIONS:
        raise OutputError("compression must be one of %s, got %r" % (", ".join(COMPRESSIONS), choice))
    return choice
