"""Planning a run: everything that can be resolved and checked before a pixel is read.

``plan(input, model, options, out_dir)`` opens the model (metadata only; its network is
loaded when the plan runs), opens the raster (CRS and north-up georeferencing required;
a Sentinel-2 folder is stacked into a VRT), maps bands by name, chooses the input scaling,
checks the options against the model, decides the window and the working GSD, the cloud mask
(ukis-csmask's run: a plan of its own, :attr:`Plan.mask_plan`), the classes and bands the
outputs hold, the thresholds, the threads and GDAL's settings, names the outputs and checks the
folder.  The :class:`Plan` it returns is immutable and holds all of it: nothing reads the
options after planning.  ``execute.execute(plan)`` runs it, as often as wanted.
"""
from __future__ import annotations

import math
import os
from types import MappingProxyType
from dataclasses import dataclass, replace
from typing import Mapping, Optional, Tuple, Union

import numpy as np

from ..input import aoi as aoilib
from ..model import bands as bandlib
from . import options as optlib
from ..input import masks, radiometry
from . import sizing
from ..input import raster as rasterlib
from ..errors import InputError, ModelError, OptionError
from .gdal_settings import GdalSettings, block_cache_need, for_run as gdal_for_run
from ..output.compression import codec
from ..model.metadata import ClassInfo, ModelInfo, model_label
from ..model.opened import Model, open_model
from ..output.output_names import OutputNames, choose_outputs
from .likeness import Likeness
from .ood import OodStats
from ..model.runtime import Session, choose_providers
from ..tiling import check_scales, positions

GSD_TOLERANCE = 0.10  # resample when the raster's GSD differs from the model's by more than 10 %
OUTPUT_KINDS = ("classes", "confidence", "polygons")


