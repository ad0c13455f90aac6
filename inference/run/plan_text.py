"""A plan in words: what ``segment --dry-run`` prints (nothing read beyond the metadata, nothing
written)."""
from __future__ import annotations

import os
from typing import List


def _crs_name(r) -> str:
    srs = r.srs
    code = srs.GetAuthorityCode(None)
    auth = srs.GetAuthorityName(None)
    name = srs.GetName() or "unnamed CRS"
    return "%s:%s (%s)" % (auth, code, name) if auth and code else name


def describe(p) -> List[str]:
    """The lines of a plan: input, bands, scaling, masks, grid, tiles, outputs, estimates,
    notes and warnings (``key: value``, one fact a line)."""
    r, info = p.raster, p.info
    lines = ["input: %s (%d x %d px, %d bands, %s)" % (p.input, r.width, r.height, r.count,
                                                       ", ".join(sorted(set(r.dtypes))))]
    if r.band_files:
        lines.append("band files: %s" % ", ".join(os.path.basename(f) for f in r.band_files))
    lines.append("model: %s (%s)" % (info.name, p.model.path))
    for band, scaling in zip(info.bands, p.scalings):
        lines.append("band %s <- raster band %d: physical = raw x %g %s %g (%s)"
                     % (band, scaling.band, scaling.scale, "-" if scaling.offset < 0 else "+", abs(scaling.offset),
                        scaling.why))
    lines.append("cloud mask: %s" % (p.mask.describe if p.mask is not None else "none"))
    if p.aoi:
        lines.append("area of interest: %d polygon%s" % (len(p.aoi), "" if len(p.aoi) == 1 else "s"))
    c0, r0, w0, h0 = p.window
    px, py = r.grid.pixel_size
    lines.append("grid: %s, pixel %g x %g (GSD %.2f m), window %d x %d px at column %d, row %d"
                 % (_crs_name(r), px, py, p.src_gsd_m, w0, h0, c0, r0))
    w, h = p.work_size
    lines.append("working grid: %d x %d px at %.2f m%s" % (w, h, p.work_gsd_m,
                                                           " (resampled)" if p.resample else ""))
    n = p.tta * len(p.scales)
    lines.append("tiles: %d of %d x %d px, overlap %d, batches of %d; %d network pass%s per tile (test-time "
                 "augmentation %d, scales %s)%s"
                 % (p.tile_count, p.tile_size, p.tile_size, p.overlap, p.batch, n, "" if n == 1 else "es", p.tta,
                    ", ".join("%g" % s for s in p.scales),
                    "" if p.passes == n else ": the work of %g passes of full tiles" % p.passes))
    lines.append("threshold %g, minimum polygon area %g ha" % (p.threshold, p.min_area_ha))
    if p.outputs:
        for kind, path in p.outputs.items():
            lines.append("output %s: %s" % (kind.replace("_", " "), path))
    else:
        lines.append("outputs: none (no output folder)")
    if p.estimate is not None:
        lines.append("estimate: %s" % p.estimate.describe())
    lines.extend("note: %s" % n for n in p.notes)
    lines.extend("warning: %s" % w for w in p.warnings)
    return lines
