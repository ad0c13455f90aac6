"""Per-polygon sums of a raster (the mean confidence of each region), in bands of rows.

Each band of rows sums the confidence between each polygon's left and right edges on every row
(row-wise cumulative sums), instead of burning the polygons into a raster of ids; a polygon
whose edges are not on the pixel grid is burnt.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
from osgeo import gdal, ogr

from ..errors import Cancelled
from ..grid import Grid
from .writing import STAGES

ROWS_PER_READ = 512


def mean_confidence_by_fid(out, layer_name, like_ds, conf_path, cancel, band: int = 1,
                           class_id: Optional[int] = None) -> tuple:
    """Mean confidence of every polygon, in one pass over the confidence raster, band by band of
    ``ROWS_PER_READ`` rows (the polygons that reach a band: the layer's spatial index finds them).
    Returns ``(sums, counts)`` arrays indexed by fid (``class_id``: only that class's polygons).
    Memory: one band of rows (per thread).

    Polygonize's polygons are rectilinear, their vertices on pixel corners: in each row, a
    polygon's pixels lie between pairs of its vertical edges (even-odd), so a band's sums come
    from the row-wise cumulative confidence at those edges (:func:`_spans`), not from burning the
    polygons into a raster (GDAL's rasterisation costs rows x vertices per polygon: seconds for
    large regions with long boundaries).  A band with any other geometry is burnt (value = fid)
    into an in-memory Int32 band instead, and its confidence summed per fid.

    With a second core, the lower half of the bands is summed on a thread of its own, with its
    own connection to the GeoPackage (GDAL releases the GIL)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    # the grid as plain values (a GDAL dataset is not for two threads at once)
    grid = Grid.of_dataset(like_ds)
    bands = list(range(0, grid.height, ROWS_PER_READ))
    path = out.GetDescription()
    two = (os.cpu_count() or 1) > 1 and len(bands) >= 8 and os.path.isfile(path)
    if not two:
        return _sums_by_fid(out, layer_name, grid, conf_path, cancel, band, class_id, bands)
    out.GetLayerByName(layer_name).SyncToDisk()   # (its spatial index, built for the other connection)
    stop = threading.Event()
    half = len(bands) // 2

    def lower():
        other = ogr.Open(path)
        try:
            return _sums_by_fid(other, layer_name, grid, conf_path, stop.is_set, band, class_id, bands[half:])
        finally:
            other = None

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tm-conf") as pool:
        job = pool.submit(lower)
        try:
            s1, c1 = _sums_by_fid(out, layer_name, grid, conf_path, cancel, band, class_id, bands[:half])
        except BaseException:
            stop.set()
            raise
        s2, c2 = job.result()
    m = max(len(s1), len(s2))
    return (np.pad(s1, (0, m - len(s1))) + np.pad(s2, (0, m - len(s2))),
            np.pad(c1, (0, m - len(c1))) + np.pad(c2, (0, m - len(c2))))


def _sums_by_fid(out, layer_name, grid, conf_path, cancel, band, class_id, bands) -> tuple:
    """:func:`mean_confidence_by_fid`'s sums and counts over the bands of rows starting at ``bands``
    (``grid``: the class raster's).  The polygons that reach
    a band come from the layer's own spatial (and attribute) filter, cleared again at the end."""
    rows = ROWS_PER_READ
    w, h = grid.width, grid.height
    conf_ds = gdal.Open(conf_path)
    cb = conf_ds.GetRasterBand(band)
    mem_drv = gdal.GetDriverByName("MEM")
    layer = out.GetLayerByName(layer_name)
    sums = np.zeros(1, np.float64)
    counts = np.zeros(1, np.int64)
    mem = fb = None
    by_spans = grid.north_up
    layer.SetAttributeFilter(None if class_id is None else "class_id = %d" % int(class_id))
    try:
        for y in bands:
            if cancel():
                raise Cancelled("cancelled")
            n = min(rows, h - y)
            strip = grid.sub((0, y, w, n))
            layer.SetSpatialFilter(ogr.CreateGeometryFromWkt(strip.box_wkt()))
            layer.ResetReading()
            spans = _spans(layer, grid, y, n, w) if by_spans else None
            if spans is None:
                by_spans = False   # (the other bands burnt too: no second look at what failed here)
                if mem is None or mem.RasterYSize != n:
                    mem = mem_drv.Create("", w, n, 1, gdal.GDT_Int32)
                    mem.SetProjection(grid.wkt)
                mem.SetGeoTransform(strip.gt)
                fb = mem.GetRasterBand(1)
                fb.Fill(0)  # GeoPackage fids start at 1
                layer.ResetReading()
                _burn_fids(mem, layer)
            sums, counts = _add_band(sums, counts, spans, fb, cb, y, w, n)
    finally:
        layer.SetSpatialFilter(None)
        layer.SetAttributeFilter(None)
    fb = cb = mem = conf_ds = None
    return sums, counts


def _burn_fids(mem, layer) -> None:
    """Burn each feature of ``layer`` (as filtered) into ``mem`` with its fid as the value."""
    vds = ogr.GetDriverByName("Memory").CreateDataSource("")
    ids = vds.CreateLayer("rid", layer.GetSpatialRef(), ogr.wkbUnknown)
    ids.CreateField(ogr.FieldDefn("rid", ogr.OFTInteger64))
    defn = ids.GetLayerDefn()
    for f in layer:
        g = f.GetGeometryRef()
        if g is None:
            continue
        nf = ogr.Feature(defn)
        nf.SetField(0, f.GetFID())
        nf.SetGeometry(g)
        ids.CreateFeature(nf)
    gdal.RasterizeLayer(mem, [1], ids, options=["ATTRIBUTE=rid"])
    ids = vds = None   # the layer before its data source


def fids_on_grid(raster_path: str, layer) -> "np.ndarray":
    """Each pixel's region on a raster's grid: the fid of the polygon of ``layer`` burnt there (0:
    none; GeoPackage fids start at 1) -- a run's polygons on its class raster's grid."""
    ref = gdal.Open(raster_path)
    mem = gdal.GetDriverByName("MEM").Create("", ref.RasterXSize, ref.RasterYSize, 1, gdal.GDT_Int32)
    mem.SetGeoTransform(ref.GetGeoTransform())
    mem.SetProjection(ref.GetProjection())
    ref = None
    layer.ResetReading()
    _burn_fids(mem, layer)
    layer.ResetReading()
    return mem.GetRasterBand(1).ReadAsArray()


def _add_band(sums, counts, spans, fb, cb, y: int, w: int, n: int) -> tuple:
    """``sums`` and ``counts`` plus one band of rows' (from its spans, else its burnt fids)."""
    if spans is not None:
        fids, rows_, x0, x1 = spans
        if not len(fids):
            return sums, counts
        m = int(fids.max()) + 1
        c = cb.ReadAsArray(0, y, w, n)
        bad = c == 255   # (no confidence: not counted)
        if bad.any():
            s = _span_sums(np.where(bad, 0, c), rows_ - y, x0, x1)
            k = _span_sums(~bad, rows_ - y, x0, x1)
        else:
            s, k = _span_sums(c, rows_ - y, x0, x1), x1 - x0
    else:
        f = fb.ReadAsArray()
        m = int(f.max()) + 1
        if m == 1:  # no polygon here: skip reading the confidence
            return sums, counts
        c = cb.ReadAsArray(0, y, w, n)
        np.putmask(f, c == 255, 0)   # (no confidence: not counted)
        fids, s, k = sum_by_id(f, c)
    if m > len(sums):
        sums = np.concatenate([sums, np.zeros(m - len(sums))])
        counts = np.concatenate([counts, np.zeros(m - len(counts), np.int64)])
    sums[:m] += np.bincount(fids, weights=s, minlength=m)
    counts[:m] += np.bincount(fids, weights=k, minlength=m).astype(np.int64)
    return sums, counts


def _spans(layer, grid: Grid, y0: int, n: int, w: int):
    """``(fid, row, x0, x1)`` arrays: the runs of pixels ``x0..x1 - 1`` of each polygon of
    ``layer`` (by fid) in rows ``y0..y0 + n - 1``; None when a geometry is not a polygon
    whose edges follow the pixel grid (the caller burns those instead)."""
    pts, sizes, fid_of = [], [], []
    for f in layer:
        g = f.GetGeometryRef()
        if g is None or g.IsEmpty():
            continue
        if g.GetGeometryType() != ogr.wkbPolygon:
            return None
        wkb = g.ExportToWkb(ogr.wkbNDR)
        fid = f.GetFID()
        off = 9   # byte order, type, number of rings
        for _ in range(int.from_bytes(wkb[5:9], "little")):
            k = int.from_bytes(wkb[off:off + 4], "little")
            pts.append(np.frombuffer(wkb, "<f8", count=2 * k, offset=off + 4))
            sizes.append(k)
            fid_of.append(fid)
            off += 4 + 16 * k
    if not pts:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty
    xy = np.concatenate(pts).reshape(-1, 2)
    ring_of = np.repeat(np.arange(len(sizes)), sizes)
    fid_of = np.asarray(fid_of, np.int64)
    px, py = grid.pixel_of(xy[:, 0], xy[:, 1])
    xi, yi = np.rint(px), np.rint(py)
    if np.abs(px - xi).max() > 1e-6 or np.abs(py - yi).max() > 1e-6:
        return None
    xi, yi = xi.astype(np.int64), yi.astype(np.int64)
    same = ring_of[1:] == ring_of[:-1]         # edges join consecutive vertices of one ring
    ex, ex1, ey, ey1 = xi[:-1][same], xi[1:][same], yi[:-1][same], yi[1:][same]
    efid = fid_of[ring_of[:-1][same]]
    vertical = (ex == ex1) & (ey != ey1)
    if not np.all(vertical | (ey == ey1)):
        return None
    ex, efid = ex[vertical], efid[vertical]
    lo = np.maximum(np.minimum(ey, ey1)[vertical], y0)
    hi = np.minimum(np.maximum(ey, ey1)[vertical], y0 + n)
    keep = lo < hi
    ex, efid, lo, hi = ex[keep], efid[keep], lo[keep], hi[keep]
    length = hi - lo
    total = int(length.sum())
    # each vertical edge crosses the rows lo..hi - 1
    first = np.repeat(np.cumsum(length) - length, length)
    row = np.repeat(lo, length) + (np.arange(total) - first)
    x = np.repeat(ex, length)
    fid = np.repeat(efid, length)
    order = np.lexsort((x, fid, row))
    row, fid, x = row[order], fid[order], x[order]
    # crossings pair up within each (row, polygon): pixels from one to the next are inside
    if total % 2 or not (np.array_equal(row[0::2], row[1::2]) and np.array_equal(fid[0::2], fid[1::2])):
        return None
    x0, x1 = x[0::2], x[1::2]
    if not len(x0):
        return fid[0::2], row[0::2], x0, x1
    if x0.min() < 0 or x1.max() > w or np.any(x0 >= x1):
        return None
    return fid[0::2], row[0::2], x0, x1


def _span_sums(values: np.ndarray, rows: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Sum of ``values`` (2-D, uint8 or bool) over each run ``rows, x0..x1 - 1`` (runs that do
    not overlap): one ``reduceat`` over the flattened band, sorted runs' starts and ends
    interleaved, every other segment kept (exact: integers)."""
    nr, w = values.shape
    start, end = rows * w + x0, rows * w + x1
    order = np.argsort(start, kind="stable")
    bounds = np.empty(2 * len(start), np.int64)
    bounds[0::2], bounds[1::2] = start[order], end[order]
    flat = np.append(values.ravel(), np.zeros(1, values.dtype))   # (an end may be the band's end)
    seg = np.add.reduceat(flat, bounds, dtype=np.uint32 if values.size * 255 < 2 ** 32 else np.uint64)[0::2]
    out = np.empty_like(seg)
    out[order] = seg
    return out


def sum_by_id(ids: np.ndarray, values: np.ndarray):
    """``(id, sum of values, pixel count)`` for each maximal run of one id > 0 in the flattened
    ``ids`` (``values``: uint8).  A region's pixels lie in runs along its rows, far fewer than its
    pixels: a few passes over the band find the runs, then one sum per run (exact: integers)."""
    f, v = ids.ravel(), values.ravel()
    starts = np.flatnonzero(f[1:] != f[:-1]) + 1
    starts = np.insert(starts, 0, 0)
    lengths = np.diff(np.append(starts, len(f)))
    sums = np.add.reduceat(v, starts, dtype=np.uint32 if v.size * 255 < 2 ** 32 else np.uint64)
    run_ids = f[starts]
    keep = run_ids > 0
    return run_ids[keep], sums[keep], lengths[keep]


def confidence_by_fid(p, out, layer, ds, conf_path: str, cancel) -> tuple:
    """Each polygon's confidence sums and pixel counts, ``(sums, counts)`` by fid
    (:func:`mean_confidence_by_fid`): a multilabel layer's polygons against their own label's
    confidence band."""
    with STAGES("mean confidence"):
        if not p.label_bands:
            return mean_confidence_by_fid(out, layer.GetName(), ds, conf_path, cancel)
        sums, counts = np.zeros(1), np.zeros(1, np.int64)
        for k, c in enumerate(p.info.label_classes()):
            s_, c_ = mean_confidence_by_fid(out, layer.GetName(), ds, conf_path, cancel, k + 2, c.id)
            m = max(len(sums), len(s_))
            sums = np.pad(sums, (0, m - len(sums))) + np.pad(s_, (0, m - len(s_)))
            counts = np.pad(counts, (0, m - len(counts))) + np.pad(c_, (0, m - len(c_)))
        return sums, counts
