"""Planning a run: everything that can be resolved and checked before a pixel is read.

``plan(input, model, options, out_dir)`` opens the model (metadata only; its network is
loaded when the plan runs), opens the raster (CRS and north-up georeferencing required;
a Sentinel-2 folder is stacked into a VRT), maps bands by name, chooses the input scaling,
checks the options against the model, decides the window and the working GSD, names the
outputs and checks the folder.  The :class:`Plan` it returns is immutable and holds all of
it; ``execute.execute(plan)`` runs it, as often as wanted.
"""
from __future__ import annotations

from types import MappingProxyType
from dataclasses import dataclass, replace
from typing import Mapping, Optional, Tuple, Union

import numpy as np

from . import aoi as aoilib
from . import bands as bandlib
from . import options as optlib
from . import masks, radiometry, sizing
from . import raster as rasterlib
from .errors import InputError, ModelError, OptionError
from .metadata import ModelInfo, model_label
from .model import Model, open_model
from .output_names import choose_outputs
from .likeness import Likeness
from .ood import OodStats
from .runtime import Session, choose_providers
from .tiling import check_scales, positions
from .writing import block_cache_need

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
    outputs: Mapping[str, str]             # kind (classes, confidence, polygons) -> final path (with
    #   options.unique_names, a run whose names were taken meanwhile writes <stem>-2...: see its result)
    notes: Tuple[str, ...] = ()            # what was decided, for the user to read
    warnings: Tuple[str, ...] = ()         # what makes the result less trustworthy
    aoi: Optional[Tuple[str, ...]] = None  # area-of-interest polygons (WKT, raster CRS)
    mask: Optional["masks.MaskSource"] = None   # clouds and shadows masked before segmenting
    ood: Optional["OodStats"] = None      # the training tiles' statistics, when the run checks against them
    likeness: Optional["Likeness"] = None  # the training tailings' locations: flagged regions marked for review
    estimate: Optional["sizing.Estimate"] = None   # time and peak memory, before it runs
    block_cache_bytes: int = 0             # GDAL block cache a strip needs (``writing.block_cache_need``)

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    @property
    def batch(self) -> int:
        return int(self.options.batch)

    @property
    def simplify_m(self) -> float:
        return float(self.options.simplify_m or 0.0)

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
        return self.model.session(self.options.device, self.options.threads, extra)

    def with_outputs(self, out_dir: str, prefix: Optional[str] = None, overwrite: Optional[bool] = None) -> "Plan":
        """The same plan writing into ``out_dir`` (named ``prefix``): outputs checked again."""
        opts = replace(self.options, prefix=self.options.prefix if prefix is None else prefix,
                       overwrite=self.options.overwrite if overwrite is None else overwrite)
        outputs = choose_outputs(self.input, out_dir, opts)
        return replace(self, options=opts, out_dir=out_dir, outputs=MappingProxyType(outputs))


def plan(input_path: str, model: Union[str, Model], opts: Optional["optlib.SegmentOptions"] = None,
         out_dir: Optional[str] = None) -> Plan:
    """Resolve and check a run; raise :class:`~inference.errors.TailingsError` naming what is wrong.

    ``model`` is a :class:`~inference.model.Model`, a path, or the name of a shipped or user
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
    outputs = choose_outputs(input_path, out_dir, opts) if out_dir else {}
    if opts.date is None and r.product is not None and r.product.date:
        opts = replace(opts, date=r.product.date)   # the product's own date, recorded with the outputs
    p = Plan(input=input_path, options=opts, model=model, raster=r, mapping=mapping,
             transform=tuple(transform), scalings=tuple(scalings), window=window, src_gsd_m=src_gsd,
             work_gsd_m=want_gsd if resample else src_gsd, resample=resample, tile_size=tile,
             overlap=overlap, threshold=info.threshold if opts.threshold is None else float(opts.threshold),
             min_area_ha=min_area, tta=info.tta if opts.tta is None else opts.tta, scales=scales,
             out_dir=out_dir, outputs=MappingProxyType(outputs), notes=tuple(notes), warnings=tuple(warnings),
             aoi=tuple(aoi) if aoi else None, mask=mask, ood=ood, likeness=likeness)
    p = replace(p, block_cache_bytes=block_cache_need(p))   # (opens the raster once more: once per plan)
    est = sizing.estimate(p, device)
    long_run = sizing.check(p, est)   # (refuses a run that would not fit in memory)
    return replace(p, estimate=est, warnings=p.warnings + ((long_run,) if long_run else ()))


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
    xmin, ymin, xmax, ymax = extent
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


def _likeness(info: ModelInfo, opts) -> Optional[Likeness]:
    """Whether the run marks the flagged regions unlike the training tailings (a binary model
    whose metadata carries them, when the scene is checked against the training data and the run
    writes polygons to mark)."""
    if not opts.ood_check or info.task != "binary" or not opts.polygons:
        return None
    return Likeness.from_metadata(info.extra, model_label(info))
