"""Is the scene like the training data?  Tile by tile, from the network's own view and the inputs.

A model whose metadata carries ``ood`` statistics (``python -m training ood-stats``) is run with
one more output: the encoder's deepest features (a graph tensor the statistics name; the file is
not changed, the session adds the output: ``onnx_header.with_outputs``).  Each tile's features,
averaged over the tile, are compared with the training tiles': standardised, projected on their
principal components (a Mahalanobis distance) plus what the components do not explain (the
residual), each divided by its 95th percentile over the training tiles, so that a score of 1 is
as far as the farthest 5 % of training tiles and 2 twice that.  The inputs are compared too: the
share of a tile's pixels outside the training reflectance range (0.5 %..99.5 % per band).

The 95th percentiles are taken over training tiles scored by statistics fitted without their
site (leave one site out), so that 1 is what a new site of the same kind of imagery scores, not
what the fitted tiles themselves do (measured for the shipped model: docs and its model card).
A tile scoring above ``threshold`` (1.5) is marked unreliable (a layer of tiles beside the
polygons); a scene whose median tile scores above 1, or with a quarter of its tiles unreliable or
a fifth of its pixels out of range, is called unlike the training data, in plain words, in every
front end.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


THRESHOLD = 1.5            # a tile beyond this is unreliable
SCENE_MEDIAN = 1.0         # a scene whose median tile is beyond this is unlike the training data
UNRELIABLE_SHARE = 0.25    # ... or with this share of its tiles unreliable
OUT_OF_RANGE_SCENE = 0.2   # ... or this share of its pixels outside the training range
COMPONENTS = 8


BOUNDS_UNITS = "reflectance"   # the ``ood`` metadata's ``bounds_units``: what its bounds are in


@dataclass(frozen=True)
class RawRange:
    """The training range of a run, per model input, in its raster's own values."""
    low: np.ndarray
    high: np.ndarray