@dataclass(frozen=True)
class Plan:
    input: str                             # the user's input as given (a file or a Sentinel-2 folder)
    options: "optlib.SegmentOptions"       # as given, checked
    model: Model                           # the model file (metadata; its sessions)
    raster: rasterlib.RasterInfo           # what GDAL opens (raster.path) and what it holds
    mapping: bandlib.BandMapping
    transform: Tuple[Tuple[float, float], ...]   # per model input: normalised = raw * a + b
    scalings: Tuple["radiometry.BandScaling", ...]   # per model input: physical = raw * scale + offset, why
    window: Tuple[int, int, int, int]      # col, row, width, height on the source raster
    src_gsd_m: float
    work_gsd_m: float
    resample: bool
    tile_size: int
    overlap: int
    threshold: float
    min_area_ha: float
    tta: int                               # network passes per tile and scale (tiling.tta_views)
    scales: Tuple[float, ...]              # scales each tile is also seen at (tiling.rescale)
    out_dir: Optional[str]
    names: Optional[OutputNames]           # the outputs, their lock, what may be done with names taken (with
    #   options.unique_names, a run whose names were taken meanwhile writes <stem>-2...: see its result)
    notes: Tuple[str, ...] = ()            # what was decided, for the user to read
    warnings: Tuple[str, ...] = ()         # what makes the result less trustworthy
    aoi: Optional[Tuple[str, ...]] = None  # area-of-interest polygons (WKT, raster CRS)
    mask: Optional["masks.MaskSource"] = None   # clouds and shadows masked before segmenting
    ood: Optional["OodStats"] = None      # the training tiles' statistics, when the run checks against them
    likeness: Optional["Likeness"] = None  # the training tailings' locations: flagged regions marked for review
    estimate: Optional["sizing.Estimate"] = None   # time and peak memory, before it runs
    mask_plan: Optional["Plan"] = None     # ukis-csmask's run over the same window (no output folder yet:
    #   the run's scratch folder), when the cloud mask is csmask's
    out_classes: Tuple[ClassInfo, ...] = ()   # the classes the class raster holds: the model's, then the mask's
    label_bands: Optional[Tuple[Tuple[str, str], ...]] = None   # a multilabel model's (name, colour) per label band
    label_thresholds: Optional[Tuple[Tuple[int, ...], Tuple[float, ...]]] = None   # multilabel: ids, thresholds
    codec: str = "deflate"                 # the output GeoTIFFs' compression (output.compression.codec)
    date: Optional[str] = None             # the acquisition date recorded with the outputs (given, or the product's)
    sieve_px: int = 0                      # pixels a region needs to reach min_area_ha everywhere (output.sieve)
    batch: int = 4                         # tiles per onnxruntime call (a network with a fixed batch: its own)
    simplify_m: float = 0.0                # polygon simplification tolerance, metres (0: none)
    device: str = "cpu"                    # where onnxruntime runs (runtime.choose_providers)
    device_asked: str = "auto"             # the device asked for: the session chooses by it, and says why
    threads: Optional[int] = None          # onnxruntime's threads (None: its default)
    gdal: GdalSettings = GdalSettings()    # GDAL's threads and block cache for the run
    io_threads: Tuple[bool, bool, bool] = (False, False, True)   # reading, writing, the network on threads
    stream_span: Tuple[float, float] = (0.0, 0.85)   # the share of the progress bar streaming fills

    @property
    def outputs(self) -> Mapping[str, str]:
        """Kind (classes, confidence, polygons...) -> final path; empty without an output folder."""
        return self.names.files if self.names is not None else MappingProxyType({})

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    @property
    def work_size(self) -> Tuple[int, int]:
        """Width and height of the grid the network sees (the window, at the working GSD)."""
        f = self.src_gsd_m / self.work_gsd_m
        return max(1, int(np.ceil(self.window[2] * f - 1e-6))), max(1, int(np.ceil(self.window[3] * f - 1e-6)))

    @property
    def tile_count(self) -> int:
        """Tiles the run covers (tiles without a valid pixel are skipped when it runs)."""
        w, h = self.work_size
        return len(positions(w, self.tile_size, self.overlap)) * len(positions(h, self.tile_size, self.overlap))

    @property
    def passes(self) -> float:
        """Network passes per tile, counted in full-resolution tiles (a half-resolution one is a quarter)."""
        return int(round(self.tta * sum(s * s for s in self.scales) * 100)) / 100.0

    def session(self) -> Session:
        """The model's onnxruntime session for this plan's device and threads (created the first
        time any plan of this model asks for it; with the encoder's features when the run checks
        the scene against the training data)."""
        extra = (self.ood.feature,) if self.ood is not None else ()
        if self.likeness is not None and self.likeness.feature not in extra:
            extra += (self.likeness.feature,)
        return self.model.session(self.device_asked, self.threads, extra)

    def with_outputs(self, out_dir: str, prefix: Optional[str] = None, overwrite: Optional[bool] = None) -> "Plan":
        """The same plan writing into ``out_dir`` (named ``prefix``): outputs checked again."""
        opts = replace(self.options, prefix=self.options.prefix if prefix is None else prefix,
                       overwrite=self.options.overwrite if overwrite is None else overwrite)
        return replace(self, options=opts, out_dir=out_dir, names=choose_outputs(self.input, out_dir, opts))


