"""GaoFen-6 PMS (multispectral B1-B4, 8 m) and WFV (B1-B8, 16 m) deliveries: DN to top-of-atmosphere
reflectance.

A delivery is a GeoTIFF with an XML beside it (``..._L1A...-MUX.tiff`` + ``...-MUX.xml``; a WFV
tile ``...-1.tiff`` shares ``....xml``), root ``ProductMetaData`` with ``SatelliteID``,
``SensorID``, ``CenterTime`` and ``SolarZenith`` (and, in newer deliveries, ``AbsCeof``: the gains).
Radiance ``L = gain * DN + offset`` (W m-2 sr-1 um-1) with CRESDA's absolute calibration of that
sensor and year; reflectance ``rho = pi * L * d^2 / (ESUN * cos(theta_s))`` with ``d`` the Earth-Sun
distance in AU on the acquisition day and ``theta_s`` the solar zenith angle.

Coefficients: CRESDA publishes them per year; no CRESDA page with the GF-6 tables could be read
here, so the table below is the one open-source GF preprocessing tools agree on (GenghisYoung233/
Gaofen-Batch ``data/AtmosphericCorrectionParameter.yaml`` and ``RadiometricCorrectionParameter.json``,
Terryzzyyhh/PreProcess-GF, desertstsung/Snowy-Dove, ACOLITE ``gf/l1_convert.py`` for 2020); where
they disagree the majority is kept (PMS 2019 B4 0.0289, PMS 2020 PAN 0.0537, WFV 2018 B6 0.0450).
Offsets are 0 in all of them.  ESUN: the same sources.  A year after the table's last uses the last
one, with a warning; ``calibration`` (a JSON file of the same shape) replaces the table.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import re
from typing import Dict, List, Optional, Tuple

from ...errors import InputError
from . import Product
from .xml_elements import XmlError, elements

# gains (offset 0), per sensor and year; PMS: the multispectral bands B1-B4 (MUX)
GAINS: Dict[str, Dict[str, List[float]]] = {
    "PMS": {"2018": [0.0825, 0.0663, 0.0513, 0.0298], "2019": [0.0847, 0.0653, 0.0491, 0.0289],
            "2020": [0.0820, 0.0645, 0.0489, 0.0286], "2021": [0.0821, 0.0671, 0.0518, 0.0310],
            "2022": [0.0892, 0.0666, 0.0517, 0.0320]},
    "WFV": {"2018": [0.0667, 0.0517, 0.0485, 0.0298, 0.0530, 0.0450, 0.0814, 0.0559],
            "2019": [0.0705, 0.0567, 0.0516, 0.0322, 0.0532, 0.0453, 0.0786, 0.0585],
            "2020": [0.0675, 0.0552, 0.0513, 0.0314, 0.0519, 0.0454, 0.0718, 0.0596],
            "2021": [0.0633, 0.0532, 0.0508, 0.0325, 0.0523, 0.0463, 0.0670, 0.0591],
            "2022": [0.0631, 0.0469, 0.0443, 0.0297, 0.0503, 0.0439, 0.0775, 0.0505]},
}
ESUN = {"PMS": [1945.50, 1832.38, 1558.18, 1090.77],
        "WFV": [1952.16, 1847.43, 1554.76, 1074.06, 1412.00, 1267.39, 1792.64, 1736.92]}
BAND_NAMES = {"PMS": ["GF6-PMS:B%d" % i for i in range(1, 5)], "WFV": ["GF6-WFV:B%d" % i for i in range(1, 9)]}
LOCAL_SOLAR_TIME_H = 10.5   # GF-6's sun-synchronous overpass (descending node 10:30)


def find_xml(path: str) -> Optional[str]:
    """The delivery XML beside a GF-6 GeoTIFF, when there is one."""
    stem = os.path.splitext(path)[0]
    for cand in (stem + ".xml", re.sub(r"-\d+$", "", stem) + ".xml", re.sub(r"_ortho$", "", stem, flags=re.I) + ".xml"):
        if os.path.isfile(cand):
            return cand
    return None


def _fields(xml_path: str) -> Dict[str, str]:
    try:
        with open(xml_path, "rb") as f:
            els = elements(f.read())
    except XmlError as e:
        raise InputError("cannot read %s: it is not complete XML (%s)" % (os.path.basename(xml_path), e)) from None
    if not els or els[0].tag != "ProductMetaData":
        return {}
    return {el.tag: el.text.strip() for el in els}


def sensor_of(sensor_id: str) -> Optional[str]:
    s = sensor_id.upper()
    return "PMS" if s.startswith("PMS") else "WFV" if s.startswith("WFV") else None


def earth_sun_distance(day_of_year: int) -> float:
    """In AU (the formula ACOLITE uses)."""
    g = math.radians(0.9856002831 * day_of_year - 3.4532868)
    return 1.00014 - 0.01671 * math.cos(g) - 0.00014 * math.cos(2 * g)


def solar_zenith(when: datetime.datetime, lat: float, lon: float) -> float:
    """Degrees, for a UTC time (NOAA's low-precision formulas: a few tenths of a degree)."""
    doy = when.timetuple().tm_yday
    hour = when.hour + when.minute / 60.0 + when.second / 3600.0
    g = 2 * math.pi / 365.0 * (doy - 1 + (hour - 12) / 24.0)
    decl = (0.006918 - 0.399912 * math.cos(g) + 0.070257 * math.sin(g) - 0.006758 * math.cos(2 * g)
            + 0.000907 * math.sin(2 * g) - 0.002697 * math.cos(3 * g) + 0.00148 * math.sin(3 * g))
    eqtime = 229.18 * (0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g) - 0.014615 * math.cos(2 * g)
                       - 0.040849 * math.sin(2 * g))
    tst = hour * 60.0 + eqtime + 4.0 * lon
    ha = math.radians(tst / 4.0 - 180.0)
    phi = math.radians(lat)
    cosz = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    return math.degrees(math.acos(max(-1.0, min(1.0, cosz))))


