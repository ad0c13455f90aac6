"""The segmentation engine: plan a run, then stream tiles through onnxruntime.

Memory stays bounded by a strip of tiles: the raster is read one row of tiles at a
time (only the bands the model reads), overlapping tile probabilities are blended
into a strip accumulator, and rows no later tile touches are classified and written
at once.  Outputs are written under hidden temporary names and renamed when
complete, so a cancelled or failed run leaves nothing that looks finished.
"""
from __future__ import annotations

import datetime as _dt
import gc
import os
import shutil
import tempfile
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from osgeo import gdal

from . import aoi as aoilib
from . import bands as bandlib
from . import raster as rasterlib
from .errors import Cancelled, InputError, OutputError, TailingsError
from .model import ModelInfo
from .registry import resolve_model
from .runtime import make_session
from .tiling import blend_weights, check_passes, check_scales, positions, rescale, tta_views

NODATA_CLASS = 255
NODATA_CONF = 255
GSD_TOLERANCE = 0.10  # resample when the raster's GSD differs from the model's by more than 10 %

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


@dataclass
class SegmentOptions:
    bands: Optional[Union[Dict[str, int], str]] = None  # model band name -> 1-based raster band, or the
    #   text form "3,2,1" / "S2:B04=3,..." (parsed against the model's bands by plan)
    preset: Optional[str] = None
    tile_size: Optional[int] = None
    overlap: Optional[int] = None
    batch: int = 4
    device: str = "auto"
    threshold: Optional[float] = None
    min_area_ha: Optional[float] = None
    tta: Optional[int] = None   # test-time augmentation passes (1 = off, 2, 4, 8); None: the model's
    scales: Optional[Sequence[float]] = None  # multi-scale inference: (1.0,), (1.0, 0.5)...; None: the model's
    simplify_m: float = 0.0
    confidence: bool = True
    polygons: bool = True
    overwrite: bool = False
    extent: Optional[Tuple[float, float, float, float]] = None  # xmin, ymin, xmax, ymax in raster CRS
    aoi: Optional[Union[Sequence[str], str]] = None  # polygons (WKT, raster CRS), or a vector file
    #   (any CRS): pixels outside them get no class; the run covers their bounding box
    prefix: Optional[str] = None
    input_scale: Optional[float] = None   # override: physical = raw * input_scale + input_offset
    input_offset: float = 0.0
    threads: Optional[int] = None


@dataclass
class Plan:
    input: str
    raster: rasterlib.RasterInfo
    model: ModelInfo
    model_path: str
    mapping: bandlib.BandMapping
    transform: List[Tuple[float, float]]   # per model input: normalised = raw * a + b
    window: Tuple[int, int, int, int]      # col, row, width, height on the source raster
    src_gsd_m: float
    work_gsd_m: float
    resample: bool
    tile_size: int
    overlap: int
    threshold: float
    min_area_ha: float
    outputs: Dict[str, str]
    batch: int = 4
    simplify_m: float = 0.0
    notes: List[str] = field(default_factory=list)
    aoi: Optional[List[str]] = None        # area-of-interest polygons (WKT, raster CRS)
    tta: int = 1                           # network passes per tile and scale (tiling.tta_views)
    scales: Tuple[float, ...] = (1.0,)     # scales each tile is also seen at (tiling.rescale)


@dataclass
class SegmentResult:
    class_raster: str
    confidence_raster: Optional[str]
    polygons: Optional[str]
    layer_name: Optional[str]
    device: str
    provider_reason: str
    seconds: float
    stats: Dict[int, Dict[str, object]]
    notes: List[str]
    model: ModelInfo
    valid_pixels: int = 0
    tiles: int = 0


def _input_paths(input_path: str, tmpdir: str) -> Tuple[str, Optional[List[str]]]:
    """A file is used as is; a folder is read as a Sentinel-2 product (VRT on 10 m)."""
    if os.path.isdir(input_path):
        vrt, files = rasterlib.build_sentinel2_vrt(input_path, os.path.join(tmpdir, "s2_stack.vrt"))
        return vrt, files
    return input_path, None


