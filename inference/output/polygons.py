"""GDAL's Polygonize of a class raster in bands of rows, on worker threads, as the rows arrive.

Polygonize is single-threaded and needs the whole raster.  Here each band of rows is polygonised
on its own, in pixel coordinates, into a scratch GeoPackage, on a pool of worker threads (GDAL
releases the GIL), while the caller computes or reads the next rows: during inference, the
bands the streamed sieve finishes.  At the end the pieces of the regions that the seams between
bands cut are joined again, and every vertex gets the coordinates one Polygonize of the whole
raster gives it (``gt[0] + x * gt[1] + y * gt[2]``, ...): the same regions, the same vertices.
"""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

import numpy as np
from osgeo import gdal, gdal_array, ogr, osr

from ..errors import Cancelled, OutputError
from ..input.masks import MASK_MIN
from .writing import STAGES

PIECE_ROWS = 1024   # rows polygonised at once (TM_POLYGONIZE_PIECE_ROWS); the last band is split too
MIN_SPLIT_ROWS = 64  # ... in two when each half has as many rows


class BandPolygonizer:
    """``push(values, fg, y)`` the class raster's rows in order (``fg``: 1 where a pixel gets a
    polygon; both arrays are kept until polygonised: do not change them), then
    ``finish(out, layer, cancel)`` writes the polygons into ``layer`` (field 0: the value) of the
    data source ``out``, with the coordinates of the geotransform ``gt``.  Memory: the rows of
    the pieces queued or running (at most ``workers + 1``), and the rings of the regions that
    touch a seam; the other polygons wait in scratch GeoPackages in ``tmpdir``."""

    def __init__(self, width: int, height: int, gt, tmpdir: str, workers: Optional[int] = None,
                 piece_rows: Optional[int] = None):
        self.W, self.H, self.gt, self.tmpdir = width, height, tuple(gt), tmpdir
        self.rows = max(1, int(os.environ.get("TM_POLYGONIZE_PIECE_ROWS", piece_rows or PIECE_ROWS)))
        n = workers or min(4, os.cpu_count() or 1)   # (each holds a piece of rows: memory)
        self.workers = n
        self.pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="tm-poly")
        self.slots = threading.BoundedSemaphore(n + 1)
        self.pieces: List[tuple] = []     # (first row, rows, future of the piece's Piece)
        self.pending: List[tuple] = []    # rows pushed and not yet in a piece
        self.n_pending = 0
        self.next_y = 0

    def push(self, values: np.ndarray, fg: np.ndarray, y: int) -> None:
        if y != self.next_y:
            raise ValueError("rows must be pushed in order")
        self.next_y = y + len(values)
        self.pending.append((values, fg))
        self.n_pending += len(values)
        self._submit(final=self.next_y >= self.H)

    def _submit(self, final: bool) -> None:
        halved = False
        while self.n_pending >= self.rows or (final and self.n_pending):
            if len(self.pending) == 1:
                v, m = self.pending[0]
            else:
                v, m = (np.concatenate([p[i] for p in self.pending]) for i in (0, 1))
            take = len(v) if final and len(v) < 2 * self.rows else self.rows
            # the band that ends the raster (what the run waits for): two halves, so that two
            # workers finish it, unless too few rows to be worth a seam
            if final and not halved and 2 * MIN_SPLIT_ROWS <= len(v) < 2 * self.rows and self.workers > 1:
                take, halved = (len(v) + 1) // 2, True
            rest = (v[take:], m[take:])
            self.pending = [rest] if len(rest[0]) else []
            self.n_pending = len(rest[0])
            y0 = self.next_y - self.n_pending - take
            self.slots.acquire()
            job = self.pool.submit(self._piece, np.ascontiguousarray(v[:take]), np.ascontiguousarray(m[:take]),
                                   len(self.pieces), y0)
            job.add_done_callback(lambda _: self.slots.release())
            self.pieces.append((y0, take, job))

    def _piece(self, values: np.ndarray, fg: np.ndarray, k: int, y0: int) -> "_Piece":
        """Polygonise rows ``y0..`` (pixel coordinates, in memory), then sort the polygons: those
        on the piece's seams are kept (rings, in raster pixel coordinates), the others written
        with their coordinates to a scratch GeoPackage."""
        with STAGES("polygonise"):
            h = len(values)
            vds, mds = gdal_array.OpenArray(values), gdal_array.OpenArray(fg.view(np.uint8))
            # (an array's dataset has the geotransform 0, 1, 0, 0, 0, 1: pixel coordinates)
            mem = ogr.GetDriverByName("Memory").CreateDataSource("")
            lyr = mem.CreateLayer("piece", None, ogr.wkbPolygon)
            lyr.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
            gdal.Polygonize(vds.GetRasterBand(1), mds.GetRasterBand(1), lyr, 0, [])
            vds = mds = None
            piece = _Piece(os.path.join(self.tmpdir, "piece%d.gpkg" % k), y0, h,
                           self.W if y0 > 0 else 0, self.W if y0 + h < self.H else 0)
            scratch = ogr.GetDriverByName("GPKG").CreateDataSource(piece.path)
            out = scratch.CreateLayer("piece", None, ogr.wkbPolygon, options=["FID=fid", "SPATIAL_INDEX=NO"])
            out.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
            defn = out.GetLayerDefn()
            scratch.StartTransaction()
            for f in lyr:
                rings = _pixel_rings(f.GetGeometryRef())
                if rings is None:
                    raise OutputError("Polygonize returned a polygon off the pixel grid")
                for r in rings:
                    r[:, 1] += y0
                value, fid = f.GetField(0), f.GetFID()
                if piece.hole_sign is None and len(rings) > 1:
                    piece.hole_sign = _shoelace(rings[1]) > 0
                on = False
                if piece.top is not None and rings[0][:, 1].min() == y0:
                    on |= _seam_columns(rings, y0, fid, piece.top)
                if piece.bottom is not None and rings[0][:, 1].max() == y0 + h:
                    on |= _seam_columns(rings, y0 + h, fid, piece.bottom)
                if on:
                    piece.held[fid] = (value, rings)
                else:
                    g = ogr.Feature(defn)
                    g.SetField(0, value)
                    g.SetGeometryDirectly(ogr.CreateGeometryFromWkb(_polygon_wkb(rings, self.gt)))
                    out.CreateFeature(g)
            scratch.CommitTransaction()
            out = scratch = lyr = mem = None
            return piece

    def close(self) -> None:
        """Stop the workers (after :meth:`finish`, or to give up)."""
        for _, _, job in self.pieces:
            job.cancel()
        self.pool.shutdown(wait=True)

    def finish(self, out, layer, cancel=lambda: False, value: Optional[int] = None) -> None:
        if self.next_y != self.H:
            raise ValueError("rows %d.. were never pushed" % self.next_y)
        try:
            with STAGES("waiting for the polygons"):
                pieces = [job.result() for _, _, job in self.pieces]
        finally:
            self.close()
        with STAGES("joining the seams"):
            out.StartTransaction()
            _join(pieces, layer, self.gt, cancel, value)
            out.CommitTransaction()