def plan(input_path: str, model: Union[str, Model], opts: Optional["optlib.SegmentOptions"] = None,
         out_dir: Optional[str] = None) -> Plan:
    """Resolve and check a run; raise :class:`~inference.errors.TailingsError` naming what is wrong.

    ``model`` is a :class:`~inference.model.opened.Model`, a path, or the name of a shipped or user
    model.  With ``out_dir`` the outputs are named and checked too (existing files, writable
    folder; nothing is created before the run); without, the plan can be checked and shown but
    not run.
    """
    opts = optlib.check(opts or optlib.SegmentOptions())
    model = open_model(model)
    info = model.info
    device = choose_providers(opts.device).device  # onnxruntime importable, the device usable (no session yet)
    r = rasterlib.open_input(input_path, opts.calibration)
    notes, warnings = list(info.notes), []
    if r.product is not None:
        notes.extend(r.product.notes)
        warnings.extend(r.product.warnings)
    explicit = opts.bands
    if isinstance(explicit, str):
        explicit = bandlib.parse_mapping_text(explicit, info.bands) if explicit.strip() else None
    mapping = bandlib.map_bands(info.bands, r.descriptions, opts.preset, explicit)
    notes.extend(mapping.notes)
    warnings.extend(mapping.warnings)
    identities = [b.name if b else "" for b in bandlib.identify_bands(r.descriptions, opts.preset)]
    scalings, more_notes, more_warnings = radiometry.choose(info, r, mapping.source_bands, opts, identities)
    notes.extend(more_notes)
    warnings.extend(more_warnings)
    transform = radiometry.normalisation(info, scalings)
    ood = OodStats.from_metadata(info.extra.get("ood"), info.scale, info.offset) if opts.ood_check else None
    if ood is None and opts.ood_check:
        notes.append("the model carries no statistics of its training data: this run cannot say whether the "
                     "scene is like them")
    likeness = _likeness(info, opts)
    if opts.ood_check and likeness is None and info.task == "binary" and opts.polygons:
        notes.append("the model carries no calibrated sample of its training tailings: this run cannot mark the "
                     "flagged regions that look unlike them for review")
    mask, mask_notes = masks.choose(opts, r, input_path)
    notes.extend(mask_notes)
    if mask is not None:
        notes.append("masked before segmenting: %s" % mask.describe)
    tile, overlap, scales = _tiling(info, opts, model.path)
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
    if mask is not None and mask.kind == "scl":
        warnings.extend(masks.check_covers(mask.path, r, window))
    src_gsd = float(np.sqrt(r.gsd_m[0] * r.gsd_m[1]))
    want_gsd = float(opts.gsd) if opts.gsd is not None else (info.gsd_m or src_gsd)
    resample = abs(src_gsd - want_gsd) / want_gsd > GSD_TOLERANCE
    if resample:
        notes.append("raster GSD %.2f m resampled to %s %.2f m for inference, results back on the source grid"
                     % (src_gsd, "the chosen" if opts.gsd is not None else "the model's", want_gsd))
    if src_gsd / want_gsd > MAX_UPSAMPLING:
        raise OptionError("processing resolution %g m (%s) is %.0f times finer than the raster's %.2f m: at most %d "
                          "times finer can be run (--gsd %g or more)"
                          % (want_gsd, "the model's" if opts.gsd is None else "chosen", src_gsd / want_gsd, src_gsd,
                             MAX_UPSAMPLING, _round_up(src_gsd / MAX_UPSAMPLING)), "gsd")
    min_area = info.min_area_ha if opts.min_area_ha is None else float(opts.min_area_ha)
    _check_min_area(min_area, r, window, opts.min_area_ha is None and info.name)
    names = choose_outputs(input_path, out_dir, opts) if out_dir else None
    if opts.date is None and r.product is not None and r.product.date:
        opts = replace(opts, date=r.product.date)   # the product's own date, recorded with the outputs
    threshold = info.threshold if opts.threshold is None else float(opts.threshold)
    work_gsd = want_gsd if resample else src_gsd
    cache = block_cache_need(r.block_size, r.pixel_interleaved, r.band_bytes, mapping.source_bands, r.width,
                             window[2], tile, overlap, work_gsd / max(src_gsd, 1e-9))
    p = Plan(input=input_path, options=opts, model=model, raster=r, mapping=mapping,
             transform=tuple(transform), scalings=tuple(scalings), window=window, src_gsd_m=src_gsd,
             work_gsd_m=work_gsd, resample=resample, tile_size=tile,
             overlap=overlap, threshold=threshold,
             min_area_ha=min_area, tta=info.tta if opts.tta is None else opts.tta, scales=scales,
             out_dir=out_dir, names=names, notes=tuple(notes), warnings=tuple(warnings),
             aoi=tuple(aoi) if aoi else None, mask=mask, ood=ood, likeness=likeness,
             out_classes=tuple(info.classes) + (tuple(masks.MASK_CLASSES) if mask is not None else ()),
             label_bands=_label_bands(info), label_thresholds=_label_thresholds(info, opts, threshold),
             codec=codec(opts.compression), date=opts.date, batch=int(opts.batch), simplify_m=float(opts.simplify_m or 0.0), sieve_px=_sieve_px(min_area, r, window),
             device=device, device_asked=opts.device or "auto", threads=opts.threads, gdal=gdal_for_run(device, opts.threads, cache),
             io_threads=io_threads(device),
             stream_span=(0.1 if mask is not None and mask.kind == "csmask" else 0.0, 0.85))
    p = replace(p, mask_plan=_mask_plan(p))
    est = sizing.estimate(p, device)
    long_run = sizing.check(p, est)   # (refuses a run that would not fit in memory)
    return replace(p, estimate=est, warnings=p.warnings + ((long_run,) if long_run else ()))


