"""A PNG preview: the input in natural colour with the classes drawn over it."""
from __future__ import annotations

import os

import numpy as np
from osgeo import gdal

from ..model import bands as bandlib
from ..input.raster import open_dataset

MAX_SIDE = 1200


def _rgb_bands(mapping_bands, model_bands):
    by_common = {}
    for name, src in zip(model_bands, mapping_bands):
        by_common[bandlib.band(name).common] = src
    if all(c in by_common for c in ("red", "green", "blue")):
        return [by_common["red"], by_common["green"], by_common["blue"]]
    return list(mapping_bands[:3]) + [mapping_bands[0]] * (3 - len(mapping_bands[:3]))


def write_preview(p, res, png_path: str) -> str:
    """``png_path``: the input of plan ``p`` (its window) with the classes of its result ``res``
    (its folder made when it is not there)."""
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    cls = gdal.Open(res.class_raster)
    w, h = cls.RasterXSize, cls.RasterYSize
    f = min(1.0, MAX_SIDE / max(w, h))
    ow, oh = max(1, int(w * f)), max(1, int(h * f))
    c0, r0, _, _ = p.window
    ds = open_dataset(p.raster.path, p.input)
    rgb = np.stack([ds.GetRasterBand(b).ReadAsArray(c0, r0, w, h, buf_xsize=ow, buf_ysize=oh).astype(np.float32)
                    for b in _rgb_bands(p.mapping.source_bands, p.info.bands)])
    ds = None
    labels = cls.GetRasterBand(1).ReadAsArray(buf_xsize=ow, buf_ysize=oh)
    cls = None
    out = np.zeros((3, oh, ow), np.float32)
    for i in range(3):
        band = rgb[i]
        ok = band > 0
        lo, hi = (np.percentile(band[ok], (2, 98)) if ok.any() else (0.0, 1.0))
        out[i] = np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    for c in p.info.classes:
        if c.is_background:
            continue
        m = labels == c.id
        for i, v in enumerate(c.rgb):
            out[i][m] = 0.45 * out[i][m] + 0.55 * v
    mem = gdal.GetDriverByName("MEM").Create("", ow, oh, 3, gdal.GDT_Byte)
    for i in range(3):
        mem.GetRasterBand(i + 1).WriteArray(out[i].astype(np.uint8))
    gdal.GetDriverByName("PNG").CreateCopy(png_path, mem)
    mem = None
    if os.path.exists(png_path + ".aux.xml"):
        os.remove(png_path + ".aux.xml")
    return png_path


def check_preview_path(png_path: str) -> None:
    """Before a run: the preview ``png_path`` can be written (a .png file name in an existing,
    writable folder, or one that can be made); an :class:`~inference.errors.OutputError` saying why not."""
    from ..errors import OutputError
    from .output_names import check_folder
    if not png_path.lower().endswith(".png"):
        raise OutputError("the preview is a PNG image: its file name must end in .png, got %s" % png_path)
    if os.path.isdir(png_path):
        raise OutputError("the preview path %s is a folder" % png_path)
    check_folder(os.path.dirname(os.path.abspath(png_path)), "cannot write the preview %s" % png_path)
