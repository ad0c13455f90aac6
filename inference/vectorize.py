"""From the class raster to polygons: sieve, polygonise (GDAL), measure.

The class raster is sieved in place first (regions under the minimum area are merged
into their largest neighbour), then polygonised, so the raster and the polygon layer
show the same regions.  Areas are true areas: planar in a projected CRS, on an
equal-area projection centred on each polygon for a geographic CRS.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from typing import Dict, Optional

import numpy as np
from osgeo import gdal, ogr, osr

from . import raster as rasterlib
from .errors import Cancelled, OutputError
from .masks import MASK_MIN
from .styles import polygons_qml, write_gpkg_style
from .writing import STAGES

ogr.UseExceptions()

ROWS_PER_READ = 512


def sieve_threshold_px(p) -> int:
    """Pixels a region needs to reach ``p.min_area_ha`` everywhere on the raster."""
    if p.min_area_ha <= 0:
        return 0
    return int(math.ceil(p.min_area_ha * 10000.0 / rasterlib.min_pixel_area_m2(p.raster) - 1e-9))


SIEVE_BAND_ROWS = 2048


def sieve_array(arr: np.ndarray, thr: int, nodata=None) -> None:
    """GDAL's SieveFilter (4-connected) on a C-contiguous 2-D uint8 array, in place: GDAL works on
    the array's own memory.  Nodata (255) and masked pixels (cloud...: ``masks.MASK_MIN`` and above)
    are left alone and nothing merges into them."""
    from osgeo import gdal_array
    with STAGES("sieve"):
        mem = gdal_array.OpenArray(arr)
        # The mask only when some pixel needs it (all ones is the same as none, read for nothing).
        keep = gdal_array.OpenArray((arr < MASK_MIN).view(np.uint8)) if arr.max() >= MASK_MIN else None
        mb = mem.GetRasterBand(1)
        gdal.SieveFilter(mb, keep.GetRasterBand(1) if keep is not None else None, mb, thr, 4)
        mb = mem = keep = None


def sieve_in_bands(band, thr: int, cancel=lambda: False, rows: int = SIEVE_BAND_ROWS) -> None:
    """GDAL's SieveFilter, run on bands of ``rows`` rows with ``thr`` rows of margin above
    and below, writing back each band's middle.

    GDAL's sieve keeps a record per region of the whole raster, so on a noisy 10980 x 10980
    result it alone takes hundreds of MB; in bands its memory is bounded by the band.  The
    result is the same as one global sieve: a region under ``thr`` pixels spans fewer than
    ``thr`` rows, so one that touches a band's middle lies wholly inside band + margins and is
    judged on its true size; a region cut by a margin's edge that reaches the middle has at
    least ``thr`` pixels inside, so it is kept, as it would be globally.  (In a multi-class
    raster the neighbour a small region merges into is chosen among what the band sees.)
    """
    W, H = band.XSize, band.YSize
    nodata = band.GetNoDataValue()
    if H <= rows + 2 * thr:
        arr = np.ascontiguousarray(band.ReadAsArray())
        sieve_array(arr, thr, nodata)
        band.WriteArray(arr)
        band.FlushCache()
        return
    carry = None  # the original (unsieved) rows above the current band: its top margin
    for y0 in range(0, H, rows):
        if cancel():
            raise Cancelled("cancelled")
        y1 = min(H, y0 + rows)
        a0, a1 = max(0, y0 - thr), min(H, y1 + thr)
        below = band.ReadAsArray(0, y0, W, a1 - y0)      # not yet written: original values
        arr = below if carry is None else np.concatenate([carry, below])
        carry = below[max(0, (y1 - y0) - thr):y1 - y0].copy()
        arr = np.ascontiguousarray(arr)
        sieve_array(arr, thr, nodata)
        band.WriteArray(arr[y0 - a0:y1 - a0], 0, y0)
    band.FlushCache()


class StreamSieve:
    """The banded sieve of :func:`sieve_in_bands`, fed strip by strip while inference runs.

    ``push(rows, y)`` takes the classes of rows ``y..`` in order (and keeps the array: the
    caller must not change it after); as soon as a band of ``rows`` rows has its ``thr`` rows
    of margin below, it is sieved and handed to ``emit(classes, y)`` (sieved classes) -- the
    same result as sieving the finished raster, with no second pass over the file.  The
    strips are joined once per band, and GDAL sieves that array in place.
    """

    def __init__(self, emit, width: int, height: int, thr: int, nodata: int, rows: int = SIEVE_BAND_ROWS):
        self.emit, self.W, self.H, self.thr, self.nodata = emit, width, height, thr, nodata
        self.rows = rows
        self.chunks = []                            # original rows from self.s0 on
        self.n = 0                                  # how many
        self.s0 = 0                                 # first row not yet emitted
        self.carry = np.zeros((0, width), np.uint8)  # original rows just above self.s0

    def push(self, arr: np.ndarray, y: int) -> None:
        if y != self.s0 + self.n:
            raise ValueError("rows must be pushed in order")
        self.chunks.append(arr)
        self.n += len(arr)
        self._drain(final=False)

    def close(self) -> None:
        self._drain(final=True)

    def _drain(self, final: bool) -> None:
        while self.n:
            y1 = min(self.H, self.s0 + self.rows)
            need = min(self.H, y1 + self.thr) - self.s0
            if self.n < need and not final:
                return
            window = np.concatenate([self.carry] + self.chunks)
            top, n = len(self.carry), y1 - self.s0
            # What the next band needs, unsieved, before the sieve changes the array.
            self.carry = window[top + max(0, n - self.thr):top + n].copy()
            rest = window[top + n:].copy()
            self.chunks, self.n = ([rest] if len(rest) else []), len(rest)
            if self.thr > 1:
                sieve_array(window[:top + min(need, len(window) - top)], self.thr, self.nodata)
            self.emit(window[top:top + n], self.s0)
            self.s0 = y1


def foreground(arr: np.ndarray, bg_ids) -> np.ndarray:
    """1 where a pixel has a class that gets polygons (not nodata, not masked, not background)."""
    bg_ids = sorted(set(bg_ids))
    if bg_ids == [0] and arr.dtype == np.uint8:
        # 1..MASK_MIN - 1: one subtraction (0 wraps round to 255) and one comparison
        fg = np.subtract(arr, 1, dtype=np.uint8) < MASK_MIN - 1
    else:
        fg = arr < MASK_MIN
        for b in bg_ids:
            fg &= arr != b
    return fg.view(np.uint8)


def postprocess(p, classes_path: str, conf_path: str, gpkg_path: Optional[str], layer_name: Optional[str],
                run_time: str, cancel, mask_path: Optional[str] = None) -> Dict[int, Dict[str, object]]:
    """Sieve ``classes_path`` in place, write polygons to ``gpkg_path`` (if given; its layer named
    ``layer_name``), return
    per-class statistics ``{class_id: {name, count, area_ha}}``.  With ``mask_path`` the
    classes were already sieved while streaming (:class:`StreamSieve`) and ``mask_path`` is
    their foreground mask."""
    model = p.info
    if model.task == "multilabel":
        return _postprocess_labels(p, classes_path, conf_path, gpkg_path, layer_name, run_time, cancel)
    thr = sieve_threshold_px(p)
    ds = gdal.Open(classes_path, gdal.GA_Update)
    band = ds.GetRasterBand(1)
    if thr > 1 and mask_path is None:
        sieve_in_bands(band, thr, cancel)
    bg = model.background_ids()
    if gpkg_path is None:
        counts = np.zeros(256, np.int64)
        for y in range(0, ds.RasterYSize, ROWS_PER_READ):
            arr = band.ReadAsArray(0, y, ds.RasterXSize, min(ROWS_PER_READ, ds.RasterYSize - y))
            counts += np.bincount(arr.ravel(), minlength=256)
        px = rasterlib.pixel_size_m(p.raster)
        ds = None
        return {c.id: {"name": c.name, "count": None, "area_ha": float(counts[c.id]) * px[0] * px[1] / 1e4}
                for c in model.classes if c.id not in bg}
    tmpdir = tempfile.mkdtemp(prefix="tm-poly-")
    try:
        if mask_path is None:
            mask_path = os.path.join(tmpdir, "fg.tif")
            mask_ds = gdal.GetDriverByName("GTiff").Create(mask_path, ds.RasterXSize, ds.RasterYSize, 1,
                                                           gdal.GDT_Byte, options=["TILED=YES", "COMPRESS=DEFLATE"])
            mb = mask_ds.GetRasterBand(1)
            for y in range(0, ds.RasterYSize, ROWS_PER_READ):
                arr = band.ReadAsArray(0, y, ds.RasterXSize, min(ROWS_PER_READ, ds.RasterYSize - y))
                mb.WriteArray(foreground(arr, bg), 0, y)
            mb = mask_ds = None
        # Both closed (complete on disk: polygonize may read them from another thread) and reopened.
        band = ds = None
        ds = gdal.Open(classes_path)
        band = ds.GetRasterBand(1)
        mask_ds = gdal.Open(mask_path)
        mb = mask_ds.GetRasterBand(1)
        if cancel():
            raise Cancelled("cancelled")
        out, layer, srs = _polygon_layer(ds, gpkg_path, layer_name)
        with STAGES("polygonise"):
            polygonize(band, mb, out, layer, classes_path, mask_path, tmpdir)
        stats = _measure(p, layer, out, ds, conf_path, srs, run_time, cancel)
        _finish_layer(p, out, layer, layer_name, run_time)
        layer = out = mask_ds = ds = None
        return stats
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


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


POLYGON_FIELDS = [("class_id", ogr.OFTInteger), ("class_name", ogr.OFTString), ("area_m2", ogr.OFTReal),
                  ("area_ha", ogr.OFTReal), ("perimeter_m", ogr.OFTReal), ("mean_confidence", ogr.OFTReal),
                  ("source", ogr.OFTString), ("model", ogr.OFTString), ("run_time", ogr.OFTString)]


def _polygon_layer(ds, gpkg_path: str, layer_name: str):
    """A new GeoPackage with the (empty) polygon layer, in the class raster's CRS."""
    srs = osr.SpatialReference()
    srs.ImportFromWkt(ds.GetProjection())
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    try:
        out = ogr.GetDriverByName("GPKG").CreateDataSource(gpkg_path)
    except RuntimeError as e:
        raise OutputError("cannot create %s: %s" % (gpkg_path, e)) from None
    layer = out.CreateLayer(layer_name, srs, ogr.wkbPolygon, options=["GEOMETRY_NAME=geom", "FID=fid"])
    for fname, ftype in POLYGON_FIELDS:
        layer.CreateField(ogr.FieldDefn(fname, ftype))
    return out, layer, srs