def _label_bands(info: ModelInfo) -> Optional[Tuple[Tuple[str, str], ...]]:
    """A multilabel model's label bands, ``((name, colour), ...)`` (None for other models)."""
    return tuple((c.name, c.color) for c in info.label_classes()) if info.task == "multilabel" else None


def _label_thresholds(info: ModelInfo, opts, threshold: float):
    """A multilabel model's label class ids and their thresholds (the run's threshold, when given,
    for every label); None for other models."""
    if info.task != "multilabel":
        return None
    ids = tuple(c.id for c in info.label_classes())
    return ids, tuple([threshold] * len(ids) if opts.threshold is not None else info.label_thresholds())


def _sieve_px(min_area_ha: float, r: rasterlib.RasterInfo, window) -> int:
    """Pixels a region needs to reach ``min_area_ha`` everywhere on the raster (0: no minimum)."""
    if min_area_ha <= 0:
        return 0
    px = math.ceil(min_area_ha * 10000.0 / rasterlib.min_pixel_area_m2(r) - 1e-9)
    # (GDAL takes an int; a region cannot have more pixels than the window: beyond that, every
    # region is under the minimum, as it is with the window's pixel count plus one)
    return int(min(px, window[2] * window[3] + 1, 2 ** 31 - 1))


def io_threads(device: str) -> Tuple[bool, bool, bool]:
    """``(read, write, infer)``: whether reading, writing and the network run on threads of their
    own.  Reading: when the GPU infers (the CPU is free meanwhile).  Writing: there too, and on
    the CPU when there is a second core (the writer sieves, compresses and writes the finished
    rows while the main thread reads and infers; GDAL releases the GIL).  The network: always
    (the next batch is filled while the last is inferred).  ``TM_IO_THREADS``: ``1`` reading and
    writing, ``0`` neither, ``write`` the writer only; ``TM_INFER_THREAD=0``: the network inline."""
    forced = os.environ.get("TM_IO_THREADS")
    infer = os.environ.get("TM_INFER_THREAD", "1") == "1"
    if forced is not None:
        return forced == "1", forced in ("1", "write"), infer
    if device == "cuda":
        return True, True, infer
    return False, (os.cpu_count() or 1) > 1, infer


def _mask_plan(p: Plan) -> Optional[Plan]:
    """ukis-csmask's run over the plan's window (at its own 30 m, classes only), when the plan's
    cloud mask is csmask's; its output folder is the run's scratch folder (``execute``)."""
    if p.mask is None or p.mask.kind != "csmask":
        return None
    net = Model(p.mask.path, masks.csmask_info(p.mask), os.path.getmtime(p.mask.path))
    extent = p.raster.grid.extent_of(p.window)
    opts = replace(p.options, bands=dict(zip(net.info.bands, p.mask.bands)), preset=None, tile_size=None,
                   overlap=None, threshold=None, tta=1, scales=(1.0,), min_area_ha=0.0, polygons=False,
                   confidence=False, overwrite=True, unique_names=False, prefix="csmask", extent=extent, aoi=None,
                   cloud_mask="off", date=None)
    return plan(p.input, net, opts)


