"""Clouds, cloud shadows and bad pixels: masked before segmentation, marked in the class raster.

Sources, in the order ``cloud_mask=auto`` tries them: a scene classification raster (Sentinel-2
L2A's ``SCL``, from the SAFE, or given as ``mask_raster`` for a stacked export); the cloud/shadow
networks of the optional package ``ukis-csmask`` (DLR, Apache-2.0; ONNX, run by this engine on
onnxruntime at 30 m) for rasters with blue, green, red and NIR (and SWIR: the 6-band network);
else none, with a note.  Masked pixels get no segmentation class: the class raster gives them
their own values (``MASK_CLASSES``, with names and colours in its legend), the polygons leave
them out, and the run reports their area.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..model import bands as bandlib
from ..errors import InputError
from ..model.metadata import ClassInfo

# class raster values of masked pixels (below the nodata 255, above any model class)
DEFECTIVE, CLOUD, SHADOW, SNOW = 250, 251, 252, 253
MASK_MIN = 250
MASK_CLASSES = (ClassInfo(DEFECTIVE, "saturated or defective", "#ff00ff", False),   # drawn, in the legend;
                ClassInfo(CLOUD, "cloud", "#f2f2f2", False), ClassInfo(SHADOW, "cloud shadow", "#4d4d4d", False),
                ClassInfo(SNOW, "snow", "#a6d8ff", False))   # no polygons: polygons.foreground
NAMES = {c.id: c.name for c in MASK_CLASSES}
# Sentinel-2 L2A scene classification -> mask (1 saturated/defective, 3 cloud shadows, 8, 9 cloud
# medium/high probability, 10 thin cirrus, 11 snow; 0 no data is left to the bands' own nodata)
SCL_TO_MASK = {1: DEFECTIVE, 3: SHADOW, 8: CLOUD, 9: CLOUD, 10: CLOUD}
SCL_SNOW = 11
CSMASK_TO_MASK = {1: CLOUD, 2: SHADOW}          # ukis-csmask: 0 clear, 1 cloud, 2 cloud shadow
CSMASK_BANDS = (("blue", "green", "red", "nir", "swir16", "swir22"), ("blue", "green", "red", "nir"))
CSMASK_GSD_M = 30.0


@dataclass(frozen=True)
class MaskSource:
    kind: str                         # "scl" or "csmask"
    path: str                         # the classification raster (SCL), or the csmask ONNX file
    table: Tuple[Tuple[int, int], ...]   # raster value -> mask class
    describe: str                     # for notes and the report
    bands: Tuple[int, ...] = ()       # csmask: the source raster bands it reads, in its order


def lookup(table) -> np.ndarray:
    lut = np.zeros(256, np.uint8)
    for value, code in table:
        lut[value] = code
    return lut


def scl_source(path: str, snow: bool, label: str) -> MaskSource:
    table = dict(SCL_TO_MASK)
    if snow:
        table[SCL_SNOW] = SNOW
    what = "cloud (medium and high probability, thin cirrus), cloud shadow, saturated/defective%s" % (
        ", snow" if snow else "")
    return MaskSource("scl", path, tuple(sorted(table.items())), "%s from the scene classification %s" % (what, label))


def csmask_models() -> Optional[str]:
    """The folder of ukis-csmask's networks, when the package is installed."""
    import importlib.util
    spec = importlib.util.find_spec("ukis_csmask")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = list(spec.submodule_search_locations)[0]
    return folder if os.path.isfile(os.path.join(folder, "model_4b_l1c.onnx")) else None


def csmask_source(descriptions: List[str], level: str) -> Tuple[Optional[MaskSource], Optional[str]]:
    """The csmask network this raster's bands can feed, or None and why not."""
    folder = csmask_models()
    if folder is None:
        return None, ("no cloud mask: install the optional package ukis-csmask (the plugin's dependency dialog, "
                      "or pip install --no-deps ukis-csmask) to mask clouds and shadows in L1C scenes")
    found: Dict[str, int] = {}
    for i, d in enumerate(descriptions):
        b = bandlib.parse_description(d)
        if b is not None and b.common not in found:
            found[b.common] = i + 1
        if b is not None and b.common == "nir08" and "nir" not in found:
            found["nir"] = i + 1
    lvl = "l2a" if level == "L2A" else "l1c"
    for names in CSMASK_BANDS:
        if all(n in found for n in names):
            path = os.path.join(folder, "model_%db_%s.onnx" % (len(names), lvl))
            return MaskSource("csmask", path, tuple(sorted(CSMASK_TO_MASK.items())),
                              "cloud and cloud shadow from ukis-csmask's %d-band %s network (%s)" % (
                                  len(names), lvl.upper(), ", ".join(names)), tuple(found[n] for n in names)), None
    return None, ("no cloud mask: ukis-csmask needs blue, green, red and NIR bands, and the raster has %s"
                  % (", ".join(sorted(found)) or "no named bands"))


