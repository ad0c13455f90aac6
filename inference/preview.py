"""A PNG preview: the input in natural colour with the classes drawn over it."""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
from osgeo import gdal

from . import bands as bandlib
from .vectorize import background_ids

MAX_SIDE = 1200


def _rgb_bands(res, mapping_bands, model_bands):
    by_common = {}
    for name, src in zip(model_bands, mapping_bands):
        by_common[bandlib.band(name).common] = src
    if all(c in by_common for c in ("red", "green", "blue")):
        return [by_common["red"], by_common["green"], by_common["blue"]]
    return list(mapping_bands[:3]) + [mapping_bands[0]] * (3 - len(mapping_bands[:3]))


def write_preview(input_path, res, png_path, opts=None):
    from .engine import plan
    tmp = tempfile.mkdtemp(prefix="tm-prev-")
    try:
        p = plan(input_path, res.model.path, opts, info=res.model, _workdir=tmp)
        src = p.raster.path  # the file, or the Sentinel-2 stack plan built in tmp
        cls = gdal.Open(res.class_raster)
        w, h = cls.RasterXSize, cls.RasterYSize
        f = min(1.0, MAX_SIDE / max(w, h))
        ow, oh = max(1, int(w * f)), max(1, int(h * f))
        c0, r0, _, _ = p.window
        ds = gdal.Open(src)
        rgb = np.stack([ds.GetRasterBand(b).ReadAsArray(c0, r0, w, h, buf_xsize=ow, buf_ysize=oh).astype(np.float32)
                        for b in _rgb_bands(res, p.mapping.source_bands, res.model.bands)])
        ds = None
        labels = cls.GetRasterBand(1).ReadAsArray(buf_xsize=ow, buf_ysize=oh)
        cls = None
        out = np.zeros((3, oh, ow), np.float32)
        for i in range(3):
            band = rgb[i]
            ok = band > 0
            lo, hi = (np.percentile(band[ok], (2, 98)) if ok.any() else (0.0, 1.0))
            out[i] = np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1) * 255
        bg = background_ids(res.model)
        for c in res.model.classes:
            if c.id in bg:
                continue
            m = labels == c.id
            col = [int(c.color[k:k + 2], 16) for k in (1, 3, 5)]
            for i in range(3):
                out[i][m] = 0.45 * out[i][m] + 0.55 * col[i]
        mem = gdal.GetDriverByName("MEM").Create("", ow, oh, 3, gdal.GDT_Byte)
        for i in range(3):
            mem.GetRasterBand(i + 1).WriteArray(out[i].astype(np.uint8))
        gdal.GetDriverByName("PNG").CreateCopy(png_path, mem)
        mem = None
        if os.path.exists(png_path + ".aux.xml"):
            os.remove(png_path + ".aux.xml")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