MAX_UPSAMPLING = 8   # a processing resolution at most this many times finer than the raster's


def _round_up(x: float) -> float:
    """``x`` rounded up to two significant digits (a value to suggest)."""
    e = 10 ** (np.floor(np.log10(x)) - 1)
    return float(np.ceil(x / e - 1e-9) * e)


def _check_min_area(min_area_ha: float, r: rasterlib.RasterInfo, window, model_name) -> None:
    """A minimum area larger than the whole window can keep no region: refused, not run."""
    if min_area_ha <= 0:
        return
    w, h = window[2], window[3]
    largest = rasterlib.max_pixel_area_m2(r) * w * h / 1e4
    if min_area_ha > largest:
        raise OptionError("minimum polygon area %g ha is larger than the whole area segmented (%s ha)%s: no region "
                          "could be kept" % (min_area_ha, "%.4g" % largest,
                                             " (the default of model %s)" % model_name if model_name else ""),
                          "min_area_ha")


def _tiling(info: ModelInfo, opts, path: str = "") -> Tuple[int, int, Tuple[float, ...]]:
    """Tile size, overlap and scales, checked against the model."""
    tile = int(opts.tile_size or info.tile_size)
    if info.fixed_input_size and tile != info.fixed_input_size:
        raise OptionError("this model takes %d x %d tiles only; tile size %d cannot be used"
                          % (info.fixed_input_size, info.fixed_input_size, tile), "tile_size")
    if opts.tile_size is None and tile > optlib.MAX_TILE:
        fixed = info.fixed_input_size
        raise (ModelError if fixed else OptionError)(
            "model %s (%s) declares tiles of %d px: at most %d px can be run%s"
            % (info.name, path, tile, optlib.MAX_TILE, "" if fixed else "; choose a smaller --tile"),
            *(() if fixed else ("tile_size",)))
    optlib.option("tile_size").check(tile)
    if opts.overlap is not None:
        overlap = int(opts.overlap)
    elif "overlap_pct" in info.extra and tile != info.tile_size:   # Deepness states it as a share of the tile
        overlap = int(round(tile * float(info.extra["overlap_pct"]) / 100.0))
    else:
        overlap = int(info.tile_overlap)
    if not 0 <= overlap <= tile // 2:
        raise OptionError("overlap must be between 0 and half the tile size (%d), got %d" % (tile // 2, overlap),
                          "overlap")
    try:
        scales = check_scales(info.tta_scales if opts.scales is None else opts.scales, tile)
    except ValueError as e:
        raise OptionError(str(e), "scales") from None
    if info.fixed_input_size and scales != (1.0,):
        raise OptionError("this model takes %d x %d tiles only, so it cannot also run at scales %s"
                          % (tile, tile, ", ".join("%g" % s for s in scales if s != 1.0)), "scales")
    return tile, overlap, scales


def _window(r: rasterlib.RasterInfo, extent, what: str = "the extent") -> Tuple[int, int, int, int]:
    if extent is None:
        return 0, 0, r.width, r.height
    # pixels the extent touches; a millionth of a pixel is rounding (e.g. a reprojected vertex)
    w = r.grid.window_of(*extent, tol=1e-6)
    c0, c1 = max(0, w.col), min(r.width, w.col + w.width)
    r0, r1 = max(0, w.row), min(r.height, w.row + w.height)
    if c1 <= c0 or r1 <= r0:
        raise InputError("%s does not overlap the raster" % what)
    return c0, r0, c1 - c0, r1 - r0


def _likeness(info: ModelInfo, opts) -> Optional[Likeness]:
    """Whether the run marks the flagged regions unlike the training tailings (a binary model
    whose metadata carries them, when the scene is checked against the training data and the run
    writes polygons to mark)."""
    if not opts.ood_check or info.task != "binary" or not opts.polygons:
        return None
    return Likeness.from_metadata(info.extra, model_label(info))
