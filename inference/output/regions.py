"""From the class raster to measured regions: the run's last step before its review marks.

The class raster is sieved in place first (regions under the minimum area merged into their
largest neighbour: ``sieve``), then polygonised (``polygons``), so the raster and the polygon
layer show the same regions; each polygon's mean confidence is summed (``region_stats``) and the
regions measured (``measure``: true areas, ``areas``).
"""
from __future__ import annotations

from typing import Dict, Optional

from osgeo import gdal, ogr

from ..errors import Cancelled
from .measure import measure_regions
from .polygons import BandPolygonizer, polygon_layer, polygonise_result
from .region_stats import confidence_by_fid
from .sieve import sieve_result

ogr.UseExceptions()


def postprocess(p, classes_path: str, conf_path: str, gpkg_path: Optional[str], layer_name: Optional[str],
                run_time: str, layer_meta: Dict[str, str], cancel, polygonizer: Optional[BandPolygonizer] = None,
                workdir: Optional[str] = None) -> Dict[int, Dict[str, object]]:
    """Sieve ``classes_path`` in place, write polygons to ``gpkg_path`` (if given; its layer named
    ``layer_name``, recording ``layer_meta``), return per-class statistics ``{class_id: {name,
    count, area_ha}}``.  With
    ``polygonizer`` the classes were sieved while streaming (``sieve.StreamSieve``) and their
    rows pushed to it, already polygonised.  ``workdir``: the run's scratch folder (else TMPDIR)."""
    ds = gdal.Open(classes_path, gdal.GA_Update)
    sieve_result(p, ds, conf_path, polygonizer is not None, cancel)
    out = layer = srs = conf = None
    if gpkg_path is not None:
        if cancel():
            raise Cancelled("cancelled")
        out, layer, srs = polygon_layer(ds, gpkg_path, layer_name)
        polygonise_result(p, ds, out, layer, polygonizer, workdir, cancel)
        conf = confidence_by_fid(p, out, layer, ds, conf_path, cancel)
    stats = measure_regions(p, ds, out, layer, srs, conf, run_time, layer_meta, cancel)
    layer = out = ds = None
    return stats
