"""From the class raster to polygons: sieve, polygonise (GDAL), measure.

The class raster is sieved in place first (regions under the minimum area are merged
into their largest neighbour), then polygonised, so the raster and the polygon layer
show the same regions.  Areas are true areas: planar in a projected CRS, on an
equal-area projection centred on each polygon for a geographic CRS.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Dict, Optional

import numpy as np
from osgeo import gdal, ogr, osr

from . import provenance, raster as rasterlib
from .areas import EqualArea, PixelAreas, equal_area_at, hectares
from .errors import Cancelled, OutputError
from .grid import Grid
from .masks import MASK_MIN
from .styles import polygons_qml, polygons_review_qml, write_gpkg_style
from .polygonize import BandPolygonizer, polygonize_band
from .region_stats import ROWS_PER_READ, mean_confidence_by_fid
from .writing import STAGES

ogr.UseExceptions()



def two_classes(info) -> bool:
    """Whether a model's class raster holds two classes (besides nodata and masks)."""
    return info.task == "binary" or (info.task != "multilabel" and len(info.classes) <= 2)


SIEVE_BAND_ROWS = 2048
# The streamed sieve's band in pixels: 2048 rows of a Sentinel-2 tile (10980 px).  A wider raster
# gets fewer rows (at least 256), so that its memory does not grow with the width.
SIEVE_BAND_PIXELS = SIEVE_BAND_ROWS * 10980


