"""The panel's band mapping: one band picker per model input, pre-filled by band name."""
from __future__ import annotations

from typing import Dict, List, Optional

from qgis.gui import QgsRasterBandComboBox
from qgis.PyQt.QtWidgets import QComboBox, QFormLayout, QGroupBox

from ..inference import BandMappingError
from ..inference.model import bands as bandlib
from ..qgis_glue.layers import band_descriptions


class BandMappingBox(QGroupBox):
    """Rows of (model band, raster band picker) for a layer and a model; ``on_change`` is called
    when the user picks another band."""

    def __init__(self, on_change, parent=None):
        super().__init__("Band mapping", parent)
        self.setToolTip("Which raster band feeds each model input; pre-filled by band name")
        self.form = QFormLayout(self)
        self.form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.on_change = on_change
        self.rows: List[tuple] = []          # (model band name, QgsRasterBandComboBox)
        self.layer_id: Optional[str] = None  # what the rows were made for
        self.model: Optional[str] = None

    def rebuild(self, layer, model: Optional[str], info, preset: Optional[str]) -> None:
        """Rows for ``layer`` and the model ``info`` (``preset``: the chosen sensor preset)."""
        while self.form.rowCount():
            self.form.removeRow(0)
        self.rows = []
        if layer is None or isinstance(info, str):
            self.setEnabled(False)
            self.layer_id = self.model = None
            return
        self.setEnabled(True)
        try:
            guess = list(bandlib.map_bands(info.bands, band_descriptions(layer), preset).source_bands)
        except BandMappingError:  # no band found for an input: its row starts unset
            guess = []
        for i, name in enumerate(info.bands):
            combo = QgsRasterBandComboBox()
            combo.setShowNotSetOption(True)
            combo.setLayer(layer)
            combo.setBand(guess[i] if i < len(guess) else -1)
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
            combo.bandChanged.connect(self.on_change)
            b = bandlib.band(name)
            self.form.addRow("%s (%s)" % (name, b.common), combo)
            self.rows.append((name, combo))
        self.layer_id, self.model = layer.id(), model

    def mapping(self) -> Dict[str, int]:
        """Model band name -> 1-based raster band (set rows only)."""
        return {name: combo.currentBand() for name, combo in self.rows if combo.currentBand() > 0}

    def unset(self) -> List[str]:
        return [name for name, combo in self.rows if combo.currentBand() <= 0]

    def mapping_for(self, layer, model: Optional[str]) -> Optional[Dict[str, int]]:
        """The mapping when it was made for ``layer`` and ``model``, else None."""
        if layer is None or layer.id() != self.layer_id or model != self.model:
            return None
        return self.mapping() or None
