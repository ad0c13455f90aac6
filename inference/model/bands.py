"""Band names, sensor presets, and mapping a raster's bands onto a model's inputs.

A band is named ``SENSOR:BAND`` (``S2:B04``, ``GF6-PMS:B3``, ``GF6-WFV:B7``) or by a
generic common name (``blue``, ``green``, ``red``, ``nir``...).  Every named band has
a common name and a centre wavelength, so a model trained on ``S2:B04`` can read the
red band of a GF-6 scene: an exact name match is preferred, a match by common name is
accepted and reported.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from ..errors import BandMappingError


@dataclass(frozen=True)
class Band:
    name: str            # canonical: "S2:B04", "GF6-PMS:B3" or a generic "red"
    common: str          # "coastal", "blue", "green", "yellow", "red", "rededge1".., "nir", "swir1"...
    wavelength_nm: float  # centre wavelength
    gsd_m: Optional[float] = None

    @property
    def sensor(self) -> Optional[str]:
        return self.name.split(":", 1)[0] if ":" in self.name else None


def _s2(code, common, wl, gsd):
    return Band("S2:" + code, common, wl, gsd)


SENTINEL2 = [
    _s2("B01", "coastal", 443, 60), _s2("B02", "blue", 490, 10), _s2("B03", "green", 560, 10),
    _s2("B04", "red", 665, 10), _s2("B05", "rededge1", 705, 20), _s2("B06", "rededge2", 740, 20),
    _s2("B07", "rededge3", 783, 20), _s2("B08", "nir", 842, 10), _s2("B8A", "nir08", 865, 20),
    _s2("B09", "watervapour", 945, 60), _s2("B10", "cirrus", 1375, 60), _s2("B11", "swir16", 1610, 20),
    _s2("B12", "swir22", 2190, 20),
]
GF6_PMS = [
    Band("GF6-PMS:B1", "blue", 485, 8), Band("GF6-PMS:B2", "green", 555, 8),
    Band("GF6-PMS:B3", "red", 660, 8), Band("GF6-PMS:B4", "nir", 830, 8),
]
GF6_WFV = [
    Band("GF6-WFV:B1", "blue", 485, 16), Band("GF6-WFV:B2", "green", 555, 16),
    Band("GF6-WFV:B3", "red", 660, 16), Band("GF6-WFV:B4", "nir", 830, 16),
    Band("GF6-WFV:B5", "rededge1", 710, 16), Band("GF6-WFV:B6", "rededge2", 750, 16),
    Band("GF6-WFV:B7", "coastal", 425, 16), Band("GF6-WFV:B8", "yellow", 610, 16),
]
GENERIC = [
    Band("coastal", "coastal", 443), Band("blue", "blue", 490), Band("green", "green", 560),
    Band("yellow", "yellow", 610), Band("red", "red", 665), Band("rededge1", "rededge1", 705),
    Band("rededge2", "rededge2", 740), Band("rededge3", "rededge3", 783), Band("nir", "nir", 842),
    Band("nir08", "nir08", 865), Band("swir16", "swir16", 1610), Band("swir22", "swir22", 2190),
]
CATALOGUE: Dict[str, Band] = {b.name.upper(): b for b in SENTINEL2 + GF6_PMS + GF6_WFV + GENERIC}

# Aliases of common names seen in band descriptions of exported rasters.
_COMMON_ALIASES = {
    "r": "red", "g": "green", "b": "blue", "n": "nir", "nir": "nir", "near infrared": "nir",
    "near-infrared": "nir", "nearinfrared": "nir", "red": "red", "green": "green", "blue": "blue",
    "coastal": "coastal", "aerosol": "coastal", "yellow": "yellow",
}


def positional(i: int) -> str:
    """The name of a model input read from raster band ``i`` (1-based) whatever it holds: models
    that do not name their bands (Deepness's without metadata) read the raster's first bands."""
    return "band%d" % i


def position(name: str) -> Optional[int]:
    """The raster band a positional input name (``band3``) reads, else None."""
    m = re.fullmatch(r"BAND(\d+)", name.strip().upper())
    return int(m.group(1)) if m and int(m.group(1)) >= 1 else None


def band(name: str) -> Band:
    """The catalogue entry of a band name (case-insensitive); generic and positional (``band1``)
    names are accepted."""
    key = name.strip().upper()
    if key in CATALOGUE:
        return CATALOGUE[key]
    if position(key):
        return Band(positional(position(key)), "band %d" % position(key), 0.0)
    m = re.fullmatch(r"S2:B0?(\d{1,2}|8A)", key)
    if m:
        code = m.group(1)
        code = "B8A" if code == "8A" else "B%02d" % int(code)
        if "S2:" + code in CATALOGUE:
            return CATALOGUE["S2:" + code]
    raise BandMappingError(
        "unknown band name %r: use SENSOR:BAND (e.g. S2:B04, GF6-PMS:B3) or a common name "
        "(blue, green, red, nir...)" % name)


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    bands: tuple  # band names in raster order

    def describe(self) -> str:
        return "%s: %s" % (self.label, ", ".join(self.bands))


def _p(key, label, names):
    return Preset(key, label, tuple(names))


PRESETS: Dict[str, Preset] = {p.key: p for p in [
    _p("s2-l1c", "Sentinel-2 L1C, 13 bands",
       ["S2:B01", "S2:B02", "S2:B03", "S2:B04", "S2:B05", "S2:B06", "S2:B07", "S2:B08", "S2:B8A",
        "S2:B09", "S2:B10", "S2:B11", "S2:B12"]),
    _p("s2-l2a", "Sentinel-2 L2A, 12 bands",
       ["S2:B01", "S2:B02", "S2:B03", "S2:B04", "S2:B05", "S2:B06", "S2:B07", "S2:B08", "S2:B8A",
        "S2:B09", "S2:B11", "S2:B12"]),
    _p("s2-l2a-10", "Sentinel-2 L2A, 10 bands (no B01, B09)",
       ["S2:B02", "S2:B03", "S2:B04", "S2:B05", "S2:B06", "S2:B07", "S2:B08", "S2:B8A",
        "S2:B11", "S2:B12"]),
    _p("s2-rgb", "Sentinel-2 true colour B4, B3, B2", ["S2:B04", "S2:B03", "S2:B02"]),
    _p("s2-bgr", "Sentinel-2 B2, B3, B4", ["S2:B02", "S2:B03", "S2:B04"]),
    _p("s2-rgbn", "Sentinel-2 B4, B3, B2, B8", ["S2:B04", "S2:B03", "S2:B02", "S2:B08"]),
    _p("s2-bgrn", "Sentinel-2 B2, B3, B4, B8", ["S2:B02", "S2:B03", "S2:B04", "S2:B08"]),
    _p("gf6-pms", "GF-6 PMS multispectral, 4 bands", [b.name for b in GF6_PMS]),
    _p("gf6-wfv", "GF-6 WFV, 8 bands", [b.name for b in GF6_WFV]),
    _p("rgb", "Generic RGB", ["red", "green", "blue"]),
    _p("bgr", "Generic BGR", ["blue", "green", "red"]),
    _p("rgbn", "Generic RGB + NIR", ["red", "green", "blue", "nir"]),
    _p("bgrn", "Generic B, G, R, NIR (GF-6 PMS, PlanetScope, Sentinel-2 B2-B4 + B8 stacks)",
       ["blue", "green", "red", "nir"]),
]}

# What a raster whose bands carry no names most likely is, by band count.  A 4-band raster is
# blue-first far more often than not (GF-6 PMS, PlanetScope, Sentinel-2 B2, B3, B4, B8 stacks);
# a 3-band one is a true-colour RGB.  A guess is always reported as such.
BY_COUNT = {3: "rgb", 4: "bgrn", 8: "gf6-wfv", 12: "s2-l2a", 13: "s2-l1c"}


def preset(key: str) -> Preset:
    try:
        return PRESETS[key.strip().lower()]
    except KeyError:
        raise BandMappingError("unknown sensor preset %r; known presets: %s"
                               % (key, ", ".join(PRESETS))) from None


_DESC_S2 = re.compile(r"(?:S2[:_ ]?)?B(?:AND)?[ _]?0?(\d{1,2}|8A)\b", re.I)


def parse_description(text: str, sensor_hint: Optional[str] = None) -> Optional[Band]:
    """Identify a band from its GDAL description ("B4", "B04", "S2:B04", "red", "GF6-PMS:B3").

    Bare ``Bn`` names are read in the family of ``sensor_hint`` ("S2", "GF6-PMS",
    "GF6-WFV"; Sentinel-2 when none).  Returns None when nothing is recognised.
    """
    if not text:
        return None
    t = text.strip()
    try:
        if ":" in t:
            return band(t)
    except BandMappingError:
        pass
    low = t.lower().strip()
    if low in _COMMON_ALIASES:
        return CATALOGUE[_COMMON_ALIASES[low].upper()]
    m = _DESC_S2.search(t)
    if m:
        code = m.group(1).upper()
        family = (sensor_hint or "S2").upper()
        if family == "S2":
            code = "B8A" if code == "8A" else "B%02d" % int(code)
            return CATALOGUE.get("S2:" + code)
        if code.isdigit():
            return CATALOGUE.get("%s:B%d" % (family, int(code)))
        return None
    for word in re.split(r"[^a-z]+", t.lower()):
        if word in ("red", "green", "blue", "nir", "coastal", "yellow"):
            return CATALOGUE[word.upper()]
    return None


def identify_bands(descriptions: Sequence[str], preset_key: Optional[str] = None) -> List[Optional[Band]]:
    """Band identities of a raster, from a preset (given) or from band descriptions.

    A preset must have as many bands as the raster.  Without a preset, descriptions
    are parsed; unrecognised bands are None.
    """
    if preset_key:
        p = preset(preset_key)
        if len(p.bands) != len(descriptions):
            raise BandMappingError(
                "sensor preset %r has %d bands but the raster has %d"
                % (p.key, len(p.bands), len(descriptions)))
        return [band(n) for n in p.bands]
    return [parse_description(d) for d in descriptions]


def detect_preset(descriptions: Sequence[str], by_count: bool = False) -> Optional[str]:
    """The preset whose band list the raster's descriptions spell out, if any; with
    ``by_count``, when no band has a recognisable name, the usual layout for the band count
    (:data:`BY_COUNT`)."""
    ids = identify_bands(descriptions)
    if all(ids):
        names = tuple(b.name for b in ids)
        for p in PRESETS.values():
            if p.bands == names:
                return p.key
    if by_count and not any(ids):
        return BY_COUNT.get(len(descriptions))
    return None


@dataclass
class BandMapping:
    """For each model input (in model order), the 1-based raster band that feeds it."""
    source_bands: List[int]
    notes: List[str]
    warnings: List[str] = field(default_factory=list)   # the order is a guess, and so on

    def as_text(self, model_bands: Sequence[str]) -> str:
        return ", ".join("%s<-band %d" % (m, s) for m, s in zip(model_bands, self.source_bands))


def parse_mapping_text(text: str, model_bands: Sequence[str]) -> Dict[str, int]:
    """Parse a command-line mapping: ``3,2,1`` (raster band per model input, in model
    order) or ``S2:B04=3,S2:B03=2,S2:B02=1`` (model band name = raster band)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise BandMappingError("empty band mapping")
    out: Dict[str, int] = {}
    if all("=" not in p for p in parts):
        if len(parts) != len(model_bands):
            raise BandMappingError(
                "band mapping %r gives %d bands but the model reads %d (%s)"
                % (text, len(parts), len(model_bands), ", ".join(model_bands)))
        for name, p in zip(model_bands, parts):
            out[name] = _band_index(p)
        return out
    by_upper = {m.upper(): m for m in model_bands}
    for p in parts:
        if "=" not in p:
            raise BandMappingError("mix of plain and NAME=BAND entries in band mapping %r" % text)
        k, v = (s.strip() for s in p.split("=", 1))
        if k.upper() not in by_upper:
            raise BandMappingError("band mapping names %r, which the model does not read (it reads %s)"
                                   % (k, ", ".join(model_bands)))
        out[by_upper[k.upper()]] = _band_index(v)
    return out


def _band_index(text: str) -> int:
    try:
        i = int(text)
    except ValueError:
        raise BandMappingError("raster band %r is not a band number (1, 2, 3...)" % text) from None
    if i < 1:
        raise BandMappingError("raster band numbers start at 1, got %d" % i)
    return i


def map_bands(model_bands: Sequence[str], raster_descriptions: Sequence[str],
              preset_key: Optional[str] = None, explicit: Optional[Dict[str, int]] = None) -> BandMapping:
    """Map each model input onto a raster band.

    ``explicit`` (model band name -> 1-based raster band) wins for the names it gives;
    the rest are found by name: exact band name first, then the same common name
    (e.g. GF6-PMS:B3 for S2:B04, both red).  A model input that finds no band is an
    error naming it.
    """
    n = len(raster_descriptions)
    by_upper = {m.upper(): m for m in model_bands}
    unknown = [k for k in (explicit or {}) if str(k).strip().upper() not in by_upper]
    if unknown:
        raise BandMappingError("band mapping names %s, which the model does not read (it reads %s)"
                               % (", ".join(repr(k) for k in unknown), ", ".join(model_bands)))
    explicit = {by_upper[str(k).strip().upper()]: int(v) for k, v in (explicit or {}).items()}
    implicit = [m for m in model_bands if m not in explicit and position(m)]
    if implicit and max(position(m) for m in implicit) > n:
        raise BandMappingError("the model names no bands, so it reads the raster's first %d bands in order, but the "
                               "raster has only %d band%s; give a band mapping of %d raster bands"
                               % (len(model_bands), n, "" if n == 1 else "s", len(model_bands)))
    for m in implicit:   # a positional input reads its band unless the mapping says otherwise
        explicit[m] = position(m)
    ids = identify_bands(raster_descriptions, preset_key)
    guessed = None
    if not preset_key and not any(ids) and any(m not in explicit for m in model_bands):
        # Nothing names the bands: fall back on the usual layout for the band count.
        guessed = detect_preset(raster_descriptions, by_count=True)
        if guessed:
            ids = identify_bands(raster_descriptions, guessed)
    result: List[int] = []
    notes: List[str] = []
    for name in model_bands:
        want = band(name)
        if name in explicit:
            idx = explicit[name]
            if not 1 <= idx <= n:
                raise BandMappingError("band mapping sends raster band %d to %s, but band %d does not exist: "
                                       "the raster has only %d band%s" % (idx, name, idx, n, "" if n == 1 else "s"))
            result.append(idx)
            continue
        exact = [i for i, b in enumerate(ids) if b is not None and b.name == want.name]
        if exact:
            result.append(exact[0] + 1)
            continue
        same = [i for i, b in enumerate(ids) if b is not None and b.common == want.common]
        if same:
            got = ids[same[0]]
            result.append(same[0] + 1)
            if got.name != want.name:
                notes.append("%s read from band %d (%s, same common name %r)" % (name, same[0] + 1, got.name, want.common))
            continue
        known = ", ".join("%d=%s" % (i + 1, b.name if b else "?") for i, b in enumerate(ids))
        raise BandMappingError(
            "the model needs band %s (%s, %g nm) and none of the raster's %d bands is one (%s); "
            "choose a sensor preset or give an explicit band mapping"
            % (want.name, want.common, want.wavelength_nm, n, known))
    warnings = []
    if guessed:
        warnings.append(
            "the band order is a guess: the raster's bands carry no names, so they are read as the usual "
            "%d-band layout, preset %r (%s): %s. If the bands are in another order (a stack of B02, B03, "
            "B04 is blue first), choose the sensor preset or give the band mapping"
            % (n, guessed, PRESETS[guessed].describe(),
               ", ".join("%s <- band %d" % (m, s) for m, s in zip(model_bands, result))))
    return BandMapping(result, notes, warnings)


def guess_warnings(model_bands: Sequence[str], raster_descriptions: Sequence[str],
                   source_bands: Sequence[int]) -> List[str]:
    """The warning of a guessed band order when ``source_bands`` (a mapping given as explicit, e.g.
    the panel's pickers pre-filled with the guess) is the very guess :func:`map_bands` makes for a
    raster whose bands carry no names: an order nobody checked stays a guess, whoever passes it on."""
    try:
        guess = map_bands(model_bands, raster_descriptions)
    except BandMappingError:
        return []
    return list(guess.warnings) if list(guess.source_bands) == list(source_bands) else []
