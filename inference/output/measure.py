"""Measuring the regions of a run: each polygon's true area and perimeter (``areas``), mean
confidence and provenance, and the layer's metadata and style; without polygons, each class's
true area on the class raster."""
from __future__ import annotations

import os
from typing import Dict

from ..areas import EqualArea, PixelAreas, area_perimeter_m, hectares, simplified
from ..errors import Cancelled
from ..grid import Grid
from .region_stats import ROWS_PER_READ
from .writing import STAGES


def measure_regions(p, ds, out, layer, srs, conf, run_time: str, layer_meta, cancel) -> Dict[int, Dict[str, object]]:
    """Per-class statistics ``{class_id: {name, count, area_ha}}`` of plan ``p``'s class raster ``ds``:
    from its polygons (``layer`` in ``out``, in ``srs``; ``conf``: confidence ``(sums, counts)`` by
    fid), each polygon's fields set (name, area, perimeter, mean confidence, provenance; simplified
    first when the plan says so) and the layer's metadata written (``layer_meta``:
    ``provenance.layer_record``); without a layer (None), from the pixels."""
    info = p.info
    grid = Grid.of_dataset(ds)
    if layer is None:   # (counts None: no polygons)
        if p.label_bands:
            pixel_areas = PixelAreas(grid)
            return {c.id: {"name": c.name, "count": None,
                           "area_ha": hectares(float(pixel_areas.by_value_m2(ds.GetRasterBand(k + 2), ROWS_PER_READ)[1]))}
                    for k, c in enumerate(info.label_classes())}   # (1: the label present)
        bg = info.background_ids()
        m2 = PixelAreas(grid).by_value_m2(ds.GetRasterBand(1), ROWS_PER_READ)
        return {c.id: {"name": c.name, "count": None, "area_ha": hectares(float(m2[c.id]))}
                for c in info.classes if c.id not in bg}
    names = info.class_names()
    sums, counts = conf
    stats: Dict[int, Dict[str, object]] = {c.id: {"name": c.name, "count": 0, "area_ha": 0.0}
                                           for c in info.classes if not c.is_background}
    source = os.path.abspath(p.input)
    measure = EqualArea.of_grid(grid)
    defn = layer.GetLayerDefn()
    i_cid, i_name, i_m2, i_ha, i_perim, i_conf, i_src, i_model, i_time = (
        defn.GetFieldIndex(f) for f in ("class_id", "class_name", "area_m2", "area_ha", "perimeter_m",
                                        "mean_confidence", "source", "model", "run_time"))
    with STAGES("measure"):   # areas, perimeters, fields
        out.StartTransaction()
        layer.ResetReading()
        n = 0
        for feat in layer:
            n += 1
            if n % 200 == 0 and cancel():
                raise Cancelled("cancelled")
            fid = feat.GetFID()
            geom = feat.GetGeometryRef()
            if p.simplify_m > 0:
                geom = simplified(geom.Clone(), p.simplify_m, srs)
                feat.SetGeometry(geom)
            area, perim = area_perimeter_m(geom, srs, measure)
            cid = feat.GetFieldAsInteger(i_cid)
            feat.SetFieldString(i_name, names.get(cid, str(cid)))
            feat.SetField(i_m2, round(area, 2))
            feat.SetField(i_ha, round(hectares(area), 2))
            feat.SetField(i_perim, round(perim, 2))
            if fid < len(counts) and counts[fid]:
                feat.SetField(i_conf, round(float(sums[fid] / counts[fid]), 1))   # percent, like the raster
            feat.SetFieldString(i_src, source)
            feat.SetFieldString(i_model, info.name)
            feat.SetFieldString(i_time, run_time)
            layer.SetFeature(feat)
            s = stats.setdefault(cid, {"name": names.get(cid, str(cid)), "count": 0, "area_ha": 0.0})
            s["count"] += 1
            s["area_ha"] += hectares(area)
        out.CommitTransaction()
    layer.SetMetadata(layer_meta)
    return stats