def bounds_from_metadata(d: dict, scale: Sequence[float], offset: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` reflectance (float64) of ``ood`` metadata: ``toa_reflectance_low/high``;
    files written before (``reflectance_low/high``) hold the DN of a raster the model reads with
    its default scale and offset (DN x 0.0001 for the shipped model), converted with those."""
    if "toa_reflectance_low" in d:
        return (np.asarray(d["toa_reflectance_low"], np.float64).reshape(-1),
                np.asarray(d["toa_reflectance_high"], np.float64).reshape(-1))
    lo = np.asarray(d["reflectance_low"], np.float64).reshape(-1)
    hi = np.asarray(d["reflectance_high"], np.float64).reshape(-1)
    sc = np.asarray(list(scale) or [1.0], np.float64)
    off = np.asarray(list(offset) or [0.0], np.float64)
    lo, hi = lo * sc + off, hi * sc + off
    return np.minimum(lo, hi), np.maximum(lo, hi)


def reflectance_keys(d: dict, scale: Sequence[float], offset: Sequence[float]) -> dict:
    """``ood`` metadata with its bounds as reflectance, under the keys that say so (an old
    file's ``reflectance_low/high`` converted: :func:`bounds_from_metadata`)."""
    low, high = bounds_from_metadata(d, scale, offset)
    out = {k: v for k, v in d.items() if k not in ("reflectance_low", "reflectance_high")}
    out.update(toa_reflectance_low=low.tolist(), toa_reflectance_high=high.tolist(), bounds_units=BOUNDS_UNITS)
    return out


@dataclass(frozen=True)
class OodStats:
    feature: str                  # the graph tensor (N, C, h, w) whose tile means are compared
    mean: np.ndarray              # (C,) of the training tiles' feature means
    std: np.ndarray               # (C,)
    components: np.ndarray        # (k, C) principal axes of the standardised training features
    variances: np.ndarray         # (k,)
    maha_q95: float
    res_q95: float
    low: np.ndarray               # per model input: the training reflectance's 0.5 % quantile (float64)
    high: np.ndarray              # ... and its 99.5 %
    out_q95: float                # the share of out-of-range pixels of the 95th-percentile training tile
    tiles: int                    # training tiles the statistics come from
    threshold: float = THRESHOLD

    @classmethod
    def from_metadata(cls, d: Optional[dict], scale: Sequence[float] = (), offset: Sequence[float] = ()
                      ) -> Optional["OodStats"]:
        """The statistics of a model's ``ood`` metadata; ``scale``/``offset``: the model's default
        (how it reads an integer raster), for files written before the bounds were reflectance."""
        if not d:
            return None
        low, high = bounds_from_metadata(d, scale, offset)
        return cls(feature=str(d["feature"]), mean=np.asarray(d["mean"], np.float32),
                   std=np.maximum(np.asarray(d["std"], np.float32), 1e-6),
                   components=np.asarray(d["components"], np.float32), variances=np.asarray(d["variances"], np.float32),
                   maha_q95=float(d["maha_q95"]), res_q95=float(d["res_q95"]), low=low, high=high,
                   out_q95=float(d.get("out_of_range_q95", 0.01)), tiles=int(d.get("tiles", 0)),
                   threshold=float(d.get("threshold", THRESHOLD)))

    def raw_range(self, scalings) -> "RawRange":
        """The training range in a run's raw values (``scalings``: per model input, the
        ``radiometry.BandScaling`` that makes its raster band reflectance: raw x scale + offset)."""
        sc = np.asarray([s.scale for s in scalings], np.float64)
        off = np.asarray([s.offset for s in scalings], np.float64)
        lo, hi = (self.low - off) / sc, (self.high - off) / sc
        return RawRange(np.minimum(lo, hi), np.maximum(lo, hi))   # (a negative scale swaps the ends)

    def distances(self, vectors: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(Mahalanobis, residual) of tile feature means (n, C), raw (not yet scaled)."""
        z = (vectors - self.mean) / self.std
        t = z @ self.components.T
        maha = np.sqrt((t * t / self.variances).mean(axis=1))
        res = np.linalg.norm(z - t @ self.components, axis=1) / np.sqrt(z.shape[1])
        return maha, res

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        maha, res = self.distances(vectors)
        s = maha / max(self.maha_q95, 1e-9)
        if self.res_q95 > 1e-9:   # (nothing is left to the residual when the components span the features)
            s = np.maximum(s, res / self.res_q95)
        return s


def _fit_features(vectors: np.ndarray, feature: str, k: int) -> OodStats:
    mean, std = vectors.mean(axis=0), np.maximum(vectors.std(axis=0), 1e-6)
    z = (vectors - mean) / std
    k = max(1, min(k, len(vectors) - 1, z.shape[1]))
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    comps, var = vt[:k], np.maximum((s[:k] ** 2) / max(1, len(z) - 1), 1e-6)
    return OodStats(feature, mean, std, comps, var, 1.0, 1.0, np.zeros(1), np.zeros(1), 0.0, len(vectors))


def fit(vectors: np.ndarray, reflectance: List[np.ndarray], feature: str, groups: Optional[Sequence] = None,
        k: int = COMPONENTS) -> dict:
    """The ``ood`` metadata of training tiles' feature means (n, C) and their pixels' reflectance
    (per tile: (bands, pixels) of valid pixels, the physical values the network reads: raw x scale
    + offset, whatever the raster stores); ``groups`` (each tile's site): the percentiles
    come from tiles scored without their site."""
    stats = _fit_features(vectors, feature, k)
    if groups is not None and len(set(groups)) > 2:
        groups = np.asarray(groups)
        maha, res = np.zeros(len(vectors)), np.zeros(len(vectors))
        for g in np.unique(groups):
            held = groups == g
            m, r = _fit_features(vectors[~held], feature, k).distances(vectors[held])
            maha[held], res[held] = m, r
    else:
        maha, res = stats.distances(vectors)
    pix = np.concatenate(reflectance, axis=1).astype(np.float64)
    low, high = np.percentile(pix, 0.5, axis=1), np.percentile(pix, 99.5, axis=1)
    outs = [float(((t < low[:, None]) | (t > high[:, None])).any(axis=0).mean()) for t in reflectance]
    return {"feature": feature, "mean": stats.mean.tolist(), "std": stats.std.tolist(),
            "components": stats.components.tolist(), "variances": stats.variances.tolist(), "maha_q95": float(np.percentile(maha, 95)),
            "res_q95": float(np.percentile(res, 95)), "toa_reflectance_low": low.tolist(),
            "toa_reflectance_high": high.tolist(), "bounds_units": BOUNDS_UNITS,
            "out_of_range_q95": max(1e-3, float(np.percentile(outs, 95))),
            "tiles": int(len(vectors)), "threshold": THRESHOLD,
            "calibration": "leave one site out" if groups is not None else "in sample"}


def tile_means(features: np.ndarray) -> np.ndarray:
    """(n, C, h, w) -> (n, C)."""
    return features.reshape(features.shape[0], features.shape[1], -1).mean(axis=2)


def out_of_range(rng: RawRange, tile: np.ndarray, valid: np.ndarray, a, b, step: int = 2,
                 raw: bool = False) -> float:
    """Share of a tile's valid pixels with a band outside the training range (``rng``: its
    bounds in the raster's own values, :meth:`OodStats.raw_range`): ``tile`` is the normalised
    input (bands, h, w) and (a, b) its normalisation (normalised = value * a + b), so the range
    is normalised instead of the tile; ``raw``: ``tile`` holds the raster's own integers,
    compared with the range's integer bounds (half the bytes of float32 to compare).  A value on
    the range's end, within float32 rounding, is inside, either way.  Every ``step``-th pixel
    each way (a share: a sample of a quarter of them gives it to a fraction of a percent)."""
    t, v = tile[:, ::step, ::step], valid[::step, ::step]
    n = int(v.sum())
    if n == 0:
        return 0.0
    if raw:
        lo, hi = _integer_bounds(rng, t.dtype)
        if lo is None:
            return 1.0
    else:
        low, high = _widened(rng)
        a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
        lo, hi = (low * a + b).astype(np.float32), (high * a + b).astype(np.float32)
        lo, hi = np.minimum(lo, hi).reshape(-1, 1, 1), np.maximum(lo, hi).reshape(-1, 1, 1)
    out = ((t < lo) | (t > hi)).any(axis=0)
    return float(np.count_nonzero(out & v) / n)


def _widened(rng) -> Tuple[np.ndarray, np.ndarray]:
    """The range's ends (float64) moved out by float32 rounding: a value that a few units in
    the last place separate from an end is on it."""
    low = np.minimum(rng.low, rng.high).astype(np.float64)
    high = np.maximum(rng.low, rng.high).astype(np.float64)
    return (low - 4 * np.spacing(np.abs(low).astype(np.float32)).astype(np.float64),
            high + 4 * np.spacing(np.abs(high).astype(np.float32)).astype(np.float64))


def _integer_bounds(rng, dtype):
    """``(lo, hi)`` (bands, 1, 1) of ``dtype`` with ``value < lo or value > hi`` exactly where an
    integer value lies outside the range; ``(None, None)`` when a band's range holds no value of
    the type (every pixel out)."""
    info = np.iinfo(dtype)
    low, high = _widened(rng)
    lo, hi = np.ceil(low), np.floor(high)
    if (lo > info.max).any() or (hi < info.min).any() or (lo > hi).any():
        return None, None
    return (np.clip(lo, info.min, info.max).astype(dtype).reshape(-1, 1, 1),
            np.clip(hi, info.min, info.max).astype(dtype).reshape(-1, 1, 1))


MIN_VALID_SHARE = 0.5      # tiles mostly without data are scored but not judged (nor fitted: training)


@dataclass
class TileLog:
    """The tiles of a run: where they are (working grid pixels), their scores; a tile mostly
    without data (edge, area of interest, clouds) is scored but neither judged nor counted."""
    stats: OodStats
    boxes: List[Tuple[int, int, int, int]] = field(default_factory=list)   # x, y, w, h
    scores: List[float] = field(default_factory=list)
    out: List[float] = field(default_factory=list)
    pixels: List[int] = field(default_factory=list)

    def add(self, boxes, vectors, outs, pixels) -> None:
        self.boxes.extend(boxes)
        self.scores.extend(float(s) for s in self.stats.scores(vectors))
        self.out.extend(outs)
        self.pixels.extend(pixels)

    def judged(self) -> np.ndarray:
        """Which tiles hold enough data to be judged."""
        share = np.asarray([p / max(1, w * h) for p, (_, _, w, h) in zip(self.pixels, self.boxes)])
        return share >= MIN_VALID_SHARE if (share >= MIN_VALID_SHARE).any() else np.ones(len(share), bool)

    def unreliable(self) -> np.ndarray:
        return self.judged() & (np.asarray(self.scores) > self.stats.threshold)

    def summary(self) -> Dict[str, object]:
        if not self.scores:
            return {"ood_score": None, "ood": False, "unreliable_tiles": 0, "tiles_scored": 0,
                    "out_of_range_fraction": 0.0}
        judged = self.judged()
        sc = np.asarray(self.scores)[judged]
        px = np.asarray(self.pixels, np.float64)
        out = float((np.asarray(self.out) * px).sum() / max(1.0, px.sum()))
        score = float(np.median(sc))
        unreliable = int(self.unreliable().sum())
        unlike = score > SCENE_MEDIAN or unreliable >= UNRELIABLE_SHARE * len(sc) or out > OUT_OF_RANGE_SCENE
        return {"ood_score": round(score, 3), "ood": bool(unlike), "unreliable_tiles": unreliable,
                "tiles_scored": int(len(sc)), "out_of_range_fraction": round(out, 4),
                "tile_threshold": self.stats.threshold, "scene_threshold": SCENE_MEDIAN}


def warning(summary: Dict[str, object]) -> Optional[str]:
    """Plain words for a scene unlike the training data (None when it is like it)."""
    if not summary.get("ood"):
        if summary.get("unreliable_tiles"):
            return ("%d of %d tiles look unlike the training data (marked in the tiles layer): check the result "
                    "there with particular care" % (summary["unreliable_tiles"], summary["tiles_scored"]))
        return None
    return ("this scene is unlike the images the model learnt from (score %.2f, where up to 1 is like its "
            "training tiles; %d of %d tiles marked unreliable; %.1f %% of the pixels outside the training "
            "brightness range): do not trust this map without checking it against the image"
            % (summary["ood_score"], summary["unreliable_tiles"], summary["tiles_scored"],
               100 * summary["out_of_range_fraction"]))
