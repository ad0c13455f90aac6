"""The segment algorithm's INPUT: a raster layer, or the path of a product the engine reads
itself (a Sentinel-2 SAFE folder or zip, its MTD_MSIL1C.xml / MTD_MSIL2A.xml, a folder of band
files), which QGIS cannot load as one layer.  The same parameter type as a raster layer (the
toolbox's layer picker, whose "..." also takes a zip or an MTD file; batch mode's text cells;
``qgis_process ... INPUT=/path/S2A_...SAFE.zip``), accepting those paths too."""
from __future__ import annotations

import os
from typing import Optional

from qgis.core import QgsProcessingParameterRasterLayer

from ..qgis_glue.layers import MTD_FILES as _MTD


def product_path(value) -> Optional[str]:
    """``value`` when it names a product folder, zip or MTD file that exists, else None (the
    engine says what is wrong with one it cannot read)."""
    if not isinstance(value, str) or not value.strip():
        return None
    path = value.strip()
    if os.path.isdir(path):
        return path
    if os.path.isfile(path) and (path.lower().endswith(".zip") or os.path.basename(path) in _MTD):
        return path
    return None


class RasterOrProductParameter(QgsProcessingParameterRasterLayer):
    def __init__(self, name: str, description: str = "", optional: bool = False):
        super().__init__(name, description, None, optional)

    def clone(self):
        c = RasterOrProductParameter(self.name(), self.description())
        c.setFlags(self.flags())
        c.setHelp(self.help())
        return c

    def checkValueIsAcceptable(self, value, context=None):  # noqa: N802
        if product_path(value) is not None:
            return True
        return super().checkValueIsAcceptable(value, context)
