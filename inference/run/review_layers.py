"""What the polygon GeoPackage gets beside the polygons, and the styles: the regions marked for
review (flagged regions unlike the training tailings: ``likeness``), the layer of scored tiles
(``ood``: each tile cut where it overlaps its neighbours), the QGIS styles of the polygon and tiles
layers and of the class and confidence rasters."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from osgeo import ogr, osr

from ..grid import Grid, box_wkt
from .likeness import mark_layer
from ..output.styles import polygons_qml, polygons_review_qml, tiles_qml, write_gpkg_style, write_styles
from ..output.writing import STAGES


def finish_layers(p, rasters, staged) -> Dict[str, object]:
    """Mark the regions for review, write the tiles layer (when the run scored its tiles and writes
    polygons) and the rasters' styles; returns the marks (``likeness.mark_layer``; empty when the
    run did not mark)."""
    marks: Dict[str, object] = {}
    grid, gpkg, names, log = rasters.grid, staged.get("polygons"), staged.names, rasters.tile_log
    boxes = boxes_wkt(log.boxes, grid.gt) if log is not None and gpkg else None
    if rasters.distances is not None:
        with STAGES("likeness"):
            marks = mark_layer(gpkg, names.layer, rasters.distances, grid.gt, grid.wkt)
    ds = ogr.Open(gpkg, 1) if gpkg else None
    if boxes is not None:   # the run's tiles: each one's out-of-distribution score, share out of range, reliability
        srs = osr.SpatialReference()
        srs.ImportFromWkt(grid.wkt)
        layer = ds.CreateLayer(names.tiles_layer, srs, ogr.wkbPolygon, options=["GEOMETRY_NAME=geom", "FID=fid"])
        for name, kind in (("ood_score", ogr.OFTReal), ("out_of_range_pct", ogr.OFTReal),
                           ("unreliable", ogr.OFTInteger)):
            layer.CreateField(ogr.FieldDefn(name, kind))
        ds.StartTransaction()
        for wkt, score, out, bad in zip(boxes, log.scores, log.out, log.unreliable()):
            f = ogr.Feature(layer.GetLayerDefn())
            f.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
            f.SetField("ood_score", round(score, 3))
            f.SetField("out_of_range_pct", round(100.0 * out, 1))
            f.SetField("unreliable", int(bad))
            layer.CreateFeature(f)
        ds.CommitTransaction()
        layer = None
    if ds is not None:   # the layers' styles: the polygons' (with the review marks when the run marks), the tiles'
        marked = p.likeness is not None
        write_gpkg_style(ds, names.layer, (polygons_review_qml if marked else polygons_qml)(p.info.classes))
        if boxes is not None:
            write_gpkg_style(ds, names.tiles_layer, tiles_qml(log.stats.threshold))
        ds = None
    write_styles(p.out_classes, staged.get("classes_style"), staged.get("confidence_style"))
    return marks


def boxes_wkt(boxes: Sequence[Tuple[int, int, int, int]], gt) -> List[str]:
    """The tiles as polygons (WKT, georeferenced by ``gt``), each cut where it overlaps its
    neighbours at the middle of the overlap, so that the polygons meet without overlapping."""
    def cuts(starts_ends):
        se = sorted(set(starts_ends))
        return {a: ((se[i - 1][1] + a) / 2.0 if i else a, (b + se[i + 1][0]) / 2.0 if i + 1 < len(se) else b)
                for i, (a, b) in enumerate(se)}
    place = Grid(tuple(gt), 0, 0)   # (only where its pixels lie)
    cx = cuts([(x, x + w) for x, _, w, _ in boxes])
    cy = cuts([(y, y + h) for _, y, _, h in boxes])
    out = []
    for x, y, _, _ in boxes:
        (l, r), (t, b) = cx[x], cy[y]
        out.append(box_wkt(*place.xy(l, t), *place.xy(r, b)))
    return out
