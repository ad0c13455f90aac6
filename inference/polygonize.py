"""GDAL's Polygonize of a class raster, in two halves at once on a second core.

The two halves' regions that the seam cuts are joined again, and every vertex gets the
coordinates one Polygonize of the whole raster would give it.
"""
from __future__ import annotations

import os
from typing import Dict

import numpy as np
from osgeo import gdal, ogr

from .errors import OutputError


POLYGONIZE_SPLIT_ROWS = 4096   # rasters this tall or taller are polygonised in two halves at once


def polygonize(band, mask_band, out, layer, band_path: str, mask_path: str, tmpdir: str) -> None:
    """GDAL's Polygonize of ``band`` where ``mask_band`` is not 0 into ``layer`` (field 0: the
    value), 4-connected; ``band_path``, ``mask_path``: their files (flushed).

    Polygonize is single-threaded (seconds for 100 Mpx).  With a second core, a raster of at
    least ``POLYGONIZE_SPLIT_ROWS`` rows (``TM_POLYGONIZE_SPLIT_ROWS``) is polygonised in two
    halves at once: the upper into ``layer``, the lower on a thread of its own into a scratch
    GeoPackage, in pixel coordinates.  The regions the seam cuts are joined (their pieces that
    share a stretch of the seam and a value; GEOS's union in pixel coordinates, the vertices the
    seam added removed) and every vertex of the lower half gets the coordinates GDAL's formula
    gives it (``gt[0] + x * gt[1] + y * gt[2]``, ...): the same regions with the same vertices
    as one Polygonize of the whole raster; the joined regions and the lower half's follow the
    upper half's features."""
    W, H = band.XSize, band.YSize
    gt = band.GetDataset().GetGeoTransform()
    split = int(os.environ.get("TM_POLYGONIZE_SPLIT_ROWS", POLYGONIZE_SPLIT_ROWS))
    if (os.cpu_count() or 1) < 2 or H < max(2, split) or gt[2] != 0 or gt[4] != 0:
        out.StartTransaction()
        gdal.Polygonize(band, mask_band, layer, 0, [])
        out.CommitTransaction()
        return
    from concurrent.futures import ThreadPoolExecutor
    S = H // 2
    lower_path = os.path.join(tmpdir, "lower.gpkg")

    def lower():
        cls_ds, m_ds = gdal.Open(band_path), gdal.Open(mask_path)
        c = gdal.Translate("", cls_ds, format="VRT", srcWin=[0, S, W, H - S])
        m = gdal.Translate("", m_ds, format="VRT", srcWin=[0, S, W, H - S])
        c.SetGeoTransform((0.0, 1.0, 0.0, 0.0, 0.0, 1.0))   # pixel coordinates
        scratch = ogr.GetDriverByName("GPKG").CreateDataSource(lower_path)
        lyr = scratch.CreateLayer("lower", None, ogr.wkbPolygon, options=["FID=fid"])
        lyr.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
        scratch.StartTransaction()
        gdal.Polygonize(c.GetRasterBand(1), m.GetRasterBand(1), lyr, 0, [])
        scratch.CommitTransaction()
        lyr = scratch = c = m = cls_ds = m_ds = None

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tm-poly") as pool:
        job = pool.submit(lower)
        c = gdal.Translate("", band.GetDataset(), format="VRT", srcWin=[0, 0, W, S])
        m = gdal.Translate("", mask_band.GetDataset(), format="VRT", srcWin=[0, 0, W, S])
        out.StartTransaction()
        gdal.Polygonize(c.GetRasterBand(1), m.GetRasterBand(1), layer, 0, [])
        out.CommitTransaction()
        c = m = None
        job.result()
    scratch = ogr.Open(lower_path)
    try:
        out.StartTransaction()
        _join_halves(layer, scratch.GetLayer(0), gt, W, S)
        out.CommitTransaction()
    finally:
        scratch = None


def _pixel_rings(g, gt=None):
    """The rings of polygon ``g`` as (n, 2) float64 arrays, in pixel coordinates of ``gt`` (None:
    they are already); None when ``g`` is not a polygon with its vertices on pixel corners."""
    if g is None or g.GetGeometryType() != ogr.wkbPolygon:
        return None
    wkb = g.ExportToWkb(ogr.wkbNDR)
    rings, off = [], 9
    for _ in range(int.from_bytes(wkb[5:9], "little")):
        k = int.from_bytes(wkb[off:off + 4], "little")
        r = np.frombuffer(wkb, "<f8", count=2 * k, offset=off + 4).reshape(k, 2)
        off += 4 + 16 * k
        if gt is not None:
            r = np.column_stack([(r[:, 0] - gt[0]) / gt[1], (r[:, 1] - gt[3]) / gt[5]])
            q = np.rint(r)
            if np.abs(r - q).max() > 1e-6:
                return None
            r = q
        rings.append(r)
    return rings


def _polygon_wkb(rings, gt, dy: float) -> bytes:
    """WKB of a polygon from pixel rings (rows shifted by ``dy``), coordinates as GDAL's
    Polygonize computes them from pixel corners."""
    import struct
    parts = [b"\x01", struct.pack("<II", ogr.wkbPolygon, len(rings))]
    for r in rings:
        x, y = r[:, 0], r[:, 1] + dy
        xy = np.empty((len(r), 2), "<f8")
        xy[:, 0] = gt[0] + x * gt[1] + y * gt[2]
        xy[:, 1] = gt[3] + x * gt[4] + y * gt[5]
        parts += [struct.pack("<I", len(r)), xy.tobytes()]
    return b"".join(parts)