class _Piece:
    """A polygonised piece: its scratch file (the polygons clear of its seams), the polygons on
    its seams (fid -> (value, rings)), and which of them lies along each seam column."""

    def __init__(self, path: str, y0: int, h: int, top_w: int, bottom_w: int):
        self.path, self.y0, self.h = path, y0, h
        self.held: Dict[int, tuple] = {}
        self.top = np.full(top_w, -1, np.int64) if top_w else None           # None: the raster's edge
        self.bottom = np.full(bottom_w, -1, np.int64) if bottom_w else None
        self.hole_sign: Optional[bool] = None


def _join(pieces, layer, gt, cancel, fixed: Optional[int] = None) -> None:
    """Write the pieces' polygons into ``layer``; those that share a stretch of a seam and a
    value are one region, written once (:func:`_merge`).  Field 0 gets the polygon's pixel value,
    or ``fixed`` for all of them."""
    defn = layer.GetLayerDefn()
    held: Dict[tuple, tuple] = {}        # (piece, fid) -> (value, rings, top seam row, bottom seam row)
    parent: Dict[tuple, tuple] = {}
    hole_sign = next((p.hole_sign for p in pieces if p.hole_sign is not None), None)

    def write(value, rings):
        f = ogr.Feature(defn)
        f.SetField(0, value if fixed is None else fixed)
        f.SetGeometryDirectly(ogr.CreateGeometryFromWkb(_polygon_wkb(rings, gt)))
        layer.CreateFeature(f)

    def root(k):
        while parent.setdefault(k, k) != k:
            k = parent[k]
        return k

    for k, piece in enumerate(pieces):
        if cancel():
            raise Cancelled("cancelled")
        scratch = ogr.Open(piece.path)
        for f in scratch.GetLayer(0):
            g = ogr.Feature(defn)
            g.SetField(0, f.GetField(0) if fixed is None else fixed)
            g.SetGeometry(f.GetGeometryRef())
            layer.CreateFeature(g)
        scratch = None
        top = piece.y0 if piece.top is not None else None
        bottom = piece.y0 + piece.h if piece.bottom is not None else None
        for fid, (value, rings) in piece.held.items():
            held[(k, fid)] = (value, rings, top, bottom)
        if k > 0:
            # pieces that share a stretch of the seam and a value are one region
            above, below = pieces[k - 1].bottom, piece.top
            both = np.flatnonzero((above >= 0) & (below >= 0))
            for a, b in set(zip(above[both].tolist(), below[both].tolist())):
                if held[(k - 1, a)][0] == held[(k, b)][0]:
                    parent[root((k - 1, a))] = root((k, b))
    groups: Dict[tuple, list] = {}
    for key in held:
        groups.setdefault(root(key), []).append(key)
    for members in groups.values():
        value = held[members[0]][0]
        if len(members) == 1:
            write(value, held[members[0]][1])
            continue
        parts = [held[m][1:] for m in members]
        write(value, _orient(_merge(parts) or _union([q[0] for q in parts]), parts, hole_sign))


