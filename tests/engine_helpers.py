"""Tiny ONNX models and rasters for the engine tests (built in the tests, no files shipped)."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from osgeo import gdal, osr

from inference.model import ClassInfo, ModelInfo, write_metadata

gdal.UseExceptions()


def conv_model(path: str, bands: Sequence[str] = ("S2:B04", "S2:B03", "S2:B02"), n_out: int = 1,
               kernel: int = 3, weights: Optional[np.ndarray] = None, bias: float = 0.0,
               activation_in_graph: bool = True, tile: int = 64, overlap: int = 16, gsd: float = 10.0,
               classes: Optional[List[str]] = None, meta: bool = True, scale=0.0001, mean=None, std=None,
               threshold: float = 0.5, min_area_ha: float = 0.0, fixed_hw: Optional[int] = None,
               info_overrides: Optional[dict] = None, deepness_only: bool = False) -> str:
    """A model whose output is a known function of its input: a k x k convolution (same
    padding) followed by sigmoid (1 output) or softmax (several)."""
    c = len(bands)
    if weights is None:
        weights = np.zeros((n_out, c, kernel, kernel), np.float32)
        for o in range(n_out):
            weights[o, o % c, kernel // 2, kernel // 2] = 1.0 + o
    w = numpy_helper.from_array(weights.astype(np.float32), "W")
    b = numpy_helper.from_array(np.full(n_out, bias, np.float32), "B")
    hw = fixed_hw if fixed_hw else "H"
    hw2 = fixed_hw if fixed_hw else "W_"
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, hw, hw2])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", n_out, hw, hw2])
    nodes = [helper.make_node("Conv", ["input", "W", "B"], ["logits"], pads=[kernel // 2] * 4)]
    if activation_in_graph:
        nodes.append(helper.make_node("Sigmoid" if n_out == 1 else "Softmax", ["logits"], ["output"],
                                      **({} if n_out == 1 else {"axis": 1})))
    else:
        nodes.append(helper.make_node("Identity", ["logits"], ["output"]))
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if classes is None:
        classes = ["background", "tailings"] if n_out <= 2 else ["class%d" % i for i in range(n_out)]
    if meta:
        info = ModelInfo(name=os.path.splitext(os.path.basename(path))[0], bands=list(bands), gsd_m=gsd,
                         tile_size=tile, tile_overlap=overlap,
                         classes=[ClassInfo(i, n, "#%02x%02x%02x" % (i * 40 % 256, 100, 200)) for i, n in enumerate(classes)],
                         task="binary" if len(classes) == 2 else "multiclass", units="reflectance",
                         scale=[scale] * c, offset=[0.0] * c, mean=list(mean or [0.0] * c),
                         std=list(std or [1.0] * c),
                         activation="none" if activation_in_graph else ("sigmoid" if n_out == 1 else "softmax"),
                         threshold=threshold, min_area_ha=min_area_ha)
        for k, v in (info_overrides or {}).items():
            setattr(info, k, v)
        write_metadata(model, info)
        if deepness_only:
            keep = [p for p in model.metadata_props if p.key != "tailings_mapper"]
            del model.metadata_props[:]
            for p in keep:
                model.metadata_props.add(key=p.key, value=p.value)
    onnx.save(model, path)
    return path


def make_raster(path: str, data: np.ndarray, epsg: int = 32723, origin=(500000.0, 7700000.0), pixel=10.0,
                descriptions: Optional[Sequence[str]] = None, nodata: Optional[float] = 0,
                dtype=gdal.GDT_UInt16, srs: bool = True, scale_tag: Optional[float] = None,
                pixel_y: Optional[float] = None) -> str:
    """Write a GeoTIFF from a (bands, rows, cols) array."""
    if data.ndim == 2:
        data = data[None]
    nb, h, w = data.shape
    ds = gdal.GetDriverByName("GTiff").Create(path, w, h, nb, dtype, options=["TILED=YES"])
    ds.SetGeoTransform((origin[0], pixel, 0, origin[1], 0, -(pixel_y or pixel)))
    if srs:
        s = osr.SpatialReference()
        s.ImportFromEPSG(epsg)
        ds.SetProjection(s.ExportToWkt())
    for i in range(nb):
        b = ds.GetRasterBand(i + 1)
        b.WriteArray(data[i])
        if nodata is not None:
            b.SetNoDataValue(nodata)
        if descriptions:
            b.SetDescription(descriptions[i])
    if scale_tag is not None:
        ds.SetMetadata({"SCALE": str(scale_tag)})
    ds.FlushCache()
    ds = None
    return path


def blobs(h: int, w: int, seed: int = 0, n: int = 6, nb: int = 3) -> np.ndarray:
    """A smooth-ish DN image (uint16, 500..3500) with bright discs in band 0."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.full((nb, h, w), 1000.0)
    img += rng.normal(0, 30, size=img.shape)
    for _ in range(n):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 25)
        img[0][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 3000.0
    return np.clip(img, 1, 65535).astype(np.uint16)


def read(path: str, band: int = 1) -> np.ndarray:
    ds = gdal.Open(path)
    a = ds.GetRasterBand(band).ReadAsArray()
    ds = None
    return a