def _seam_columns(rings, y: float, fid: int, ids: np.ndarray) -> None:
    """Mark ``ids[x] = fid`` for the columns of the edges of ``rings`` on row line ``y``."""
    for r in rings:
        on = (r[:-1, 1] == y) & (r[1:, 1] == y)
        for x0, x1 in zip(r[:-1, 0][on], r[1:, 0][on]):
            a, b = int(min(x0, x1)), int(max(x0, x1))
            ids[a:b] = fid


def _join_halves(upper, lower, gt, W: int, S: int) -> None:
    """Join the pieces of the regions the seam (row line ``S``) cuts, and append the lower half
    (``lower``: pixel coordinates, rows from ``S``) to ``upper`` (see :func:`polygonize`)."""
    top_id, bot_id = np.full(W, -1, np.int64), np.full(W, -1, np.int64)
    value, top_rings, bot_rings = {}, {}, {}
    ys = (gt[3] + S * gt[5] - abs(gt[5]) / 2, gt[3] + S * gt[5] + abs(gt[5]) / 2)
    upper.SetSpatialFilterRect(gt[0], min(ys), gt[0] + W * gt[1], max(ys))
    for f in upper:
        rings = _pixel_rings(f.GetGeometryRef(), gt)
        if rings is None:
            raise OutputError("Polygonize returned a polygon off the pixel grid")
        top_rings[f.GetFID()] = rings
        value[("t", f.GetFID())] = f.GetField(0)
        _seam_columns(rings, S, f.GetFID(), top_id)
    upper.SetSpatialFilter(None)
    lower.SetSpatialFilterRect(0, -0.5, W, 0.5)
    for f in lower:
        rings = _pixel_rings(f.GetGeometryRef())
        bot_rings[f.GetFID()] = rings
        value[("b", f.GetFID())] = f.GetField(0)
        _seam_columns(rings, 0, f.GetFID(), bot_id)
    lower.SetSpatialFilter(None)
    # pieces that share a stretch of the seam and a value are one region
    parent: Dict[tuple, tuple] = {}

    def root(k):
        while parent.setdefault(k, k) != k:
            k = parent[k]
        return k
    both = np.flatnonzero((top_id >= 0) & (bot_id >= 0))
    for t, b in set(zip(top_id[both].tolist(), bot_id[both].tolist())):
        if value[("t", t)] == value[("b", b)]:
            parent[root(("t", t))] = root(("b", b))
    groups: Dict[tuple, list] = {}
    for k in list(parent):
        groups.setdefault(root(k), []).append(k)
    defn = upper.GetLayerDefn()
    pixels = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    for members in groups.values():
        pieces = ogr.Geometry(ogr.wkbMultiPolygon)
        signs = []
        for side, fid in members:
            rings = top_rings[fid] if side == "t" else bot_rings[fid]
            pieces.AddGeometry(ogr.CreateGeometryFromWkb(_polygon_wkb(rings, pixels, 0.0 if side == "t" else float(S))))
            signs += [(i > 0, _shoelace(r) > 0) for i, r in enumerate(rings)]
        union = pieces.UnionCascaded()
        rings = _pixel_rings(union) if union is not None else None
        if rings is None:
            raise OutputError("joining the halves of a region gave %s" % (union.GetGeometryName() if union else None))
        # rings turning the way Polygonize turns them (GDAL 3.6: shells and holes alike)
        shell = next(pos for hole, pos in signs if not hole)
        hole = next((pos for h, pos in signs if h), shell)
        f = ogr.Feature(defn)
        f.SetField(0, value[members[0]])
        f.SetGeometryDirectly(ogr.CreateGeometryFromWkb(
            _polygon_wkb([_grid_ring(r, hole if i else shell) for i, r in enumerate(rings)], gt, 0.0)))
        upper.CreateFeature(f)
        for side, fid in members:
            if side == "t":
                upper.DeleteFeature(fid)
    joined = {k for members in groups.values() for k in members}
    lower.ResetReading()
    for f in lower:
        if ("b", f.GetFID()) in joined:
            continue
        rings = bot_rings.get(f.GetFID()) or _pixel_rings(f.GetGeometryRef())
        g = ogr.Feature(defn)
        g.SetField(0, f.GetField(0))
        g.SetGeometryDirectly(ogr.CreateGeometryFromWkb(_polygon_wkb(rings, gt, float(S))))
        upper.CreateFeature(g)


def _shoelace(r: np.ndarray) -> float:
    """Twice the signed area of a closed ring."""
    return float(np.sum(r[:-1, 0] * r[1:, 1] - r[1:, 0] * r[:-1, 1]))


def _grid_ring(r: np.ndarray, positive: bool) -> np.ndarray:
    """A ring from GEOS in pixel coordinates as Polygonize writes them: no vertex in the middle
    of a straight edge, and its signed area of the sign ``positive`` says."""
    q = r[:-1]
    prev, nxt = np.roll(q, 1, axis=0), np.roll(q, -1, axis=0)
    straight = ((prev[:, 0] == q[:, 0]) & (q[:, 0] == nxt[:, 0])) | ((prev[:, 1] == q[:, 1]) & (q[:, 1] == nxt[:, 1]))
    q = np.vstack([q[~straight], q[~straight][:1]])
    return q if (_shoelace(q) > 0) == positive else q[::-1]
