"""What a run found: :class:`SegmentResult`, made from what its steps wrote (:func:`result`)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from ..areas import hectares, mean_pixel_m2
from ..input.masks import summary as mask_summary
from ..model.metadata import ModelInfo
from .ood import warning as ood_warning


@dataclass(frozen=True)
class SegmentResult:
    class_raster: str
    confidence_raster: Optional[str]
    polygons: Optional[str]
    layer_name: Optional[str]              # the polygon layer inside its GeoPackage
    device: str                            # "cpu" or "cuda": what onnxruntime ran on
    provider_reason: str
    seconds: float
    stats: Dict[int, Dict[str, object]]    # class id -> {name, count (None without polygons), area_ha}
    notes: Tuple[str, ...]
    model: ModelInfo
    valid_pixels: int = 0
    tiles: int = 0
    warnings: Tuple[str, ...] = ()
    masked_ha: Dict[str, float] = field(default_factory=dict)   # cloud, cloud shadow...: hectares
    masked_fraction: float = 0.0           # of the pixels with data: masked before segmenting
    flagged_fraction: float = 0.0          # of the segmented pixels: in a class that gets polygons
    reliability: Dict[str, object] = field(default_factory=dict)   # ood.TileLog.summary(), when checked
    tiles_layer: Optional[str] = None      # the GeoPackage layer of scored tiles (beside the polygons)
    report: Optional[str] = None           # <stem>_report.json (``inference.output.report``)
    marks: Dict[str, object] = field(default_factory=dict)   # regions marked for review (likeness.mark_layer)


def result(p, rasters, staged, stats, marks, t0: float) -> SegmentResult:
    """What the run found, under the outputs' final names."""
    out, session, streamed = staged.final, rasters.session, rasters.stats
    masked_ha, masked_fraction, flagged_fraction, warnings = _findings(stats, streamed, rasters.grid)
    reliability = rasters.tile_log.summary() if rasters.tile_log is not None else {}
    if reliability:
        w = ood_warning(reliability)
        if w:
            warnings.append(w)
    tiles_layer = staged.names.tiles_layer if rasters.tile_log is not None else None
    return SegmentResult(class_raster=out["classes"], confidence_raster=out.get("confidence"),
                         polygons=out.get("polygons"), layer_name=staged.layer_name, device=session.device,
                         provider_reason=session.reason, seconds=time.time() - t0, stats=stats,
                         notes=p.notes + tuple(staged.notes),
                         model=p.info, valid_pixels=streamed.valid_pixels, tiles=streamed.tiles,
                         warnings=p.warnings + tuple(warnings), masked_ha=masked_ha,
                         masked_fraction=masked_fraction, flagged_fraction=flagged_fraction,
                         reliability=reliability, tiles_layer=tiles_layer, report=out.get("report"),
                         marks=marks or {})


def _findings(stats, streamed, g) -> Tuple[Dict[str, float], float, float, list]:
    """Masked area per kind, the masked and flagged fractions, and what they warn of (``g``: the
    working grid, its mean pixel area)."""
    px_m2 = mean_pixel_m2(g.grid)
    masked_px = sum(streamed.masked.values())
    total = streamed.valid_pixels + masked_px
    flagged_ha = sum(float(s["area_ha"]) for s in stats.values())
    valid_ha = hectares(streamed.valid_pixels * px_m2)
    warnings = []
    masked_fraction = masked_px / total if total else 0.0
    if streamed.valid_pixels == 0:
        warnings.append("the whole area is masked (cloud, shadow or defective): nothing could be segmented")
    elif masked_fraction > 0.5:
        warnings.append("%.0f %% of the area is masked (cloud, shadow or defective): the map covers the rest only"
                        % (100 * masked_fraction))
    return (mask_summary(streamed.masked, px_m2), masked_fraction,
            min(1.0, flagged_ha / valid_ha) if valid_ha else 0.0, warnings)