def output_paths(input_path: str, out_dir: str, opts: SegmentOptions) -> Dict[str, str]:
    stem = opts.prefix or os.path.splitext(os.path.basename(os.path.normpath(input_path)))[0]
    out = {"classes": os.path.join(out_dir, stem + "_classes.tif")}
    if opts.confidence:
        out["confidence"] = os.path.join(out_dir, stem + "_confidence.tif")
    if opts.polygons:
        out["polygons"] = os.path.join(out_dir, stem + "_polygons.gpkg")
    return out


def _transform(model: ModelInfo, r: rasterlib.RasterInfo, mapping: bandlib.BandMapping,
               opts: SegmentOptions, notes: List[str]) -> List[Tuple[float, float]]:
    out = []
    reasons = set()
    for i, src in enumerate(mapping.source_bands):
        j = src - 1
        if opts.input_scale is not None:
            s, o = opts.input_scale, opts.input_offset
            reasons.add("input scale given: value x %g + %g" % (s, o))
        elif model.units == "raw":
            s, o = model.scale[i], model.offset[i]
            reasons.add("raw values x %g as the model expects" % s)
        elif r.scales[j] is not None:
            s, o = r.scales[j], r.offsets[j] or 0.0
            reasons.add("raster declares scale %g, offset %g" % (s, o))
        elif r.dtypes[j].startswith("Float"):
            s, o = 1.0, 0.0
            reasons.add("floating-point raster read as reflectance")
        else:
            s, o = model.scale[i], model.offset[i]
            reasons.add("integer raster read as DN x %g + %g (the model's default)" % (s, o))
        std, mean = model.std[i], model.mean[i]
        out.append((s / std, (o - mean) / std))
    notes.append("input scaling: " + "; ".join(sorted(reasons)))
    return out


def _window(r: rasterlib.RasterInfo, extent, what: str = "the extent") -> Tuple[int, int, int, int]:
    if extent is None:
        return 0, 0, r.width, r.height
    xmin, ymin, xmax, ymax = extent
    if not (xmax > xmin and ymax > ymin):
        raise InputError("%s must be xmin, ymin, xmax, ymax with xmax > xmin and ymax > ymin" % what)
    gt = r.geotransform
    cols = sorted([(xmin - gt[0]) / gt[1], (xmax - gt[0]) / gt[1]])
    rows = sorted([(ymax - gt[3]) / gt[5], (ymin - gt[3]) / gt[5]])
    # pixels the extent touches; a millionth of a pixel is rounding (e.g. a reprojected vertex)
    eps = 1e-6
    c0, c1 = max(0, int(np.floor(cols[0] + eps))), min(r.width, int(np.ceil(cols[1] - eps)))
    r0, r1 = max(0, int(np.floor(rows[0] + eps))), min(r.height, int(np.ceil(rows[1] - eps)))
    if c1 <= c0 or r1 <= r0:
        raise InputError("%s does not overlap the raster" % what)
    return c0, r0, c1 - c0, r1 - r0