def _merge(parts) -> Optional[List[np.ndarray]]:
    """The rings of one region from its pieces ``(rings, top, bottom)`` (pixel coordinates; the
    seam rows above and below the piece, None at the raster's edge): the pieces' edges on the
    seams cancel where the pieces on both sides have them, what is left is chained into rings
    again, and a ring that passes a vertex twice (a region touching itself at a corner) is split
    there.  Shell first (positive), then holes (negative); vertices mid-edge are kept.  None
    when the result is not one shell and its holes (the caller joins the pieces with GEOS)."""
    chains, rings = [], []
    seams: Dict[tuple, list] = {}     # (row, 0 above | 1 below) -> [(x0, x1) in the edge's direction]
    for prings, top, bottom in parts:
        for i, r in enumerate(prings):
            q = (r if (_shoelace(r) > 0) == (i == 0) else r[::-1])[:-1]   # shells +, holes -
            m = len(q)
            nxt = np.roll(q, -1, axis=0)
            on = (q[:, 1] == nxt[:, 1]) & (((q[:, 1] == top) if top is not None else False) |
                                           ((q[:, 1] == bottom) if bottom is not None else False))
            cut = np.flatnonzero(on)
            if not len(cut):
                rings.append(np.vstack([q, q[:1]]))
                continue
            for e in cut:
                y = q[e, 1]
                seams.setdefault((y, 0 if y == bottom else 1), []).append((q[e, 0], nxt[e, 0]))
            for a, b in zip(cut, np.roll(cut, -1)):   # the chain after cut edge a, to cut edge b
                idx = np.arange(a + 1, b + 1 if b > a else b + 1 + m) % m
                if len(idx) < 2:
                    return None
                chains.append(q[idx])
    for (y, side), edges in seams.items():
        if side == 1 and (y, 0) in seams:
            continue       # done with its other side
        sides = [edges, seams.get((y, 1 - side), [])]
        ends = np.unique(np.array([x for e in sides[0] + sides[1] for x in e], np.float64))
        mids = (ends[:-1] + ends[1:]) / 2
        for k, es in enumerate(sides):
            if not es:
                continue
            cover = np.zeros(len(mids), bool)
            for x0, x1 in es:
                cover |= (mids > min(x0, x1)) & (mids < max(x0, x1))
            other = np.zeros(len(mids), bool)
            for x0, x1 in sides[1 - k]:
                other |= (mids > min(x0, x1)) & (mids < max(x0, x1))
            forward = es[0][1] > es[0][0]
            for j in np.flatnonzero(cover & ~other):
                seg = np.array([[ends[j], y], [ends[j + 1], y]])
                chains.append(seg if forward else seg[::-1])
    starts: Dict[tuple, list] = {}
    for c, ch in enumerate(chains):
        starts.setdefault(tuple(ch[0]), []).append(c)
    used = np.zeros(len(chains), bool)
    for c0 in range(len(chains)):
        if used[c0]:
            continue
        walk, c, first = [], c0, tuple(chains[c0][0])
        while True:
            used[c] = True
            walk.append(chains[c][:-1])
            end = tuple(chains[c][-1])
            if end == first:
                break
            nxt_c = [d for d in starts.get(end, ()) if not used[d]]
            if not nxt_c:
                return None
            c = nxt_c[0]
        rings.extend(_simple(np.vstack(walk)))
    shells = [r for r in rings if _shoelace(r) > 0]
    if len(shells) != 1:
        return None
    return shells + [r for r in rings if _shoelace(r) < 0]