def run_area_wkt(p) -> str:
    """The ground a run covered, in the raster's CRS: its area of interest, else its window."""
    if p.aoi:
        u = ogr.Geometry(ogr.wkbMultiPolygon)
        for w in p.aoi:
            g = ogr.CreateGeometryFromWkt(w)
            for part in (g if g.GetGeometryType() == ogr.wkbMultiPolygon else [g]):
                u.AddGeometry(part)
        return u.UnionCascaded().ExportToWkt()
    gt = p.raster.geotransform
    c0, r0, w, h = p.window
    x0, y0 = gt[0] + gt[1] * c0, gt[3] + gt[5] * r0
    x1, y1 = gt[0] + gt[1] * (c0 + w), gt[3] + gt[5] * (r0 + h)
    return "POLYGON((%r %r,%r %r,%r %r,%r %r,%r %r))" % (x0, y0, x1, y0, x1, y1, x0, y1, x0, y0)


def _finish_layer(p, out, layer, layer_name: str, run_time: str) -> None:
    """The layer's metadata (what made it, and the ground its run covered: ``TM_AREA``, so that
    corrections made in it can teach the model where there is nothing) and its style."""
    meta = {"TM_MODEL": p.info.name, "TM_MODEL_PATH": p.model.path, "TM_SOURCE": p.input, "TM_RUN_TIME": run_time,
            "TM_MIN_AREA_HA": str(p.min_area_ha), "TM_THRESHOLD": str(p.threshold), "TM_AREA": run_area_wkt(p),
            **{"CLASS_%d" % c.id: c.name for c in p.info.classes}}
    if p.options.date:
        meta["TM_DATE"] = p.options.date
    layer.SetMetadata(meta)
    write_gpkg_style(out, layer_name, polygons_qml(p.info.classes))


