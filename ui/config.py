"""The user's choices (QgsSettings) and turning them into an engine request.

Shared by the dock panel and the toolbar action: the action runs with the panel's
settings, or these defaults when the panel was never opened.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from qgis.core import (QgsCoordinateTransform, QgsGeometry, QgsMapLayer, QgsProject, QgsProviderRegistry,
                       QgsRasterLayer, QgsRectangle, QgsSettings)
from qgis.PyQt.QtCore import QStandardPaths

PREFIX = "tailings_mapper/"
DEFAULT_MODEL = "tailings"

EXTENT_LAYER, EXTENT_CANVAS, EXTENT_SELECTION = "layer", "canvas", "selection"
DEVICES = [("auto", "Auto"), ("cuda", "GPU (CUDA)"), ("cpu", "CPU")]
# Test-time augmentation: network passes per tile (0 = the model's default).
TTA_CHOICES = [(0, "model default"), (1, "off (fastest)"), (2, "2 passes (flip)"), (4, "4 passes (flips)"),
               (8, "8 passes (flips and rotations)")]
# Multi-scale inference: the scales each tile is also seen at ("" = the model's default).
SCALE_CHOICES = [("", "model default"), ("1", "full resolution only"), ("1,0.5", "full and half resolution"),
                 ("1,0.5,0.25", "full, half and quarter resolution")]

DEFAULTS = {
    "model": "",              # name of a shipped/user model or a path; "" = first shipped model
    "user_models": [],        # ONNX files loaded with "Load ONNX…"
    "preset": "",             # "" = detect from the layer
    "out_dir": "",            # "" = a folder next to the input raster
    "extent_mode": EXTENT_LAYER,
    "extent_layer": "",       # polygon layer id for EXTENT_SELECTION
    "tile_size": 0,           # 0 = model default
    "overlap": -1,            # -1 = model default
    "batch": 4,
    "device": "auto",
    "threshold": 0.0,         # 0 = model default
    "min_area_ha": -1.0,      # < 0 = model default
    "tta": 0,                 # 0 = model default, else 1, 2, 4, 8 passes
    "scales": "",             # "" = model default, else "1", "1,0.5", ...
    "simplify_m": 0.0,
    "confidence": True,
}


class Settings:
    """Typed access to the plugin's QgsSettings entries."""

    def __init__(self, settings: Optional[QgsSettings] = None):
        self.s = settings or QgsSettings()

    def get(self, key: str):
        default = DEFAULTS[key]
        if isinstance(default, bool):
            return self.s.value(PREFIX + key, default, type=bool)
        if isinstance(default, int):
            return self.s.value(PREFIX + key, default, type=int)
        if isinstance(default, float):
            return self.s.value(PREFIX + key, default, type=float)
        if isinstance(default, list):
            v = self.s.value(PREFIX + key, [])
            if v in (None, ""):
                return []
            return [v] if isinstance(v, str) else list(v)
        v = self.s.value(PREFIX + key, default)
        return default if v is None else str(v)

    def set(self, key: str, value) -> None:
        self.s.setValue(PREFIX + key, value)

    def reset(self) -> None:
        for k in DEFAULTS:
            self.s.remove(PREFIX + k)


def layer_path(layer: QgsMapLayer) -> str:
    """What GDAL opens for a raster layer; raises ValueError for non-GDAL layers."""
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        raise ValueError("choose a valid raster layer")
    if layer.providerType() != "gdal":
        raise ValueError("layer %r comes from the %s provider; Tailings Mapper reads GDAL rasters (files)"
                         % (layer.name(), layer.providerType()))
    src = layer.source()
    try:
        parts = QgsProviderRegistry.instance().decodeUri("gdal", src)
        if parts.get("path"):
            return parts["path"]
    except Exception:
        pass
    return src


def band_descriptions(layer: QgsRasterLayer) -> List[str]:
    """Band descriptions as GDAL reports them (QGIS's bandName adds 'Band n: ')."""
    try:
        from osgeo import gdal
        ds = gdal.Open(layer_path(layer))
        if ds is not None:
            out = [ds.GetRasterBand(i + 1).GetDescription() or "" for i in range(ds.RasterCount)]
            ds = None
            return out
    except Exception:
        pass
    return [""] * layer.bandCount()


def default_out_dir(input_path: str) -> str:
    """A ``tailings_mapper`` folder next to the input when writable, else in Documents."""
    folder = os.path.dirname(os.path.abspath(input_path)) if input_path else ""
    if folder and os.access(folder, os.W_OK):
        return os.path.join(folder, "tailings_mapper")
    docs = QStandardPaths.writableLocation(QStandardPaths.DocumentsLocation) or os.path.expanduser("~")
    return os.path.join(docs, "Tailings Mapper")


def check_out_dir(path: str) -> Optional[str]:
    """None when the folder exists and is writable or can be created, else why not."""
    if not path:
        return "no output folder"
    p = os.path.abspath(path)
    if os.path.exists(p):
        if not os.path.isdir(p):
            return "output folder %s is a file" % p
        return None if os.access(p, os.W_OK) else "output folder %s is not writable" % p
    parent = p
    while parent and not os.path.exists(parent):
        nxt = os.path.dirname(parent)
        if nxt == parent:
            break
        parent = nxt
    if parent and os.path.isdir(parent) and os.access(parent, os.W_OK):
        return None
    return "output folder %s cannot be created" % p


def run_prefix(input_path: str, when: Optional[datetime.datetime] = None) -> str:
    stem = os.path.splitext(os.path.basename(os.path.normpath(input_path)))[0] or "raster"
    when = when or datetime.datetime.now()
    return "%s_%s" % (stem, when.strftime("%Y%m%d-%H%M%S"))


