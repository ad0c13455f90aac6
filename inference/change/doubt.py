"""Which change is certain: each year's confidence and its distance to the edge of the raster it
was segmented from.

A pixel of one year is *doubtful* when

- the run was not sure of its class: its confidence (``<stem>_confidence.tif`` beside the class
  raster: the probability of the assigned class, percent) is below :data:`CONFIDENCE_MIN` (70 %),
  or
- it lies within :data:`EDGE_PX` (32) pixels of the edge of the raster the model segmented, or of
  that raster's no data (outside the scene, outside an area of interest), and the other year's
  raster does not end there too (their distances to an edge differ by more than
  :data:`EDGE_TOLERANCE` pixels): there one run saw the ground on one side only and the other saw
  more, and two runs of the same imagery disagree.  Two years segmented over the same window (a
  batch's facility areas) saw the same ground around each pixel: their edges are comparable.

A change (a pixel whose class in the first year differs from the last) is *uncertain* when the
pixel is doubtful in either of the two years, else certain.  A pond that appears or disappears
between the years is seen with high confidence in both, away from the edges: certain.  Where a
polygon layer (as the analyst edited it) differs from its run's class raster, the polygons are
the analyst's judgement and that year is not doubtful there.

A class raster that no model made (no ``TM_MODEL`` in its metadata: drawn by hand, another tool)
has no model edges (the other year's near its own edges is doubtful); a polygon layer without its
class raster has unknown edges (not compared); one without a confidence raster (older runs, ``--no-confidence``) has no
known confidence: its change counts as certain unless near an edge, with a warning.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
from osgeo import gdal

CONFIDENCE_MIN = 70
EDGE_PX = 32
EDGE_TOLERANCE = 2
LOW_CONFIDENCE = 128   # a doubt raster: this bit, and the distance to an edge in the bits below (FAR: beyond EDGE_PX)
FAR = EDGE_PX + 1
_NO_DIST = 65535
ROWS = 512


@dataclass(frozen=True)
class Evidence:
    class_raster: Optional[str]     # the run's class raster (the input, or the one beside a polygon layer)
    confidence: Optional[str]       # its confidence raster, when there
    model_edges: bool               # whether a model made it (its edges lack context)


def confidence_beside(class_raster: str) -> Optional[str]:
    """The confidence raster of a run's class raster: the one its report (``<stem>_report.json``)
    names, else ``<stem>_confidence.tif`` beside it; None when there is none."""
    folder, name = os.path.split(class_raster)
    stem = name[:-len("_classes.tif")] if name.endswith("_classes.tif") else os.path.splitext(name)[0]
    report = os.path.join(folder, stem + "_report.json")
    if os.path.isfile(report):
        try:
            with open(report, encoding="utf-8") as fh:
                named = (json.load(fh).get("outputs") or {}).get("confidence")
        except (OSError, ValueError, AttributeError):
            named = None
        if isinstance(named, str):
            for p in (named, os.path.join(folder, os.path.basename(named))):
                if os.path.isfile(p):
                    return p
    p = os.path.join(folder, stem + "_confidence.tif")
    return p if os.path.isfile(p) else None


def evidence(class_raster: Optional[str]) -> Evidence:
    """What a year's class raster tells of its doubt (None: a polygon layer without one)."""
    if not class_raster:
        return Evidence(None, None, False)
    ds = gdal.Open(class_raster)
    md, size = ds.GetMetadata() or {}, (ds.RasterXSize, ds.RasterYSize)
    ds = None
    conf = confidence_beside(class_raster)
    if conf is not None:
        cds = gdal.Open(conf)
        if (cds.RasterXSize, cds.RasterYSize) != size:
            conf = None   # (not this raster's: a renamed or replaced file)
        cds = None
    return Evidence(class_raster, conf, bool(md.get("TM_MODEL")))


