"""The "Change map…" dialog: the results to compare (class rasters or polygon layers, as edited),
their years when they do not record them, facilities, the output folder; runs in the task
manager, adds the change layers with their styles and opens the report."""
from __future__ import annotations

from typing import Optional

from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.gui import QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import QLineEdit

from ..inference import TailingsError
from ..inference.change import ChangeOptions
from ..qgis_glue import change_task, compat
from ..qgis_glue.results import RESULT_PROPERTY
from .layer_list import LayerList
from .task_dialog import TaskDialog


def _candidates():
    """Layers that can be compared: class rasters and polygon layers (results first)."""
    out = []
    for lyr in QgsProject.instance().mapLayers().values():
        kind = lyr.customProperty(RESULT_PROPERTY)
        if isinstance(lyr, QgsRasterLayer) and kind in ("classes", None):
            out.append((kind is None, lyr))
        elif isinstance(lyr, QgsVectorLayer) and lyr.geometryType() == compat.GEOMETRY_POLYGON and \
                kind in ("polygons", None):
            out.append((kind is None, lyr))
    return [lyr for _, lyr in sorted(out, key=lambda t: (t[0], t[1].name()))]


class ChangeDialog(TaskDialog):
    def __init__(self, iface=None, parent=None, out_dir: str = ""):
        super().__init__("change map", "Tick two or more results of the same ground from different years. Polygon "
                         "layers are read as you edited them (unsaved edits included): they are the truth, over the "
                         "raster they came from.", "Make the change map", parent=parent)
        self.iface = iface
        form = self.form
        self.results = LayerList(_candidates())
        self.results.setMinimumHeight(120)
        form.addRow("Results", self.results)
        self.years = QLineEdit()
        self.years.setPlaceholderText("recorded in the results (TM_DATE); else e.g. 2019,2021 in the order ticked")
        form.addRow("Years", self.years)
        self.facilities = QgsMapLayerComboBox()
        self.facilities.setFilters(compat.LAYER_POLYGON)
        self.facilities.setAllowEmptyLayer(True)
        self.facilities.setLayer(None)
        form.addRow("Facilities (optional)", self.facilities)
        self.field = QgsFieldComboBox()
        self.facilities.layerChanged.connect(self.field.setLayer)
        form.addRow("Facility id field", self.field)
        self.out = QgsFileWidget()
        self.out.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.out.setFilePath(out_dir)
        form.addRow("Output folder", self.out)

    def options(self) -> ChangeOptions:
        fac = self.facilities.currentLayer()
        years = tuple(y.strip() for y in self.years.text().split(",") if y.strip()) or None
        if fac is not None and not self.field.currentField():
            raise ValueError("choose the facilities' id field")
        return ChangeOptions(years=years, facility_field=self.field.currentField() or None if fac else None)

    def start(self, open_report: bool = True) -> Optional[change_task.ChangeTask]:
        out = self.out.filePath().strip()
        try:
            if not out:
                raise ValueError("choose an output folder")
            layers = self.results.chosen()
            if len(layers) < 2:
                raise ValueError("tick two or more results")
            task = change_task.start(layers, out, self.options(),
                                     self.iface.messageBar() if self.iface is not None else None,
                                     open_report=open_report, facilities=self.facilities.currentLayer())
        except (ValueError, TailingsError) as e:
            self.problem(str(e))
            return None
        return self.track(task, "comparing…")