def csmask_info(source: MaskSource):
    """Our metadata for a ukis-csmask network (its JSON gives the bands' statistics)."""
    from ..model.metadata import ModelInfo
    with open(source.path[:-5] + ".json") as fh:
        meta = json.load(fh)
    stats = meta["data"]["dataset_statistics"]
    names = stats["band_names"]
    tile = int(meta["data"].get("target_size", [256])[0])
    return ModelInfo(name="ukis-csmask " + meta["model"].get("version", ""), bands=list(names), gsd_m=CSMASK_GSD_M,
                     tile_size=tile, tile_overlap=tile // 5,
                     classes=[ClassInfo(0, "clear", "#000000", True), ClassInfo(1, "cloud", "#f2f2f2"),
                              ClassInfo(2, "cloud shadow", "#4d4d4d")],
                     task="multiclass", units="reflectance", scale=[1e-4] * len(names), offset=[0.0] * len(names),
                     mean=[float(v) for v in stats["img"][0]], std=[float(v) for v in stats["img"][1]],
                     activation="softmax", threshold=0.5, path=source.path, fixed_input_size=tile,
                     output_channels=3, input_name="input")


def choose(opts, r, label: str) -> Tuple[Optional[MaskSource], List[str]]:
    """The mask of a run (``opts.cloud_mask``: auto, scl, csmask, off) and notes on it."""
    mode = opts.cloud_mask or "auto"
    if mode == "off":
        return None, ["no cloud mask (turned off)"]
    scl = opts.mask_raster or (r.product.scene_classes if r.product is not None else None)
    if mode in ("auto", "scl") and scl:
        return scl_source(scl, bool(opts.mask_snow), os.path.basename(scl)), []
    if mode == "scl":
        raise InputError("cloud_mask scl: %s has no scene classification (SCL); give one with mask_raster" % label)
    src, why = csmask_source(r.descriptions, r.product.level if r.product is not None else "")
    if src is None:
        if mode == "csmask":
            raise InputError("cloud_mask csmask: %s" % why)
        return None, [why]
    return src, []


def check_covers(path: str, r, window) -> List[str]:
    """A warning with the share of the run's ``window`` (col, row, width, height of raster ``r``)
    that the scene classification ``path`` (any grid or CRS: it is warped) does not reach: there
    nothing is masked.  An error when it reaches none of it."""
    from osgeo import osr
    from .raster import inspect
    c = inspect(path)
    ct = osr.CoordinateTransformation(c.srs, r.srs)
    cols, rows = [], []
    for f in np.linspace(0.0, 1.0, 21):     # along its edges: a warped outline is not a rectangle
        for px, py in ((f * c.width, 0), (f * c.width, c.height), (0, f * c.height), (c.width, f * c.height)):
            x, y, _ = ct.TransformPoint(*c.grid.xy(px, py))
            col, row = r.grid.pixel_of(x, y)
            cols.append(col)
            rows.append(row)
    c0, r0, w, h = window
    ow = max(0.0, min(c0 + w, max(cols)) - max(c0, min(cols)))
    oh = max(0.0, min(r0 + h, max(rows)) - max(r0, min(rows)))
    ow, oh = (w if w - ow < 0.5 else ow), (h if h - oh < 0.5 else oh)   # half a pixel is rounding
    name = os.path.basename(path)
    if ow <= 0 or oh <= 0:
        raise InputError("the scene classification %s does not overlap %s: it cannot mask its clouds"
                         % (name, r.label))
    share = 1.0 - (ow * oh) / float(w * h)
    if not share:
        return []
    return ["the scene classification %s covers %.1f %% of the area processed: its clouds are masked there, the "
            "other %.1f %% is taken as it is (not masked)" % (name, 100 * (1 - share), 100 * share)]


def summary(counts: Dict[int, int], pixel_area_m2: float) -> Dict[str, float]:
    """Hectares per mask class name."""
    from ..areas import hectares
    return {NAMES[c]: hectares(n * pixel_area_m2) for c, n in sorted(counts.items()) if n}