def doubt_raster(ev: Evidence, path: str) -> Optional[str]:
    """On the class raster's own grid: the ``LOW_CONFIDENCE`` bit and the distance to an edge in
    pixels (``FAR`` beyond :data:`EDGE_PX`) per pixel (a GeoTIFF at ``path``); None when nothing
    there can be doubted (no class raster: a polygon layer without one)."""
    if ev.class_raster is None:
        return None
    src = gdal.Open(ev.class_raster)
    W, H = src.RasterXSize, src.RasterYSize
    drv = gdal.GetDriverByName("GTiff")
    opts = ["TILED=YES", "COMPRESS=DEFLATE"]
    prox = None
    if ev.model_edges:
        edge = drv.Create(path + ".edge.tif", W, H, 1, gdal.GDT_Byte, options=opts)
        for y in range(0, H, ROWS):
            h = min(ROWS, H - y)
            a = src.GetRasterBand(1).ReadAsArray(0, y, W, h) == 255
            a[:, 0] = a[:, -1] = True
            if y == 0:
                a[0] = True
            if y + h == H:
                a[-1] = True
            edge.GetRasterBand(1).WriteArray(a.astype(np.uint8), 0, y)
        prox = drv.Create(path + ".prox.tif", W, H, 1, gdal.GDT_UInt16, options=opts)
        gdal.ComputeProximity(edge.GetRasterBand(1), prox.GetRasterBand(1),
                              ["VALUES=1", "DISTUNITS=PIXEL", "MAXDIST=%d" % EDGE_PX, "NODATA=%d" % _NO_DIST])
        edge = None
    conf = gdal.Open(ev.confidence) if ev.confidence else None
    out = drv.Create(path, W, H, 1, gdal.GDT_Byte, options=opts)
    out.SetGeoTransform(src.GetGeoTransform())
    out.SetProjection(src.GetProjection())
    for y in range(0, H, ROWS):
        h = min(ROWS, H - y)
        d = np.full((h, W), FAR, np.uint8)
        if conf is not None:
            c = conf.GetRasterBand(1).ReadAsArray(0, y, W, h)
            d |= np.where(c < CONFIDENCE_MIN, LOW_CONFIDENCE, 0).astype(np.uint8)
        if prox is not None:
            p = prox.GetRasterBand(1).ReadAsArray(0, y, W, h)
            d = np.where(p != _NO_DIST, np.minimum(p, EDGE_PX), FAR).astype(np.uint8) | (d & LOW_CONFIDENCE)
        out.GetRasterBand(1).WriteArray(d, 0, y)
    out = prox = conf = src = None
    for extra in (path + ".edge.tif", path + ".prox.tif"):
        if os.path.exists(extra):
            os.remove(extra)
    return path


def uncertain(first, last) -> np.ndarray:
    """Which rows of pixels of the first and the last year are doubtful in either; each year
    ``(doubt rows or None, its run's classes or None, its classes)``: for a polygon layer (its
    run's classes given), only where the polygons agree with the run."""
    out, dist, near = None, [], []
    for d, run, cls in (first, last):
        if d is None:     # (unknown: a polygon layer without its class raster; its edges taken as the other's)
            dist.append(None)
            near.append(np.zeros(cls.shape, bool))
            continue
        agree = (run == cls) if run is not None else np.ones(cls.shape, bool)
        low = ((d & LOW_CONFIDENCE) != 0) & agree
        out = low if out is None else out | low
        dist.append((d & ~np.uint8(LOW_CONFIDENCE)).astype(np.int16))
        near.append((dist[-1] <= EDGE_PX) & agree)
    if dist[0] is None or dist[1] is None:
        return out if out is not None else np.zeros(first[2].shape, bool)
    edge = (near[0] | near[1]) & (np.abs(dist[0] - dist[1]) > EDGE_TOLERANCE)
    return edge if out is None else out | edge


def warnings_for(label: str, ev: Evidence) -> Optional[str]:
    if ev.class_raster is None:
        return ("%s has no class raster beside it: its confidence and its raster's edges are unknown, its change "
                "counts as certain" % label)
    if ev.confidence is None:
        return ("%s has no confidence raster (%s): its confidence is unknown, its change counts as certain%s"
                % (label, os.path.basename(ev.class_raster)[:-len("_classes.tif")] + "_confidence.tif"
                   if ev.class_raster.endswith("_classes.tif") else "<stem>_confidence.tif",
                   " unless near its raster's edge" if ev.model_edges else ""))
    return None