def _simple(q: np.ndarray) -> List[np.ndarray]:
    """Closed rings from the vertex loop ``q`` (not closed), split where it passes a vertex twice."""
    out, todo = [], [q]
    while todo:
        q = todo.pop()
        key = q[:, 0] * 1e9 + q[:, 1]
        _, first, counts = np.unique(key, return_index=True, return_counts=True)
        if counts.max() < 2:
            out.append(np.vstack([q, q[:1]]))
            continue
        i = first[np.flatnonzero(counts > 1)[0]]
        j = i + 1 + int(np.flatnonzero(key[i + 1:] == key[i])[0])
        todo += [q[i:j], np.vstack([q[j:], q[:i]])]
    return out


def _orient(rings, parts, hole_sign: Optional[bool]) -> list:
    """A joined region's ``rings`` (shell, then holes) as Polygonize writes them: no vertex
    mid-edge; the shell turning as the first piece's (GDAL 3.6 turns shells either way), the holes
    as the pieces' holes, else as ``hole_sign`` (the raster's other holes), else as GDAL 3.6
    turns them (negative in pixel coordinates)."""
    signs = [(i > 0, _shoelace(r) > 0) for prings, _, _ in parts for i, r in enumerate(prings)]
    shell = next(pos for hole, pos in signs if not hole)
    hole = next((pos for h, pos in signs if h), False if hole_sign is None else hole_sign)
    return [_grid_ring(r, hole if i else shell) for i, r in enumerate(rings)]


def _union(parts) -> list:
    """The rings of the union of polygons (lists of rings, pixel coordinates), by GEOS: where
    :func:`_merge` cannot chain a region's edges."""
    pieces = ogr.Geometry(ogr.wkbMultiPolygon)
    for rings in parts:
        pieces.AddGeometry(ogr.CreateGeometryFromWkb(_polygon_wkb(rings, (0.0, 1.0, 0.0, 0.0, 0.0, 1.0))))
    union = pieces.UnionCascaded()
    rings = _pixel_rings(union) if union is not None else None
    if rings is None:
        raise OutputError("joining the pieces of a region gave %s" % (union.GetGeometryName() if union else None))
    return rings


def _pixel_rings(g) -> Optional[List[np.ndarray]]:
    """The rings of polygon ``g`` (pixel coordinates) as writable (n, 2) float64 arrays; None
    when ``g`` is not a polygon with its vertices on pixel corners."""
    if g is None or g.GetGeometryType() != ogr.wkbPolygon:
        return None
    wkb = g.ExportToWkb(ogr.wkbNDR)
    rings, off = [], 9
    for _ in range(int.from_bytes(wkb[5:9], "little")):
        k = int.from_bytes(wkb[off:off + 4], "little")
        r = np.frombuffer(wkb, "<f8", count=2 * k, offset=off + 4).reshape(k, 2)
        off += 4 + 16 * k
        q = np.rint(r)
        if np.abs(r - q).max() > 1e-6:
            return None
        rings.append(q)
    return rings