def plan(input_path: str, model: str, opts: Optional[SegmentOptions] = None, out_dir: Optional[str] = None,
         info: Optional[ModelInfo] = None, _workdir: Optional[str] = None) -> Plan:
    """Check everything that can be checked before a run; raise :class:`TailingsError`.

    ``model`` is a path or the name of a shipped or user model.  With ``out_dir`` the
    outputs are checked too (existing files, writable folder).  ``info`` is the model's
    metadata already read (the panel caches it so its checks stay quick); None reads the file.
    """
    opts = opts or SegmentOptions()
    model_path = resolve_model(model)
    if info is None:
        from .model import read_info
        info = read_info(model_path)
    # A Sentinel-2 folder is stacked into a VRT: in the run's work folder (segment reads it
    # from there), else in a temporary one (then r.path names the folder, not the gone VRT).
    tmp = _workdir or tempfile.mkdtemp(prefix="tm-plan-")
    try:
        src, files = _input_paths(input_path, tmp)
        r = rasterlib.inspect(src, label=input_path, band_files=files)
        if files and not _workdir:
            r.path = input_path
    finally:
        if not _workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    notes: List[str] = []
    explicit = opts.bands
    if isinstance(explicit, str):
        explicit = bandlib.parse_mapping_text(explicit, info.bands) if explicit.strip() else None
    mapping = bandlib.map_bands(info.bands, r.descriptions, opts.preset, explicit)
    notes.extend(mapping.notes)
    transform = _transform(info, r, mapping, opts, notes)
    tile = int(opts.tile_size or info.tile_size)
    if info.fixed_input_size and tile != info.fixed_input_size:
        raise TailingsError("this model takes %d x %d tiles only; tile size %d cannot be used"
                            % (info.fixed_input_size, info.fixed_input_size, tile))
    if tile < 16 or tile % 8:
        raise TailingsError("tile size must be a multiple of 8 and at least 16, got %d" % tile)
    overlap = int(info.tile_overlap if opts.overlap is None else opts.overlap)
    if not 0 <= overlap <= tile // 2:
        raise TailingsError("overlap must be between 0 and half the tile size (%d), got %d" % (tile // 2, overlap))
    if opts.batch < 1:
        raise TailingsError("batch size must be at least 1")
    threshold = info.threshold if opts.threshold is None else float(opts.threshold)
    if not 0.0 < threshold < 1.0:
        raise TailingsError("threshold must be between 0 and 1, got %g" % threshold)
    min_area = info.min_area_ha if opts.min_area_ha is None else float(opts.min_area_ha)
    if min_area < 0:
        raise TailingsError("minimum area must be >= 0 ha")
    try:
        tta = check_passes(info.tta if opts.tta is None else opts.tta)
        scales = check_scales(info.tta_scales if opts.scales is None else opts.scales, tile)
    except ValueError as e:
        raise TailingsError(str(e)) from None
    if info.fixed_input_size and scales != (1.0,):
        raise TailingsError("this model takes %d x %d tiles only, so it cannot also run at scales %s"
                            % (tile, tile, ", ".join("%g" % s for s in scales if s != 1.0)))
    aoi = None
    if opts.aoi is not None:
        wkts = aoilib.read_vector(opts.aoi, r.srs) if isinstance(opts.aoi, str) else opts.aoi
        aoi, env = aoilib.check(wkts)
        if opts.extent is not None:  # both: the extent's part of the area
            e = opts.extent
            env = (max(e[0], env[0]), max(e[1], env[1]), min(e[2], env[2]), min(e[3], env[3]))
            if not (env[2] > env[0] and env[3] > env[1]):
                raise InputError("the area of interest lies outside the extent")
        window = _window(r, env, "the area of interest")
    else:
        window = _window(r, opts.extent)
    src_gsd = float(np.sqrt(r.gsd_m[0] * r.gsd_m[1]))
    resample = abs(src_gsd - info.gsd_m) / info.gsd_m > GSD_TOLERANCE
    if resample:
        notes.append("raster GSD %.2f m resampled to the model's %.2f m for inference, results back on the "
                     "source grid" % (src_gsd, info.gsd_m))
    outputs = output_paths(input_path, out_dir, opts) if out_dir else {}
    if out_dir:
        _check_outputs(out_dir, outputs, opts.overwrite)
    return Plan(input=input_path, raster=r, model=info, model_path=model_path, mapping=mapping,
                transform=transform, window=window, src_gsd_m=src_gsd,
                work_gsd_m=info.gsd_m if resample else src_gsd, resample=resample, tile_size=tile,
                overlap=overlap, threshold=threshold, min_area_ha=min_area, outputs=outputs,
                batch=int(opts.batch), simplify_m=float(opts.simplify_m or 0.0), notes=notes, aoi=aoi,
                tta=tta, scales=scales)


def _check_outputs(out_dir: str, outputs: Dict[str, str], overwrite: bool) -> None:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutputError("output path %s exists and is not a folder" % out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, ".tm-write-test-%s" % uuid.uuid4().hex[:8])
        with open(probe, "w") as fh:
            fh.write("x")
        os.remove(probe)
    except OSError as e:
        raise OutputError("cannot write to output folder %s: %s" % (out_dir, e.strerror or e)) from None
    existing = [p for p in outputs.values() if os.path.exists(p)]
    if existing and not overwrite:
        raise OutputError("output exists: %s (choose another folder or prefix, or allow overwriting)"
                          % ", ".join(os.path.basename(p) for p in existing))


def gdal_threads() -> str:
    """Threads GDAL may use to decode and encode GeoTIFF blocks (``GDAL_NUM_THREADS`` when the
    user set it, else every CPU).  The engine's reads and writes run between onnxruntime
    calls, when the cores onnxruntime uses are idle."""
    return os.environ.get("GDAL_NUM_THREADS") or "ALL_CPUS"


@contextmanager
def _gdal_threads_here():
    """GDAL_NUM_THREADS for GDAL calls made by this thread (only), restored after."""
    before = gdal.GetThreadLocalConfigOption("GDAL_NUM_THREADS", None)
    gdal.SetThreadLocalConfigOption("GDAL_NUM_THREADS", gdal_threads())
    try:
        yield
    finally:
        gdal.SetThreadLocalConfigOption("GDAL_NUM_THREADS", before)


class _Writer:
    """A GeoTIFF written strip by strip under a temporary name (``compress=False``: a scratch
    file of the run, written as fast as possible)."""

    def __init__(self, path, width, height, gt, wkt, nodata, colours=None, names=None, meta=None,
                 compress=True):
        drv = gdal.GetDriverByName("GTiff")
        self.path = path
        options = ["TILED=YES", "BIGTIFF=IF_SAFER", "BLOCKXSIZE=256", "BLOCKYSIZE=256"]
        if compress:
            options += ["COMPRESS=DEFLATE", "ZLEVEL=1", "NUM_THREADS=%s" % gdal_threads()]
        self.ds = drv.Create(path, width, height, 1, gdal.GDT_Byte, options=options)
        if self.ds is None:
            raise OutputError("cannot create %s" % path)
        self.ds.SetGeoTransform(gt)
        self.ds.SetProjection(wkt)
        b = self.ds.GetRasterBand(1)
        if nodata is not None:
            b.SetNoDataValue(nodata)
        if colours:
            ct = gdal.ColorTable()
            for cid, hexcol in colours.items():
                ct.SetColorEntry(cid, tuple(int(hexcol[k:k + 2], 16) for k in (1, 3, 5)) + (255,))
            ct.SetColorEntry(nodata, (0, 0, 0, 0))
            b.SetRasterColorTable(ct)
            b.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
        if names:
            cats = [""] * (max(names) + 1)
            for cid, n in names.items():
                cats[cid] = n
            b.SetCategoryNames(cats)
        if meta:
            self.ds.SetMetadata({k: str(v) for k, v in meta.items()})
        self.band = b

    def write(self, arr, yoff, xoff=0):
        self.band.WriteArray(arr, xoff, yoff)

    def close(self):
        if self.ds is not None:
            self.ds.FlushCache()
            self.band = None
            self.ds = None


def _remove(path: str) -> None:
    for p in (path, path + ".aux.xml", path + "-journal", path + "-wal", path + "-shm"):
        try:
            os.remove(p)
        except OSError:
            pass


def _finish(tmp: str, final: str) -> None:
    _remove(final)
    os.replace(tmp, final)
    if os.path.exists(tmp + ".aux.xml"):
        os.replace(tmp + ".aux.xml", final + ".aux.xml")


def block_cache_need(p: Plan) -> int:
    """Bytes of GDAL block cache that keep the input blocks one strip of tiles spans, and the
    output blocks being written, until the next strip.

    Strips overlap and share block rows; when the cache cannot hold them, each strip (and
    each band of a pixel-interleaved file) decodes the same blocks again.  Measured on a
    10980 x 10980 x 4 DEFLATE GeoTIFF (cProfile, reading only): 5.4 s with a 64 MB cache,
    2.2 s with 128 MB."""
    try:
        ds = rasterlib.open_dataset(p.raster.path)
    except TailingsError:  # the run reports an unreadable source itself
        return 0
    bw, bh = ds.GetRasterBand(1).GetBlockSize()
    pixel_interleaved = ds.GetMetadataItem("INTERLEAVE", "IMAGE_STRUCTURE") == "PIXEL"
    read = range(1, ds.RasterCount + 1) if pixel_interleaved else p.mapping.source_bands
    bytes_px = sum(gdal.GetDataTypeSize(ds.GetRasterBand(b).DataType) // 8 for b in read)
    ds = None
    ratio = p.work_gsd_m / max(p.src_gsd_m, 1e-9)
    rows = p.tile_size * ratio + 2 * bh                      # source rows a strip's blocks span
    cols = min(p.raster.width, p.window[2] + 2 * bw)
    outputs = 3 * 2 * 256 * cols / ratio                     # classes, confidence, mask: 2 block rows
    return int(1.5 * (rows * cols * bytes_px + outputs))


@contextmanager
def _block_cache_at_least(nbytes: int):
    """Raise GDAL's block-cache cap to ``nbytes`` for a run when it is lower; restore it after."""
    before = gdal.GetCacheMax()
    if nbytes <= before:
        yield
        return
    gdal.SetCacheMax(nbytes)
    try:
        yield
    finally:
        if gdal.GetCacheMax() == nbytes:  # nobody changed it meanwhile
            gdal.SetCacheMax(before)


def _activate(out: np.ndarray, activation: str) -> np.ndarray:
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-out))
    if activation == "softmax":
        e = np.exp(out - out.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return out


def segment(input_path: str, model: str, out_dir: str, opts: Optional[SegmentOptions] = None,
            progress: Optional[ProgressFn] = None, cancel: Optional[CancelFn] = None,
            _session=None) -> SegmentResult:
    """Segment ``input_path`` with ``model`` into ``out_dir``; see :class:`SegmentOptions`.

    ``_session``: a ``runtime.make_session`` result to reuse (evaluate runs many images)."""
    opts = opts or SegmentOptions()
    progress = progress or (lambda f, m: None)
    cancel = cancel or (lambda: False)
    t0 = time.time()
    progress(0.0, "loading model")
    model_path = resolve_model(model)
    info, sess, device, reason = _session or make_session(model_path, opts.device, opts.threads)
    workdir = tempfile.mkdtemp(prefix="tm-run-")
    try:
        p = plan(input_path, model_path, opts, out_dir, info=info, _workdir=workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    tag = ".tm-%s-" % uuid.uuid4().hex[:8]
    tmp = {k: os.path.join(out_dir, tag + os.path.basename(v)) for k, v in p.outputs.items()}
    created: List[str] = list(tmp.values())
    try:
        with _block_cache_at_least(block_cache_need(p)):
            result = _run(p, sess, device, reason, tmp, workdir, created, progress, cancel, t0)
        for k, final in p.outputs.items():
            _finish(tmp[k], final)
        result.class_raster = p.outputs["classes"]
        result.confidence_raster = p.outputs.get("confidence")
        result.polygons = p.outputs.get("polygons")
        result.seconds = time.time() - t0
        progress(1.0, "done")
        return result
    except BaseException as e:
        # The failed run's frames (kept alive by the traceback) still hold GDAL datasets open;
        # closed later, they would write a .aux.xml or a GeoPackage journal back into out_dir
        # after the removal below.  Release them first.
        traceback.clear_frames(e.__traceback__)
        gc.collect()
        for path in created:
            _remove(path)
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(p: Plan, sess, device, reason, tmp, workdir, created, progress, cancel, t0) -> SegmentResult:
    from .vectorize import postprocess
    info = p.model
    src_path = p.raster.path  # the file, or the Sentinel-2 stack plan built in workdir
    c0, r0, w0, h0 = p.window
    # The source view: only the bands the model reads, only the window asked for.
    view = os.path.join(workdir, "view.vrt")
    gdal.Translate(view, src_path, format="VRT", bandList=list(p.mapping.source_bands),
                   srcWin=[c0, r0, w0, h0])
    view_ds = gdal.Open(view)
    view_gt, wkt = view_ds.GetGeoTransform(), view_ds.GetProjection()
    work = view
    if p.resample:
        gt = view_gt
        if p.raster.geographic:
            lat = gt[3] + gt[5] * h0 / 2.0
            mx, my = rasterlib._metres_per_degree(lat)
            xres, yres = info.gsd_m / mx, info.gsd_m / my
        else:
            unit = p.raster.srs.GetLinearUnits() or 1.0
            xres = yres = info.gsd_m / unit
        coarser = info.gsd_m > p.src_gsd_m
        work = os.path.join(workdir, "work.vrt")
        # Whole working pixels that cover the window (GDAL would round the size to the nearest
        # pixel and drop the last source rows/columns when they fill less than half of one).
        nx = max(1, int(np.ceil(w0 * abs(gt[1]) / xres - 1e-6)))
        ny = max(1, int(np.ceil(h0 * abs(gt[5]) / yres - 1e-6)))
        gdal.Warp(work, view_ds, format="VRT", xRes=xres, yRes=yres,
                  outputBounds=[gt[0], gt[3] - ny * yres, gt[0] + nx * xres, gt[3]],
                  resampleAlg="average" if coarser else "bilinear")
    view_ds = None
    # GeoTIFF sources take GDAL_NUM_THREADS when opened: decode blocks on every core (reads run
    # while onnxruntime waits; see load below).
    with _gdal_threads_here():
        ds = gdal.Open(work)
    W, H, nb = ds.RasterXSize, ds.RasterYSize, ds.RasterCount
    work_gt = ds.GetGeoTransform()
    nodata = [ds.GetRasterBand(i + 1).GetNoDataValue() for i in range(nb)]

    names = info.class_names()
    colours = {c.id: c.color for c in info.classes}
    run_time = _dt.datetime.now().replace(microsecond=0).isoformat()
    meta = {"TM_MODEL": info.name, "TM_SOURCE": p.input, "TM_DEVICE": device, "TM_PROVIDER_REASON": reason,
            "TM_RUN_TIME": run_time, "TM_BANDS": p.mapping.as_text(info.bands),
            "TM_TTA": str(p.tta), "TM_SCALES": ",".join("%g" % s for s in p.scales),
            "TM_THRESHOLD": "%g" % p.threshold}
    meta.update({"CLASS_%d" % k: v for k, v in names.items()})
    if p.resample:
        cls_path = os.path.join(workdir, "classes_work.tif")
        conf_path = os.path.join(workdir, "conf_work.tif")
    else:
        cls_path, conf_path = tmp["classes"], tmp.get("confidence") or os.path.join(workdir, "conf.tif")
    # Scratch files (results on the working grid, before resampling) are not compressed.
    cls_w = _Writer(cls_path, W, H, work_gt, wkt, NODATA_CLASS, colours, names, meta, compress=not p.resample)
    conf_w = _Writer(conf_path, W, H, work_gt, wkt, NODATA_CONF, meta=dict(meta, TM_CONTENT="probability of the "
                     "assigned class, percent"), compress=not p.resample and "confidence" in tmp)

    T, O = p.tile_size, p.overlap
    xs, ys = positions(W, T, O), positions(H, T, O)
    th, tw = min(T, H), min(T, W)
    weights = blend_weights(T, O)[:th, :tw]
    a = np.array([t[0] for t in p.transform], np.float32)[:, None, None]
    b = np.array([t[1] for t in p.transform], np.float32)[:, None, None]
    K = info.output_channels or (1 if info.n_classes == 2 else info.n_classes)
    acc = np.zeros((K, T, W), np.float32)
    wsum = np.zeros((T, W), np.float32)
    blend_tmp = np.empty((K, th, tw), np.float32)
    batch = np.zeros((_batch_size(p, sess), nb, T, T), np.float32)
    pending: List[Tuple[int, int]] = []
    total_tiles, done_tiles, run_tiles = len(xs) * len(ys), 0, 0
    valid_total = 0
    input_name = sess.get_inputs()[0].name
    fixed_batch = isinstance(sess.get_inputs()[0].shape[0], int)
    binary = info.task == "binary"
    views = tta_views(p.tta)

    def flush():
        nonlocal run_tiles
        n = len(pending)
        if not n:
            return
        if cancel():
            raise Cancelled("cancelled")
        feed = batch if fixed_batch else batch[:n]
        out = None
        # One pass, or the views of test-time augmentation at each scale, averaged.
        for s in p.scales:
            fs = feed if s == 1.0 else np.ascontiguousarray(rescale(feed, s))
            ts = fs.shape[-1]
            for fwd, inv in views:
                if out is not None and cancel():  # cancel between passes too (test-time augmentation)
                    raise Cancelled("cancelled")
                try:
                    o = sess.run(None, {input_name: np.ascontiguousarray(fwd(fs))})[0][:n]
                except Exception as e:  # onnxruntime's own exception types
                    msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    raise TailingsError("the network failed on tiles of %d x %d px: %s" % (ts, ts, msg[:300])) from None
                if o.shape[1] != K or o.shape[2] != ts or o.shape[3] != ts:
                    raise TailingsError("the network returned shape %s for tiles of %d x %d; expected (N, %d, %d, %d)"
                                        % (o.shape, ts, ts, K, ts, ts))
                o = inv(_activate(o.astype(np.float32, copy=False), info.activation))
                if s != 1.0:
                    o = rescale(o, s, up=True)
                if out is None:  # an array of our own (sess.run and rescale return new ones)
                    out = o
                else:
                    out += o
        passes = len(views) * len(p.scales)
        if passes > 1:
            out *= 1.0 / passes
        for k, (x, _) in enumerate(pending):
            np.multiply(out[k, :, :th, :tw], weights, out=blend_tmp)
            acc[:, :th, x:x + tw] += blend_tmp
            wsum[:th, x:x + tw] += weights
        run_tiles += n
        pending.clear()

    floating = any(ds.GetRasterBand(i + 1).DataType in (gdal.GDT_Float32, gdal.GDT_Float64) for i in range(nb))
    aoi_mask = aoilib.Mask(p.aoi, wkt) if p.aoi else None

    def load(y):
        """Read and normalise one strip of tile rows, in place (see ``io_threads`` below)."""
        try:
            with _gdal_threads_here():  # decode blocks in parallel
                strip = ds.ReadAsArray(0, y, W, th, buf_type=gdal.GDT_Float32)
        except RuntimeError as e:  # a truncated or corrupt file: GDAL fails on the first bad block
            raise InputError("cannot read %s: %s" % (p.input, rasterlib._gdal_msg(e))) from None
        strip = strip.reshape(nb, th, W)
        valid = np.ones((th, W), bool)
        for i in range(nb):
            if nodata[i] is not None:
                valid &= strip[i] != nodata[i]
        if floating:
            valid &= np.isfinite(strip).all(axis=0)
            np.nan_to_num(strip, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        if aoi_mask is not None:
            valid &= aoi_mask.strip(work_gt, y, W, th)
        strip *= a
        strip += b
        if not valid.all():
            strip *= valid  # invalid pixels feed the network zeros (the training mean)
        return strip, valid

    # Without resampling, the output grid is the working grid: sieve while streaming, on the
    # writer thread, and write the polygon mask on the way (see vectorize.StreamSieve).
    sieve = mask_w = None
    if not p.resample and p.outputs.get("polygons"):
        from .vectorize import StreamSieve, background_ids, foreground, sieve_threshold_px
        bg = background_ids(info)
        mask_w = _Writer(os.path.join(workdir, "fg.tif"), W, H, work_gt, wkt, None, compress=False)

        def emit(rows, y):
            cls_w.write(rows, y)
            mask_w.write(foreground(rows, bg), y)
        sieve = StreamSieve(emit, W, H, sieve_threshold_px(p), NODATA_CLASS)

    def write(cls, conf, y):
        if sieve is not None:
            sieve.push(cls, y)
        else:
            cls_w.write(cls, y)
        conf_w.write(conf, y)

    # Reading and writing overlap inference on I/O threads when the GPU infers: the CPU is free
    # meanwhile.  On the CPU, onnxruntime already uses every core and a thread taking one of them
    # slows each of its parallel operators (measured: no gain on 2 cores), so I/O runs inline.
    io_threads = os.environ.get("TM_IO_THREADS", "1" if device == "cuda" else "0") == "1"
    if io_threads:
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tm-read")
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tm-write")
    else:
        reader = writer = _Inline()
    writes = []
    try:
        nxt = reader.submit(load, ys[0])
        for yi, y in enumerate(ys):
            if cancel():
                raise Cancelled("cancelled")
            norm, valid = nxt.result()
            if yi + 1 < len(ys):
                nxt = reader.submit(load, ys[yi + 1])
            for x in xs:
                if not valid[:, x:x + tw].any():
                    done_tiles += 1
                    continue
                k = len(pending)
                batch[k] = 0.0
                batch[k, :, :th, :tw] = norm[:, :, x:x + tw]
                pending.append((x, y))
                done_tiles += 1
                if len(pending) == len(batch):
                    flush()
                    progress(0.85 * done_tiles / total_tiles, "tile %d of %d" % (done_tiles, total_tiles))
            flush()
            progress(0.85 * done_tiles / total_tiles, "tile %d of %d" % (done_tiles, total_tiles))
            # Rows that no later tile row touches are final.
            last = yi == len(ys) - 1
            nrows = th if last else ys[yi + 1] - y
            cls, conf = _classify(acc[:, :nrows], wsum[:nrows], valid[:nrows], binary, p.threshold)
            valid_total += int(valid[:nrows].sum())
            writes.append(writer.submit(write, cls, conf, y))
            while len(writes) > 2 or (writes and writes[0].done()):
                writes.pop(0).result()  # bounded queue; re-raises a write error
            # Shift the accumulator: the rows not yet final move to the top.
            keep = th - nrows
            if keep > 0 and not last:
                acc[:, :keep] = acc[:, nrows:th]
                wsum[:keep] = wsum[nrows:th]
            acc[:, keep:] = 0.0
            wsum[keep:] = 0.0
        for w in writes:
            w.result()
        if sieve is not None:
            writer.submit(sieve.close).result()
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True, cancel_futures=True)
    ds = None
    cls_w.close()
    conf_w.close()
    if valid_total == 0:
        if p.aoi:
            raise InputError("%s holds no valid pixels inside the area of interest" % p.input)
        raise InputError("%s holds no valid pixels in the bands the model reads (all nodata)" % p.input)
    if cancel():
        raise Cancelled("cancelled")
    notes = list(p.notes)
    if p.resample:
        progress(0.87, "resampling results onto the source grid")
        _to_source_grid(cls_path, tmp["classes"], view_gt, w0, h0, wkt, "near", colours, names, meta)
        conf_src, conf_path = conf_path, tmp.get("confidence") or os.path.join(workdir, "conf.tif")
        _to_source_grid(conf_src, conf_path, view_gt, w0, h0, wkt, "near", None, None, meta)
    progress(0.9, "removing regions under the minimum area and polygonising")
    if mask_w is not None:
        mask_w.close()
    stats = postprocess(p, tmp["classes"], conf_path, tmp.get("polygons"), run_time, cancel,
                        mask_path=mask_w.path if mask_w is not None else None)
    return SegmentResult(class_raster=tmp["classes"], confidence_raster=tmp.get("confidence"),
                         polygons=tmp.get("polygons"), layer_name=_layer_name(p), device=device,
                         provider_reason=reason, seconds=time.time() - t0, stats=stats, notes=notes,
                         model=info, valid_pixels=valid_total, tiles=run_tiles)


class _Inline:
    """An executor that runs each job at once, in the calling thread."""

    def submit(self, fn, *args):
        from concurrent.futures import Future
        f = Future()
        try:
            f.set_result(fn(*args))
        except BaseException as e:  # handed to whoever calls result(), like a thread pool
            f.set_exception(e)
        return f

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def _batch_size(p: Plan, sess) -> int:
    """The batch size asked for, or the network's own when its batch dimension is fixed."""
    dim = sess.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else p.batch


def _layer_name(p: Plan) -> str:
    return os.path.splitext(os.path.basename(p.outputs.get("polygons", "polygons")))[0]


def _classify(acc, wsum, valid, binary, threshold):
    """Classes and confidence (probability of the assigned class, percent) of blended rows.

    Written for speed on the largest case, one output channel: a few passes in place, no
    float64 and no temporaries beyond the probability array."""
    invalid = ~valid
    with np.errstate(invalid="ignore", divide="ignore"):
        if acc.shape[0] == 1:
            conf = np.divide(acc[0], np.maximum(wsum, 1e-12))
            cls = conf >= threshold
            np.subtract(1.0, conf, out=conf, where=~cls)   # background: 1 - p
        elif binary:
            conf = acc[1] / np.maximum(acc.sum(axis=0), 1e-12)
            cls = conf >= threshold
            np.subtract(1.0, conf, out=conf, where=~cls)
        else:
            cls = acc.argmax(axis=0).astype(np.uint8)
            conf = acc.max(axis=0) / np.maximum(acc.sum(axis=0), 1e-12)
    if cls.dtype == bool:
        cls = cls.view(np.uint8)
    conf *= 100.0
    np.rint(conf, out=conf)
    np.clip(conf, 0, 100, out=conf)
    conf = conf.astype(np.uint8)
    cls[invalid] = NODATA_CLASS
    conf[invalid] = NODATA_CONF
    return cls, conf


def _to_source_grid(src, dst, gt, w, h, wkt, alg, colours, names, meta):
    """Resample a working-grid result onto the source grid (window), streamed by GDAL."""
    out = _Writer(dst, w, h, gt, wkt, NODATA_CLASS, colours, names, meta)
    out.close()
    ds = gdal.Open(dst, gdal.GA_Update)
    gdal.Warp(ds, src, resampleAlg=alg, srcNodata=NODATA_CLASS, dstNodata=NODATA_CLASS, multithread=False)
    ds.FlushCache()
    ds = None
