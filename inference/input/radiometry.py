"""From the raster's numbers to what the model reads: physical value = raw * scale + offset, per band.

The first of these that applies, per band: the user's ``input_scale``/``input_offset``; a model of
``units: raw`` reads raw values with its own scale; the product's metadata (a Sentinel-2 SAFE's
quantification and offsets, a GF-6 delivery's calibration: ``products``); the raster's declared
scale and offset; a floating-point raster is reflectance already; else the model's default (DN x
0.0001 for Sentinel-2 models).  Checks that say when the result is probably wrong: DN that look
shifted by +1000 (Sentinel-2 baseline 04.00+ without its metadata), a GF-6 raster without the
XML that says how to calibrate it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..model import bands as bandlib
from ..errors import InputError

SHIFT_DN = 1000          # what Sentinel-2 baseline 04.00+ adds to DN
SAMPLE_GRID, SAMPLE_WINDOW = 6, 64   # the darkest pixels are sought in 6 x 6 windows of 64 px,
SAMPLE_BLOCKS = 4                    # or, in a tiled raster, in windows of 128 px in 4 x 4 blocks


@dataclass(frozen=True)
class BandScaling:
    """How one model input's raster band becomes the physical value the model reads."""
    band: int            # 1-based raster band
    scale: float
    offset: float
    why: str

    def to_dict(self, model_band: str) -> dict:
        return {"model_band": model_band, "raster_band": self.band, "scale": self.scale, "offset": self.offset,
                "why": self.why}


def choose(model, r, source_bands: Sequence[int], opts, names: Sequence[str] = ()) -> Tuple[
        List[BandScaling], List[str], List[str]]:
    """Per model input, its scaling; and the notes and warnings that go with the choice (``names``:
    what each raster band is, by its name or the chosen preset)."""
    names = list(names) or list(r.descriptions)
    notes: List[str] = []
    warnings: List[str] = []
    product = r.product
    gf6_guess = None
    out: List[BandScaling] = []
    for i, src in enumerate(source_bands):
        j = src - 1
        if opts.input_scale is not None:
            off = opts.input_offset or 0.0
            s = BandScaling(src, opts.input_scale, off, "input scale given: value x %g + %g" % (opts.input_scale, off))
        elif model.units == "raw":
            s = BandScaling(src, model.scale[i], model.offset[i], "raw values x %g as the model expects" % model.scale[i])
        elif product is not None and product.radiometry is not None:
            sc, off = product.radiometry[j]
            s = BandScaling(src, sc, off, product.radiometry_note)
        elif r.scales[j] is not None:
            sc, off = r.scales[j], r.offsets[j] or 0.0
            if not (math.isfinite(sc) and sc > 0 and math.isfinite(off)):
                raise InputError("band %d of %s declares scale %g, offset %g (its GDAL scale/offset or SCALE "
                                 "metadata): a scale must be a positive number and an offset a finite one; correct "
                                 "them (gdal_edit.py -scale -offset) or give --input-scale" % (src, r.label, sc, off))
            s = BandScaling(src, sc, off, "raster declares scale %g, offset %g" % (sc, off))
        elif r.dtypes[j].startswith("Float"):
            s = BandScaling(src, 1.0, 0.0, "floating-point raster read as reflectance")
        elif _gf6_band(names[j]):
            if gf6_guess is None:
                gf6_guess = _gf6_without_xml(r, opts, warnings, names)
            sc, off = gf6_guess[_gf6_band(names[j])[1] - 1]
            s = BandScaling(src, sc, off, "GF-6 TOA reflectance with an assumed sun and calibration")
        else:
            s = BandScaling(src, model.scale[i], model.offset[i], "integer raster read as DN x %g + %g (the "
                            "model's default)" % (model.scale[i], model.offset[i]))
        if opts.input_scale is None and opts.input_offset is not None:
            s = BandScaling(src, s.scale, opts.input_offset, "%s, offset %g given" % (s.why, opts.input_offset))
        out.append(s)
    notes.append("input scaling: " + "; ".join(sorted({s.why for s in out})))
    if opts.input_offset is None and any(s.why.endswith("(the model's default)") for s in out):
        shifted = looks_shifted(r, [s.band for s in out])
        if shifted:
            warnings.append(shifted)
    return out, notes, warnings


def normalisation(model, scalings: Sequence[BandScaling]) -> List[Tuple[float, float]]:
    """Per model input, (a, b) of normalised = raw * a + b (the model's mean and std applied)."""
    return [(s.scale / model.std[i], (s.offset - model.mean[i]) / model.std[i]) for i, s in enumerate(scalings)]