def sieve_band_rows(width: int) -> int:
    """Rows of the streamed sieve's bands for a raster ``width`` px wide."""
    return max(256, min(SIEVE_BAND_ROWS, SIEVE_BAND_PIXELS // max(1, width)))


def sieve_array(arr: np.ndarray, thr: int, nodata=None, two_classes: bool = False) -> None:
    """GDAL's SieveFilter (4-connected) on a C-contiguous 2-D uint8 array, in place: GDAL works on
    the array's own memory.  Nodata (255) and masked pixels (cloud...: ``masks.MASK_MIN`` and above)
    are left alone and nothing merges into them.

    ``two_classes``: the array holds classes 0 and 1 only (besides nodata and masks); then only
    the rows between rows of one class are sieved (:func:`busy_rows`), the same result as
    sieving all of them."""
    with STAGES("sieve"):
        if two_classes and arr.shape[1] >= thr:
            for a, b in busy_rows(arr):
                _sieve(arr[a:b], thr)
        else:
            _sieve(arr, thr)


def busy_rows(arr: np.ndarray, gap: int = 16):
    """``[(first, end)]``: the runs of rows the sieve can change in a two-class array, each with
    the row above and below it (runs fewer than ``gap`` rows apart joined).

    A clear row -- every pixel one class, none masked -- is one region of at least ``width``
    pixels, never removed; a region of another class cannot cross it.  So every region that
    the sieve can remove lies between two clear rows, and is judged there on its true size;
    the region a clear row belongs to, cut off at the window, keeps at least ``width`` pixels
    there, so it is still kept, and a region merges into a neighbour of the other class
    whichever neighbour that is (with two classes there is no other choice to get wrong).  With
    more classes the neighbour chosen depends on the neighbours' sizes: not for them."""
    clear = (arr == arr[:, :1]).all(axis=1) & (arr[:, 0] < MASK_MIN)
    busy = np.flatnonzero(~clear)
    if not len(busy):
        return []
    cut = np.flatnonzero(np.diff(busy) > gap)
    starts, ends = np.r_[busy[0], busy[cut + 1]], np.r_[busy[cut], busy[-1]] + 1
    return [(max(0, int(a) - 1), min(len(arr), int(b) + 1)) for a, b in zip(starts, ends)]


def _sieve(arr: np.ndarray, thr: int) -> None:
    """:func:`sieve_array` on all of ``arr``."""
    from osgeo import gdal_array
    mem = gdal_array.OpenArray(arr)
    # The mask only when some pixel needs it (all ones is the same as none, read for nothing).
    keep = gdal_array.OpenArray((arr < MASK_MIN).view(np.uint8)) if arr.max() >= MASK_MIN else None
    mb = mem.GetRasterBand(1)
    gdal.SieveFilter(mb, keep.GetRasterBand(1) if keep is not None else None, mb, thr, 4)
    mb = mem = keep = None


def sieve_in_bands(band, thr: int, cancel=lambda: False, rows: int = SIEVE_BAND_ROWS,
                   two_classes: bool = False) -> None:
    """GDAL's SieveFilter, run on bands of ``rows`` rows with ``thr`` rows of margin above
    and below, writing back each band's middle (``two_classes``: see :func:`sieve_array`).

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
        sieve_array(arr, thr, nodata, two_classes)
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
        sieve_array(arr, thr, nodata, two_classes)
        band.WriteArray(arr[y0 - a0:y1 - a0], 0, y0)
    band.FlushCache()


class StreamSieve:
    """The banded sieve of :func:`sieve_in_bands`, fed strip by strip while inference runs.

    ``push(rows, y)`` takes the classes of rows ``y..`` in order (and keeps the array: the
    caller must not change it after); as soon as a band of ``rows`` rows has its ``thr`` rows
    of margin below, it is sieved and handed to ``emit(classes, y)`` (sieved classes) -- the
    same result as sieving the finished raster, with no second pass over the file.  The
    strips are joined once per band, and GDAL sieves that array in place.

    The band that ends the raster can only be sieved once every row is in: with ``tail`` (rows)
    the bands before it are shortened so that it has ``tail`` rows, not up to ``rows`` (what
    the run waits for after its last strip).  ``two_classes``: see :func:`sieve_array`.
    """

    def __init__(self, emit, width: int, height: int, thr: int, nodata: int, rows: Optional[int] = None,
                 tail: int = 0, two_classes: bool = False):
        self.emit, self.W, self.H, self.thr, self.nodata = emit, width, height, thr, nodata
        self.two_classes = two_classes
        self.rows, self.tail = rows or sieve_band_rows(width), max(0, int(tail))
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
            left = self.H - self.s0
            y1 = self.s0 + (min(self.rows, left - self.tail) if left > self.tail else left)
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
                sieve_array(window[:top + min(need, len(window) - top)], self.thr, self.nodata, self.two_classes)
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
                run_time: str, cancel, polygonizer: Optional[BandPolygonizer] = None,
                workdir: Optional[str] = None) -> Dict[int, Dict[str, object]]:
    """Sieve ``classes_path`` in place, write polygons to ``gpkg_path`` (if given; its layer named
    ``layer_name``), return per-class statistics ``{class_id: {name, count, area_ha}}``.  With
    ``polygonizer`` the classes were sieved while streaming (:class:`StreamSieve`) and their
    rows pushed to it, already polygonised.  ``workdir``: the run's scratch folder (else TMPDIR)."""
    model = p.info
    if model.task == "multilabel":
        return _postprocess_labels(p, classes_path, conf_path, gpkg_path, layer_name, run_time, cancel, workdir)
    thr = p.sieve_px
    ds = gdal.Open(classes_path, gdal.GA_Update)
    band = ds.GetRasterBand(1)
    if thr > 1 and polygonizer is None:
        sieve_in_bands(band, thr, cancel, two_classes=two_classes(model))
    bg = model.background_ids()
    if gpkg_path is None:
        m2 = PixelAreas(Grid.of_dataset(ds)).by_value_m2(band, ROWS_PER_READ)
        ds = None
        return {c.id: {"name": c.name, "count": None, "area_ha": hectares(float(m2[c.id]))}
                for c in model.classes if c.id not in bg}
    if cancel():
        raise Cancelled("cancelled")
    out, layer, srs = _polygon_layer(ds, gpkg_path, layer_name)
    if polygonizer is not None:
        polygonizer.finish(out, layer, cancel)
    else:
        tmpdir = tempfile.mkdtemp(prefix="tm-poly-", dir=workdir)
        try:
            polygonize_band(band, lambda v: foreground(v, bg), out, layer, tmpdir, cancel)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    stats = _measure(p, layer, out, ds, conf_path, srs, run_time, cancel)
    _finish_layer(p, out, layer, layer_name, run_time, ds)
    layer = out = band = ds = None
    return stats


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


def _finish_layer(p, out, layer, layer_name: str, run_time: str, cls_ds) -> None:
    """The layer's metadata (what made it, and the ground its run covered: ``TM_AREA``, in the CRS
    ``TM_AREA_CRS`` names, so that corrections made in it can teach the model where there is
    nothing) and its style."""
    made = provenance.read(cls_ds.GetMetadata())   # (where the network ran: the class raster says)
    meta = dict(provenance.run_record(p, run_time, made.device, made.provider_reason),
                **provenance.class_table({c.id: c.name for c in p.info.classes}))
    layer.SetMetadata(meta)
    marked = p.likeness is not None   # (regions marked for review: likeness.mark_layer)
    write_gpkg_style(out, layer_name, (polygons_review_qml if marked else polygons_qml)(p.info.classes))


def _postprocess_labels(p, classes_path, conf_path, gpkg_path, layer_name, run_time, cancel, workdir=None):
    """A multilabel result (``planning.LABEL_LAYOUT``): each label band sieved on its own, band 1
    (the most probable label present) made again from them, polygons per label (they overlap
    where the labels do), each measured against its own confidence band."""
    labels = p.info.label_classes()
    thr = p.sieve_px
    ds = gdal.Open(classes_path, gdal.GA_Update)
    if thr > 1:
        for k in range(len(labels)):
            sieve_in_bands(ds.GetRasterBand(k + 2), thr, cancel, two_classes=True)   # (0/1 per label)
        _top_labels(ds, conf_path, [c.id for c in labels], cancel)
    if gpkg_path is None:
        areas = PixelAreas(Grid.of_dataset(ds))
        stats = {}
        for k, c in enumerate(labels):
            m2 = areas.by_value_m2(ds.GetRasterBand(k + 2), ROWS_PER_READ)[1]   # (1: the label present)
            stats[c.id] = {"name": c.name, "count": None, "area_ha": hectares(float(m2))}
        ds = None
        return stats
    tmpdir = tempfile.mkdtemp(prefix="tm-poly-", dir=workdir)
    try:
        out, layer, srs = _polygon_layer(ds, gpkg_path, layer_name)
        conf_bands = {}
        for k, c in enumerate(labels):
            if cancel():
                raise Cancelled("cancelled")
            polygonize_band(ds.GetRasterBand(k + 2), lambda v: foreground(v, {0}), out, layer,
                            tempfile.mkdtemp(prefix="label%d-" % k, dir=tmpdir), cancel, value=c.id)
            conf_bands[c.id] = k + 2
        stats = _measure(p, layer, out, ds, conf_path, srs, run_time, cancel, conf_bands)
        _finish_layer(p, out, layer, layer_name, run_time, ds)
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


def area_perimeter_m(geom, srs, measure: EqualArea) -> tuple:
    """True area (m2: ``measure``'s, :mod:`areas`) and perimeter (m) of ``geom`` in ``srs`` (a
    geographic CRS's: on an equal-area projection centred on it)."""
    if srs.IsGeographic():
        g = geom.Clone()
        g.Transform(osr.CoordinateTransformation(srs, equal_area_at(geom, srs)))
        return measure.area_m2(geom), g.Boundary().Length()
    unit = srs.GetLinearUnits() or 1.0
    return measure.area_m2(geom), geom.Boundary().Length() * unit


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
                s_, c_ = mean_confidence_by_fid(out, layer.GetName(), cls_ds, conf_path, cancel, b, cid)
                m = max(len(sums), len(s_))
                sums = np.pad(sums, (0, m - len(sums))) + np.pad(s_, (0, m - len(s_)))
                counts = np.pad(counts, (0, m - len(counts))) + np.pad(c_, (0, m - len(c_)))
    stats: Dict[int, Dict[str, object]] = {c.id: {"name": c.name, "count": 0, "area_ha": 0.0}
                                           for c in p.info.classes if not c.is_background}
    source = os.path.abspath(p.input)
    measure = EqualArea.of_grid(Grid.of_dataset(cls_ds))
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
            area, perim = area_perimeter_m(geom, srs, measure)
            cid = feat.GetFieldAsInteger(i_cid)
            feat.SetFieldString(i_name, names.get(cid, str(cid)))
            feat.SetField(i_m2, round(area, 2))
            feat.SetField(i_ha, round(hectares(area), 2))
            feat.SetField(i_perim, round(perim, 2))
            if fid < len(counts) and counts[fid]:
                feat.SetField(i_conf, round(float(sums[fid] / counts[fid]), 1))   # percent, like the raster
            feat.SetFieldString(i_src, source)
            feat.SetFieldString(i_model, p.info.name)
            feat.SetFieldString(i_time, run_time)
            layer.SetFeature(feat)
            s = stats.setdefault(cid, {"name": names.get(cid, str(cid)), "count": 0, "area_ha": 0.0})
            s["count"] += 1
            s["area_ha"] += hectares(area)
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
