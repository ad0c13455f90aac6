"""Satellite products as delivered: what they hold, and how their numbers become reflectance.

``Product`` is what a reader found: the sensor and product level, the processing baseline, the
acquisition date, the reflectance scaling per band (``reflectance = DN * scale + offset``) and
why, and a scene classification raster for masking clouds when the product has one.  Readers:
``sentinel2`` (a SAFE folder or zip, L1C and L2A; or a folder of band files) and ``gf6`` (a GF-6
PMS / WFV GeoTIFF with the delivery's XML beside it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class Product:
    sensor: str = ""                         # "Sentinel-2B", "GF6 PMS"...
    level: str = ""                          # "L1C", "L2A", "L1A"...
    baseline: Optional[str] = None           # Sentinel-2 processing baseline, e.g. "05.09"
    date: Optional[str] = None               # acquisition date, YYYY-MM-DD
    radiometry: Optional[Tuple[Tuple[float, float], ...]] = None   # per raster band: (scale, offset)
    radiometry_note: str = ""                # what the scaling is and where it came from
    scene_classes: Optional[str] = None      # a scene classification raster (Sentinel-2 L2A SCL)
    band_names: Tuple[str, ...] = ()         # the bands' names when the files carry none (GF-6)
    notes: Tuple[str, ...] = ()
    warnings: Tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [p for p in (self.sensor, self.level, "baseline %s" % self.baseline if self.baseline else "",
                             self.date or "") if p]
        return " ".join(parts)