def _postprocess_labels(p, classes_path, conf_path, gpkg_path, layer_name, run_time, cancel):
    """A multilabel result (``execute.LABEL_LAYOUT``): each label band sieved on its own, band 1
    (the most probable label present) made again from them, polygons per label (they overlap
    where the labels do), each measured against its own confidence band."""
    labels = p.info.label_classes()
    thr = sieve_threshold_px(p)
    ds = gdal.Open(classes_path, gdal.GA_Update)
    if thr > 1:
        for k in range(len(labels)):
            sieve_in_bands(ds.GetRasterBand(k + 2), thr, cancel)
        _top_labels(ds, conf_path, [c.id for c in labels], cancel)
    if gpkg_path is None:
        px = rasterlib.pixel_size_m(p.raster)
        stats = {}
        for k, c in enumerate(labels):
            band, n = ds.GetRasterBand(k + 2), 0
            for y in range(0, ds.RasterYSize, ROWS_PER_READ):
                n += int((band.ReadAsArray(0, y, ds.RasterXSize, min(ROWS_PER_READ, ds.RasterYSize - y)) == 1).sum())
            stats[c.id] = {"name": c.name, "count": None, "area_ha": n * px[0] * px[1] / 1e4}
        ds = None
        return stats
    tmpdir = tempfile.mkdtemp(prefix="tm-poly-")
    try:
        out, layer, srs = _polygon_layer(ds, gpkg_path, layer_name)
        table = layer_name.replace('"', '""')
        conf_bands, last = {}, 0
        for k, c in enumerate(labels):
            if cancel():
                raise Cancelled("cancelled")
            band = ds.GetRasterBand(k + 2)
            mpath = os.path.join(tmpdir, "fg%d.tif" % k)
            mds = gdal.GetDriverByName("GTiff").Create(mpath, ds.RasterXSize, ds.RasterYSize, 1, gdal.GDT_Byte,
                                                       options=["TILED=YES"])
            mb = mds.GetRasterBand(1)
            for y in range(0, ds.RasterYSize, ROWS_PER_READ):
                arr = band.ReadAsArray(0, y, ds.RasterXSize, min(ROWS_PER_READ, ds.RasterYSize - y))
                mb.WriteArray(foreground(arr, {0}), 0, y)
            out.StartTransaction()
            gdal.Polygonize(band, mb, layer, 0, [])
            out.CommitTransaction()
            out.ExecuteSQL('UPDATE "%s" SET class_id = %d WHERE fid > %d' % (table, c.id, last))
            sql = out.ExecuteSQL('SELECT MAX(fid) FROM "%s"' % table)
            f = sql.GetNextFeature()
            last = int(f.GetField(0) or last) if f is not None else last
            out.ReleaseResultSet(sql)
            conf_bands[c.id] = k + 2
            mb = mds = None
        stats = _measure(p, layer, out, ds, conf_path, srs, run_time, cancel, conf_bands)
        _finish_layer(p, out, layer, layer_name, run_time)
        layer = out = ds = None
        return stats
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _top_labels(ds, conf_path: str, ids, cancel) -> None:
    """Band 1 of a multilabel class raster from its (sieved) label bands: the present label with
    the highest probability; masked and nodata pixels as they were."""
    conf = gdal.Open(conf_path)
    ids = np.asarray(ids, np.uint8)
    b1 = ds.GetRasterBand(1)
    W, H, K = ds.RasterXSize, ds.RasterYSize, len(ids)
    for y in range(0, H, ROWS_PER_READ):
        if cancel():
            raise Cancelled("cancelled")
        n = min(ROWS_PER_READ, H - y)
        present = np.stack([ds.GetRasterBand(k + 2).ReadAsArray(0, y, W, n) == 1 for k in range(K)])
        prob = np.stack([conf.GetRasterBand(k + 2).ReadAsArray(0, y, W, n) for k in range(K)]).astype(np.int16)
        top = np.where(present, prob, -1).argmax(axis=0)
        old = b1.ReadAsArray(0, y, W, n)
        new = np.where(present.any(axis=0), ids[top], 0).astype(np.uint8)
        b1.WriteArray(np.where(old >= MASK_MIN, old, new), 0, y)
    b1.FlushCache()
    conf = None