def canvas_extent_in(layer: QgsRasterLayer, canvas) -> Tuple[float, float, float, float]:
    rect = canvas.extent()
    src = canvas.mapSettings().destinationCrs()
    if src.isValid() and layer.crs().isValid() and src != layer.crs():
        rect = QgsCoordinateTransform(src, layer.crs(), QgsProject.instance()).transformBoundingBox(rect)
    rect = rect.intersect(layer.extent())
    if rect.isEmpty():
        raise ValueError("the current map view does not overlap layer %r" % layer.name())
    return rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()


def polygons_wkt_in(features, src_crs, dst_crs, transform_context, cancelled=None) -> Tuple[List[str], QgsRectangle]:
    """The geometries of ``features`` reprojected from ``src_crs`` to ``dst_crs``, as WKT (the
    engine's area of interest), and their joint bounding box; null and empty geometries are
    skipped.  Shared by the panel (selected features) and the Processing algorithm."""
    ct = None
    if src_crs.isValid() and dst_crs.isValid() and src_crs != dst_crs:
        ct = QgsCoordinateTransform(src_crs, dst_crs, transform_context)
    wkts = []
    rect = QgsRectangle()
    rect.setMinimal()
    for f in features:
        if cancelled is not None and cancelled():
            break
        g = QgsGeometry(f.geometry())
        if g.isNull() or g.isEmpty():
            continue
        if ct is not None:
            g.transform(ct)
        rect.combineExtentWith(g.boundingBox())
        wkts.append(g.asWkt())
    return wkts, rect


def selection_area_in(layer: QgsRasterLayer, polygons) -> Tuple[Tuple[float, float, float, float], List[str]]:
    """The selected polygons of ``polygons`` in the raster layer's CRS: their bounding box
    (clipped to the layer) and their geometries as WKT (the engine's area of interest:
    pixels outside them get no class)."""
    if polygons is None:
        raise ValueError("choose the polygon layer whose selected features bound the area")
    if polygons.selectedFeatureCount() == 0:
        raise ValueError("no features are selected in layer %r" % polygons.name())
    wkts, rect = polygons_wkt_in(polygons.getSelectedFeatures(), polygons.crs(), layer.crs(),
                                 QgsProject.instance().transformContext())
    if not wkts:
        raise ValueError("the selected features of %r have no geometry" % polygons.name())
    rect = rect.intersect(layer.extent())
    if rect.isEmpty():
        raise ValueError("the selected features of %r do not overlap layer %r" % (polygons.name(), layer.name()))
    return (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()), wkts


@dataclass
class Request:
    """Everything one run needs: what the task hands to the engine."""
    layer_id: str
    source_name: str
    input_path: str
    model: str
    out_dir: str
    opts: object                       # inference.SegmentOptions
    notes: List[str] = field(default_factory=list)


def choose_model(settings: Settings) -> str:
    m = settings.get("model")
    if m:
        return m
    from ..inference import list_models
    entries = list_models(load=False)
    names = [e.name for e in entries]
    if DEFAULT_MODEL in names:
        return DEFAULT_MODEL
    shipped = [e.name for e in entries if e.shipped]
    if shipped:
        return shipped[0]
    if names:
        return names[0]
    return DEFAULT_MODEL


def build_request(layer: QgsRasterLayer, settings: Optional[Settings] = None, canvas=None,
                  mapping: Optional[Dict[str, int]] = None, extent_layer=None, model: Optional[str] = None,
                  out_dir: Optional[str] = None) -> Request:
    """A run request from the stored settings (and the panel's band mapping when given).

    Raises ValueError for a problem in the choices (no layer, no selection...).
    """
    from ..inference import SegmentOptions
    settings = settings or Settings()
    path = layer_path(layer)
    mode = settings.get("extent_mode")
    extent = aoi = None
    if mode == EXTENT_CANVAS:
        if canvas is None:
            raise ValueError("no map view to take the extent from")
        extent = canvas_extent_in(layer, canvas)
    elif mode == EXTENT_SELECTION:
        if extent_layer is None:
            extent_layer = QgsProject.instance().mapLayer(settings.get("extent_layer"))
        extent, aoi = selection_area_in(layer, extent_layer)
    tile = settings.get("tile_size")
    overlap = settings.get("overlap")
    thr = settings.get("threshold")
    min_area = settings.get("min_area_ha")
    opts = SegmentOptions(
        bands=dict(mapping) if mapping else None,
        preset=settings.get("preset") or None,
        tile_size=tile if tile > 0 else None,
        overlap=overlap if overlap >= 0 else None,
        batch=max(1, settings.get("batch")),
        device=settings.get("device") or "auto",
        threshold=thr if thr > 0 else None,
        min_area_ha=min_area if min_area >= 0 else None,
        tta=settings.get("tta") or None,
        scales=tuple(float(v) for v in settings.get("scales").split(",")) if settings.get("scales") else None,
        simplify_m=max(0.0, settings.get("simplify_m")),
        confidence=settings.get("confidence"),
        polygons=True,
        overwrite=False,
        extent=extent,
        aoi=aoi,
        prefix=run_prefix(path),
    )
    # leave a core to QGIS so that the map and the UI stay responsive during a run
    if hasattr(opts, "threads"):
        opts.threads = max(1, (os.cpu_count() or 2) - 1)
    out = out_dir or settings.get("out_dir") or default_out_dir(path)
    return Request(layer_id=layer.id(), source_name=layer.name(), input_path=path,
                   model=model or choose_model(settings), out_dir=out, opts=opts)