def _gf6_band(name: str) -> Optional[Tuple[str, int]]:
    try:
        b = bandlib.band(name) if name else None
    except Exception:   # not a band name at all
        return None
    if b is None or not b.name.startswith("GF6-"):
        return None
    return b.name.split(":")[0][4:], int(b.name.split(":B")[1])


def _gf6_without_xml(r, opts, warnings: List[str], names):
    from .products import gf6
    sensor = _gf6_band(next(d for d in names if _gf6_band(d)))[0]
    if not opts.date:
        raise InputError("%s is read as GF-6 %s but has no delivery XML beside it (it says how its DN become "
                         "reflectance): put the XML beside it, or give the acquisition date (--date; its year "
                         "selects the calibration), or --input-scale/--input-offset" % (r.label, sensor))
    lat, lon = _centre_lat_lon(r)
    radiometry, _, warning = gf6.reflectance_without_xml(sensor, opts.date, lat, lon, opts.calibration)
    warnings.append(warning)
    return radiometry


def _centre_lat_lon(r) -> Tuple[float, float]:
    from osgeo import osr
    x, y = r.grid.center
    wgs = osr.SpatialReference()
    wgs.ImportFromEPSG(4326)
    wgs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    lon, lat, _ = osr.CoordinateTransformation(r.srs, wgs).TransformPoint(x, y)
    return lat, lon


def _sample(band) -> np.ndarray:
    """Pixels of a band from places spread over it (its overview when it has one): a few blocks
    read, whatever the raster's size (a decimated read of the whole band reads every block of a
    file without overviews: seconds for a Sentinel-2 tile, on every plan).  A tiled raster gives
    a window of up to ``SAMPLE_WINDOW`` x 2 px inside each of ``SAMPLE_BLOCKS`` x ``SAMPLE_BLOCKS``
    blocks (GDAL decodes a block whole, whatever part of it is read); any other raster
    ``SAMPLE_GRID`` x ``SAMPLE_GRID`` windows of ``SAMPLE_WINDOW`` px."""
    if band.GetOverviewCount():
        ov = band.GetOverview(band.GetOverviewCount() - 1)
        if ov is not None and ov.XSize * ov.YSize <= 4096 * 4096:
            return ov.ReadAsArray().ravel()
    W, H = band.XSize, band.YSize
    bw, bh = band.GetBlockSize()
    if bw < W and bh < H:
        windows = []
        for r in sorted(set(int(v) for v in np.linspace(0, (H - 1) // bh, SAMPLE_BLOCKS))):
            for c in sorted(set(int(v) for v in np.linspace(0, (W - 1) // bw, SAMPLE_BLOCKS))):
                x, y = c * bw, r * bh
                w, h = min(bw, W - x, 2 * SAMPLE_WINDOW), min(bh, H - y, 2 * SAMPLE_WINDOW)
                windows.append((x + (min(bw, W - x) - w) // 2, y + (min(bh, H - y) - h) // 2, w, h))
    else:
        w, h = min(SAMPLE_WINDOW, W), min(SAMPLE_WINDOW, H)
        xs = np.linspace(0, W - w, SAMPLE_GRID).astype(int) if W > w else [0]
        ys = np.linspace(0, H - h, SAMPLE_GRID).astype(int) if H > h else [0]
        windows = [(int(x), int(y), w, h) for y in sorted(set(ys)) for x in sorted(set(xs))]
    return np.concatenate([band.ReadAsArray(*win).ravel() for win in windows])


def looks_shifted(r, bands: Sequence[int]) -> Optional[str]:
    """A warning when every band's darkest pixels are above DN 1000 (in windows spread over the
    raster): how Sentinel-2 products of baseline 04.00 and later store DN (+1000)."""
    from .raster import open_dataset
    ds = open_dataset(r.path, r.label)
    mins = []
    for b in bands:
        band = ds.GetRasterBand(b)
        try:
            a = _sample(band).astype(np.float64)
        except RuntimeError:   # an unreadable file: the run says so
            return None
        nd = band.GetNoDataValue()
        a = a[(a != nd) & (a > 0)] if nd is not None else a[a > 0]
        if not a.size:
            return None
        mins.append(float(np.percentile(a, 0.1)))
    ds = None
    if min(mins) <= SHIFT_DN:
        return None
    return ("every band's darkest pixels are above DN %d (%s): the DN look shifted by +%d, as Sentinel-2 products "
            "of processing baseline 04.00 and later store them (since 25 January 2022). If so, give "
            "--input-offset -0.1 (the panel's Input offset, Processing's INPUT_OFFSET) or open the product's SAFE "
            "folder, which says so itself; read as they are, the map is too bright and flags far too much"
            % (SHIFT_DN, ", ".join("band %d: %.0f" % (b, m) for b, m in zip(bands, mins)), SHIFT_DN))