def _laea_for(geom, src_srs):
    c = geom.Centroid()
    lon, lat = c.GetX(), c.GetY()
    laea = osr.SpatialReference()
    laea.SetWellKnownGeogCS("WGS84")
    laea.SetLAEA(lat, lon, 0.0, 0.0)
    laea.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return osr.CoordinateTransformation(src_srs, laea)


def area_perimeter_m(geom, srs) -> tuple:
    """True area (m2) and perimeter (m) of ``geom`` in ``srs``."""
    if srs.IsGeographic():
        g = geom.Clone()
        g.Transform(_laea_for(geom, srs))
        return g.GetArea(), g.Boundary().Length()
    unit = srs.GetLinearUnits() or 1.0
    return geom.GetArea() * unit * unit, geom.Boundary().Length() * unit


def _simplify(geom, tol_m, srs):
    if tol_m <= 0:
        return geom
    tol = tol_m
    if srs.IsGeographic():
        lat = geom.Centroid().GetY()
        mx, my = rasterlib.metres_per_degree(lat)
        tol = tol_m / max(mx, my)
    else:
        tol = tol_m / (srs.GetLinearUnits() or 1.0)
    g = geom.SimplifyPreserveTopology(tol)
    if g is None or g.IsEmpty():
        return geom
    if not g.IsValid():
        try:
            g = g.MakeValid()
        except RuntimeError:  # GEOS could not repair it: keep the unsimplified polygon
            return geom
        if g is None or g.IsEmpty() or not g.IsValid():
            return geom
        if g.GetGeometryType() not in (ogr.wkbPolygon, ogr.wkbMultiPolygon):
            return geom
        if g.GetGeometryType() == ogr.wkbMultiPolygon:
            return geom
    return g


