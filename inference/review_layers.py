"""What the polygon GeoPackage gets beside the polygons: the regions marked for review (flagged
regions unlike the training tailings: ``likeness``) and the layer of scored tiles (``ood``)."""
from __future__ import annotations

from typing import Dict

from .likeness import mark_layer
from .ood import boxes_wkt
from .vectorize import write_tiles_layer
from .writing import STAGES


def mark_for_review(p, rasters, staged) -> Dict[str, object]:
    """Mark the regions for review and write the tiles layer (when the run scored its tiles and
    writes polygons); returns the marks (``likeness.mark_layer``; empty when the run did not mark)."""
    marks: Dict[str, object] = {}
    grid, gpkg, names = rasters.grid, staged.get("polygons"), staged.names
    if rasters.distances is not None:
        with STAGES("likeness"):
            marks = mark_layer(gpkg, names.layer, rasters.distances, grid.gt, grid.wkt)
    if rasters.tile_log is not None and gpkg:
        write_tiles_layer(gpkg, names.tiles_layer, boxes_wkt(rasters.tile_log.boxes, grid.gt), grid.wkt,
                          rasters.tile_log)
    return marks