def _polygon_wkb(rings, gt) -> bytes:
    """WKB of a polygon from pixel rings, coordinates as GDAL's Polygonize computes them from
    pixel corners."""
    parts = [b"\x01", struct.pack("<II", ogr.wkbPolygon, len(rings))]
    for r in rings:
        x, y = r[:, 0], r[:, 1]
        xy = np.empty((len(r), 2), "<f8")
        xy[:, 0] = gt[0] + x * gt[1] + y * gt[2]
        xy[:, 1] = gt[3] + x * gt[4] + y * gt[5]
        parts += [struct.pack("<I", len(r)), xy.tobytes()]
    return b"".join(parts)


def _seam_columns(rings, y: float, fid: int, ids: np.ndarray) -> bool:
    """Mark ``ids[x] = fid`` for the columns of the edges of ``rings`` on row line ``y``;
    whether there were any."""
    found = False
    for r in rings:
        on = (r[:-1, 1] == y) & (r[1:, 1] == y)
        for x0, x1 in zip(r[:-1, 0][on], r[1:, 0][on]):
            a, b = int(min(x0, x1)), int(max(x0, x1))
            ids[a:b] = fid
            found = True
    return found


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


def polygonize_band(band, mask_of, out, layer, tmpdir: str, cancel=lambda: False, rows: int = 2048,
                    value: Optional[int] = None) -> None:
    """Polygonise a raster ``band`` (read in bands of ``rows`` rows; ``mask_of(values)``: the
    pixels that get polygons) into ``layer`` of ``out``, on the worker threads; field 0 of each
    polygon is its pixel value, or ``value`` when given."""
    W, H = band.XSize, band.YSize
    pz = BandPolygonizer(W, H, band.GetDataset().GetGeoTransform(), tmpdir)
    try:
        for y in range(0, H, rows):
            if cancel():
                raise Cancelled("cancelled")
            values = band.ReadAsArray(0, y, W, min(rows, H - y))
            pz.push(values, mask_of(values), y)
        pz.finish(out, layer, cancel, value)
    finally:
        pz.close()


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


POLYGON_FIELDS = [("class_id", ogr.OFTInteger), ("class_name", ogr.OFTString), ("area_m2", ogr.OFTReal),
                  ("area_ha", ogr.OFTReal), ("perimeter_m", ogr.OFTReal), ("mean_confidence", ogr.OFTReal),
                  ("source", ogr.OFTString), ("model", ogr.OFTString), ("run_time", ogr.OFTString)]


def polygon_layer(ds, gpkg_path: str, layer_name: str):
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


def polygonise_result(p, ds, out, layer, polygonizer: Optional["BandPolygonizer"], workdir: Optional[str],
                      cancel) -> None:
    """The regions of plan ``p``'s (sieved) class raster ``ds`` as polygons in ``layer``: band 1's
    (its bands polygonised as they came when ``polygonizer`` was fed while streaming), or a
    multilabel raster's label bands one by one, each polygon with its label's class id (they
    overlap where the labels do).  ``workdir``: the run's scratch folder (else TMPDIR)."""
    if polygonizer is not None:
        polygonizer.finish(out, layer, cancel)
        return
    tmpdir = tempfile.mkdtemp(prefix="tm-poly-", dir=workdir)
    try:
        if p.label_bands:
            for k, c in enumerate(p.info.label_classes()):
                if cancel():
                    raise Cancelled("cancelled")
                polygonize_band(ds.GetRasterBand(k + 2), lambda v: foreground(v, {0}), out, layer,
                                tempfile.mkdtemp(prefix="label%d-" % k, dir=tmpdir), cancel, value=c.id)
        else:
            bg = p.info.background_ids()
            polygonize_band(ds.GetRasterBand(1), lambda v: foreground(v, bg), out, layer, tmpdir, cancel)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