def mean_confidence_by_fid(out, layer_name, like_ds, conf_path, cancel, band: int = 1,
                           where: Optional[str] = None) -> tuple:
    """Mean confidence of every polygon, in one pass over the confidence raster, band by band of
    ``ROWS_PER_READ`` rows (the polygons that reach a band: the layer's spatial index finds them).
    Returns ``(sums, counts)`` arrays indexed by fid.  Memory: one band of rows (per thread).

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
    grid = (like_ds.RasterXSize, like_ds.RasterYSize, like_ds.GetGeoTransform(), like_ds.GetProjection())
    bands = list(range(0, grid[1], ROWS_PER_READ))
    path = out.GetDescription()
    two = (os.cpu_count() or 1) > 1 and len(bands) >= 8 and os.path.isfile(path)
    if not two:
        return _sums_by_fid(out, layer_name, grid, conf_path, cancel, band, where, bands)
    out.GetLayerByName(layer_name).SyncToDisk()   # (its spatial index, built for the other connection)
    stop = threading.Event()
    half = len(bands) // 2

    def lower():
        other = ogr.Open(path)
        try:
            return _sums_by_fid(other, layer_name, grid, conf_path, stop.is_set, band, where, bands[half:])
        finally:
            other = None

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tm-conf") as pool:
        job = pool.submit(lower)
        try:
            s1, c1 = _sums_by_fid(out, layer_name, grid, conf_path, cancel, band, where, bands[:half])
        except BaseException:
            stop.set()
            raise
        s2, c2 = job.result()
    m = max(len(s1), len(s2))
    return (np.pad(s1, (0, m - len(s1))) + np.pad(s2, (0, m - len(s2))),
            np.pad(c1, (0, m - len(c1))) + np.pad(c2, (0, m - len(c2))))


def _sums_by_fid(out, layer_name, grid, conf_path, cancel, band, where, bands) -> tuple:
    """:func:`mean_confidence_by_fid`'s sums and counts over the bands of rows starting at ``bands``
    (``grid``: width, height, geotransform and WKT of the class raster)."""
    rows = ROWS_PER_READ
    w, h, gt, wkt = grid
    conf_ds = gdal.Open(conf_path)
    cb = conf_ds.GetRasterBand(band)
    mem_drv = gdal.GetDriverByName("MEM")
    table = layer_name.replace('"', '""')
    sums = np.zeros(1, np.float64)
    counts = np.zeros(1, np.int64)
    mem = fb = None
    by_spans = gt[2] == 0 and gt[4] == 0
    for y in bands:
        if cancel():
            raise Cancelled("cancelled")
        n = min(rows, h - y)
        top = gt[3] + y * gt[5]
        xs = (gt[0], gt[0] + w * gt[1])
        ys = (top, top + n * gt[5])
        box = ogr.CreateGeometryFromWkt("POLYGON((%r %r,%r %r,%r %r,%r %r,%r %r))" % (
            xs[0], ys[0], xs[1], ys[0], xs[1], ys[1], xs[0], ys[1], xs[0], ys[0]))
        sql = out.ExecuteSQL('SELECT fid + 0 AS rid, geom FROM "%s"%s' % (table, " WHERE " + where if where else ""),
                             spatialFilter=box)
        try:
            spans = _spans(sql, gt, y, n, w) if by_spans else None
            if spans is None:
                by_spans = False   # (the other bands burnt too: no second look at what failed here)
                if mem is None or mem.RasterYSize != n:
                    mem = mem_drv.Create("", w, n, 1, gdal.GDT_Int32)
                    mem.SetProjection(wkt)
                mem.SetGeoTransform((gt[0], gt[1], gt[2], top, gt[4], gt[5]))
                fb = mem.GetRasterBand(1)
                fb.Fill(0)  # GeoPackage fids start at 1
                sql.ResetReading()
                gdal.RasterizeLayer(mem, [1], sql, options=["ATTRIBUTE=rid"])
        finally:
            out.ReleaseResultSet(sql)
        if spans is not None:
            fids, rows_, x0, x1 = spans
            if not len(fids):
                continue
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
                continue
            c = cb.ReadAsArray(0, y, w, n)
            np.putmask(f, c == 255, 0)   # (no confidence: not counted)
            fids, s, k = sum_by_id(f, c)
        if m > len(sums):
            sums = np.concatenate([sums, np.zeros(m - len(sums))])
            counts = np.concatenate([counts, np.zeros(m - len(counts), np.int64)])
        sums[:m] += np.bincount(fids, weights=s, minlength=m)
        counts[:m] += np.bincount(fids, weights=k, minlength=m).astype(np.int64)
    fb = cb = mem = conf_ds = None
    return sums, counts


def _spans(layer, gt, y0: int, n: int, w: int):
    """``(fid, row, x0, x1)`` arrays: the runs of pixels ``x0..x1 - 1`` of each polygon of
    ``layer`` (field 0: its fid) in rows ``y0..y0 + n - 1``; None when a geometry is not a polygon
    whose edges follow the pixel grid (the caller burns those instead)."""
    pts, sizes, fid_of = [], [], []
    for f in layer:
        g = f.GetGeometryRef()
        if g is None or g.IsEmpty():
            continue
        if g.GetGeometryType() != ogr.wkbPolygon:
            return None
        wkb = g.ExportToWkb(ogr.wkbNDR)
        fid = f.GetField(0)
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
    px = (xy[:, 0] - gt[0]) / gt[1]
    py = (xy[:, 1] - gt[3]) / gt[5]
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


def _measure(p, layer, out, cls_ds, conf_path, srs, run_time, cancel, conf_bands=None):
    """Each polygon's name, area, perimeter, mean confidence (``conf_bands``: per class id, the
    confidence band of a multilabel result; else band 1 for all) and provenance; per-class stats."""
    names = p.info.class_names()
    with STAGES("mean confidence"):
        if conf_bands is None:
            sums, counts = mean_confidence_by_fid(out, layer.GetName(), cls_ds, conf_path, cancel)
        else:
            sums, counts = np.zeros(1), np.zeros(1, np.int64)
            for cid, b in conf_bands.items():
                s_, c_ = mean_confidence_by_fid(out, layer.GetName(), cls_ds, conf_path, cancel, b,
                                                "class_id = %d" % cid)
                m = max(len(sums), len(s_))
                sums = np.pad(sums, (0, m - len(sums))) + np.pad(s_, (0, m - len(s_)))
                counts = np.pad(counts, (0, m - len(counts))) + np.pad(c_, (0, m - len(c_)))
    stats: Dict[int, Dict[str, object]] = {c.id: {"name": c.name, "count": 0, "area_ha": 0.0}
                                           for c in p.info.classes if not c.is_background}
    source = os.path.abspath(p.input)
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
                geom = _simplify(geom.Clone(), p.simplify_m, srs)
                feat.SetGeometry(geom)
            area, perim = area_perimeter_m(geom, srs)
            cid = feat.GetFieldAsInteger(i_cid)
            feat.SetFieldString(i_name, names.get(cid, str(cid)))
            feat.SetField(i_m2, round(area, 2))
            feat.SetField(i_ha, round(area / 1e4, 2))
            feat.SetField(i_perim, round(perim, 2))
            if fid < len(counts) and counts[fid]:
                feat.SetField(i_conf, round(float(sums[fid] / counts[fid]), 1))   # percent, like the raster
            feat.SetFieldString(i_src, source)
            feat.SetFieldString(i_model, p.info.name)
            feat.SetFieldString(i_time, run_time)
            layer.SetFeature(feat)
            s = stats.setdefault(cid, {"name": names.get(cid, str(cid)), "count": 0, "area_ha": 0.0})
            s["count"] += 1
            s["area_ha"] += area / 1e4
        out.CommitTransaction()
    return stats


def write_tiles_layer(gpkg_path: str, layer_name: str, wkts, wkt_srs: str, log) -> None:
    """The run's tiles, each with its out-of-distribution score, its share of pixels outside the
    training brightness range and whether it is unreliable, as a layer beside the polygons."""
    from .styles import tiles_qml, write_gpkg_style
    ds = ogr.Open(gpkg_path, 1)
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt_srs)
    layer = ds.CreateLayer(layer_name, srs, ogr.wkbPolygon, options=["GEOMETRY_NAME=geom", "FID=fid"])
    for name, kind in (("ood_score", ogr.OFTReal), ("out_of_range_pct", ogr.OFTReal), ("unreliable", ogr.OFTInteger)):
        layer.CreateField(ogr.FieldDefn(name, kind))
    ds.StartTransaction()
    for wkt, score, out, bad in zip(wkts, log.scores, log.out, log.unreliable()):
        f = ogr.Feature(layer.GetLayerDefn())
        f.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        f.SetField("ood_score", round(score, 3))
        f.SetField("out_of_range_pct", round(100.0 * out, 1))
        f.SetField("unreliable", int(bad))
        layer.CreateFeature(f)
    ds.CommitTransaction()
    layer = None
    write_gpkg_style(ds, layer_name, tiles_qml(log.stats.threshold))
    ds = None