def _time(text: str) -> Optional[datetime.datetime]:
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%d"):
        try:
            return datetime.datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
    return None


def _check_gains(values, n: int, sensor: str, where: str) -> List[float]:
    """``values`` as ``n`` positive finite gains, or an error naming where they come from and what is wrong."""
    if not isinstance(values, (list, tuple)) or len(values) != n:
        raise InputError("%s: the GF-6 %s gains must be a list of %d numbers (one per band), got %r"
                         % (where, sensor, n, values))
    out = []
    for i, v in enumerate(values, start=1):
        try:
            g = float(v) if not isinstance(v, bool) else math.nan
        except (TypeError, ValueError):
            g = math.nan
        if not (math.isfinite(g) and g > 0):
            raise InputError("%s: the GF-6 %s gain of band B%d is %r; expected a positive number (W m-2 sr-1 um-1 "
                             "per DN, e.g. 0.05)" % (where, sensor, i, v))
        out.append(g)
    return out


def _gains(sensor: str, year: int, calibration: Optional[str], xml_gains: Optional[List[float]], n: int):
    """(gains, where they came from, a warning or None)."""
    if xml_gains is not None:
        return xml_gains, "the delivery's AbsCeof", None
    table, source = GAINS, "CRESDA's %d coefficients (table in inference/input/products/gf6.py)" % year
    where = "inference/input/products/gf6.py"
    if calibration:
        try:
            with open(calibration, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as e:
            raise InputError("cannot read the calibration table %s: %s" % (calibration, e)) from None
        table = data.get("GF6", data) if isinstance(data, dict) else None
        if not isinstance(table, dict):
            raise InputError("the calibration table %s is not a JSON object of gains per sensor and year "
                             "({\"PMS\": {\"2023\": [g1, g2, g3, g4]}})" % calibration)
        source, where = "%s, %d" % (calibration, year), calibration
    by_year = table.get(sensor) or {}
    if not isinstance(by_year, dict):
        raise InputError("%s: the GF-6 %s entry must map years to gains ({\"2023\": [g1, g2...]}), got %r"
                         % (where, sensor, by_year))
    years = {}
    for y in by_year:
        try:
            years[int(y)] = y
        except ValueError:
            raise InputError("%s: %r is not a year (the GF-6 %s gains are given per year: {\"2023\": [...]})"
                             % (where, y, sensor)) from None
    if not years:
        raise InputError("%s has no GF-6 %s coefficients" % (where, sensor))
    use = max([y for y in years if y <= year] or [min(years)])
    warning = None
    if use != year:
        warning = ("no GF-6 %s calibration for %d in the table: used %d's coefficients (give a calibration "
                   "table for %d to do better)" % (sensor, year, use, year))
        source = source.replace(str(year), str(use))
    return _check_gains(by_year[years[use]], n, sensor, "%s (%d)" % (where, use)), source, warning


def _zenith(text: Optional[str], label: str) -> float:
    """The delivery's SolarZenith in degrees: a number from 0 to 90 (the sun above the horizon)."""
    if text is None:
        raise InputError("%s gives no SolarZenith" % label)
    try:
        zen = float(text)
    except ValueError:
        zen = math.nan
    if not (math.isfinite(zen) and 0 <= zen < 90):
        raise InputError("%s: SolarZenith is %r; expected degrees from 0 to under 90 (the sun above the horizon)"
                         % (label, text))
    return zen


def read_product(path: str, count: int, calibration: Optional[str] = None) -> Optional[Product]:
    """The GF-6 product of ``path`` when a delivery XML is beside it; None for other rasters."""
    xml = find_xml(path)
    if xml is None:
        return None
    f = _fields(xml)
    if not f or not f.get("SatelliteID", "").upper().startswith("GF6"):
        return None
    sensor = sensor_of(f.get("SensorID", ""))
    if sensor is None:
        raise InputError("%s: GF-6 sensor %r is not one Tailings Mapper knows (PMS or WFV); give --input-scale "
                         "and --input-offset to read its DN as reflectance" % (os.path.basename(xml), f.get("SensorID")))
    if count != len(ESUN[sensor]):
        raise InputError("%s is a GF-6 %s product (%d bands) but the raster has %d bands (PMS: the multispectral "
                         "MUX file, not PAN)" % (os.path.basename(xml), sensor, len(ESUN[sensor]), count))
    when = _time(f.get("CenterTime") or f.get("StartTime") or "")
    if when is None:
        raise InputError("%s gives no acquisition time (CenterTime): the Earth-Sun distance is unknown"
                         % os.path.basename(xml))
    notes, warnings = [], []
    zen = _zenith(f.get("SolarZenith"), os.path.basename(xml))
    try:   # some deliveries are said to give the elevation under that name: check it against the sun
        lat, lon = float(f["CenterLatitude"]), float(f["CenterLongitude"])
        if not (abs(lat) <= 90 and abs(lon) <= 360):   # nan, or nonsense: no check
            raise ValueError(lat, lon)
        # CenterTime is Beijing time in the deliveries seen; ReceiveTime UTC: try both
        calc = min((solar_zenith(when - datetime.timedelta(hours=h), lat, lon) for h in (8, 0)),
                   key=lambda z: min(abs(z - zen), abs(90 - z - zen)))
        if zen > 0 and abs((90.0 - zen) - calc) + 5 < abs(zen - calc):
            notes.append("SolarZenith %.2f is the sun's elevation (the zenith computed for %s at the scene "
                         "centre is %.1f): zenith %.2f used" % (zen, when, calc, 90 - zen))
            zen = 90.0 - zen
    except (KeyError, ValueError):
        pass
    n = len(ESUN[sensor])
    xml_gains = None
    if f.get("AbsCeof"):
        values = [v.strip() for v in f["AbsCeof"].split(",")]
        if len(values) == n:
            xml_gains = _check_gains(values, n, sensor, "%s AbsCeof" % os.path.basename(xml))
        else:
            warnings.append("%s: AbsCeof gives %d values for the %d bands of GF-6 %s: ignored, the "
                            "calibration table's gains used" % (os.path.basename(xml), len(values), n, sensor))
    gains, source, warn = _gains(sensor, when.year, calibration, xml_gains, n)
    if warn:
        warnings.append(warn)
    doy = when.timetuple().tm_yday
    d = earth_sun_distance(doy)
    k = math.pi * d * d / math.cos(math.radians(zen))
    radiometry = tuple((k * g / e, 0.0) for g, e in zip(gains, ESUN[sensor]))
    note = ("GF-6 %s TOA reflectance = pi x (gain x DN) x d^2 / (ESUN x cos %.2f deg); d = %.5f AU (day %d); "
            "gains from %s" % (sensor, zen, d, doy, source))
    return Product(sensor="GF6 " + sensor, level=f.get("ProductLevel", ""), date=when.date().isoformat(),
                   radiometry=radiometry, radiometry_note=note, band_names=tuple(BAND_NAMES[sensor]),
                   notes=tuple(notes), warnings=tuple(warnings))


def reflectance_without_xml(sensor: str, date: str, lat: float, lon: float,
                            calibration: Optional[str] = None) -> Tuple[Tuple[Tuple[float, float], ...], str, str]:
    """For a GF-6 GeoTIFF delivered without its XML: the user's date (its year selects the
    calibration) and the sun at GF-6's 10:30 local solar time at the scene centre.
    Returns ``(radiometry, note, warning)``."""
    day = datetime.datetime.strptime(date[:10] if len(date) >= 10 else date[:4] + "-07-01", "%Y-%m-%d")
    utc = day + datetime.timedelta(hours=LOCAL_SOLAR_TIME_H - lon / 15.0)
    zen = solar_zenith(utc, lat, lon)
    if zen >= 90:
        raise InputError("the sun is %.1f deg from the zenith at GF-6's 10:30 overpass on %s at the scene centre "
                         "(%.2f, %.2f): no reflectance can be computed from an assumed sun; put the delivery XML "
                         "beside the raster, or give --input-scale" % (zen, day.date(), lat, lon))
    gains, source, warn = _gains(sensor, day.year, calibration, None, len(ESUN[sensor]))
    doy = day.timetuple().tm_yday
    d = earth_sun_distance(doy)
    k = math.pi * d * d / math.cos(math.radians(zen))
    radiometry = tuple((k * g / e, 0.0) for g, e in zip(gains, ESUN[sensor]))
    warning = ("GF-6 %s without its delivery XML: reflectance computed for %s with the sun at GF-6's 10:30 "
               "local overpass (zenith %.1f deg at the scene centre) and %s%s" % (
                   sensor, day.date(), zen, source, "; " + warn if warn else ""))
    return radiometry, "GF-6 %s TOA reflectance (assumed sun and calibration: see the warning)" % sensor, warning
