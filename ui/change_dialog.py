"""The "Change map…" dialog: the results to compare (class rasters or polygon layers, as edited),
one row each, named by its run, in the order of the dates they record (TM_DATE), with a year
the user can fix; facilities, the output folder; runs in the task manager, adds the change
layers with their styles and opens the report."""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.gui import QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from ..inference import TailingsError
from ..inference.change import ChangeOptions
from ..inference.change.inputs import recorded_date
from ..qgis_glue import change_task, compat
from ..qgis_glue.layers import layer_path
from ..qgis_glue.results import RESULT_PROPERTY
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


def run_name(layer) -> str:
    """The run a result layer came from: its group in the layer tree (``<source> – tailings
    <date time>``), else its file's stem without ``_classes`` / ``_polygons``."""
    node = QgsProject.instance().layerTreeRoot().findLayer(layer.id())
    parent = node.parent() if node is not None else None
    if parent is not None and parent.parent() is not None and parent.name():
        return parent.name()
    stem = os.path.splitext(os.path.basename(layer.source().split("|")[0]))[0]
    for end in ("_classes", "_polygons"):
        if stem.endswith(end):
            stem = stem[:-len(end)]
    return stem


def row_name(layer) -> str:
    """A result's row: the layer's name first (classes or polygons), then its run, without the
    source's name when the layer's already says it (``tile_094 classes (tailings 2024-03-01 09:00:00)``)."""
    run = run_name(layer)
    source = run.split(" – ")[0]
    if source and run != source and layer.name().startswith(source):
        run = run[len(source):].lstrip(" –")
    return "%s (%s)" % (layer.name(), run) if run and run != layer.name() else layer.name()


class ResultRows(QTableWidget):
    """One row per result: ticked or not, its run and layer, the date it records, its year
    (editable); in the order of the dates (undated last)."""
    NAME, DATE, YEAR = range(3)

    def __init__(self, layers, parent=None):
        super().__init__(0, 3, parent)
        self.setHorizontalHeaderLabels(["Result (layer and its run)", "Recorded date", "Year"])
        self.verticalHeader().setVisible(False)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        rows = []
        for lyr in layers:
            try:
                date = recorded_date(result_file(lyr))
            except ValueError:
                date = None
            rows.append((date or "9999", lyr.name(), lyr, date))
        for _, _, lyr, date in sorted(rows, key=lambda r: (r[0], r[1])):
            r = self.rowCount()
            self.insertRow(r)
            name = QTableWidgetItem(row_name(lyr))
            name.setData(Qt.ItemDataRole.UserRole, lyr.id())
            name.setFlags((name.flags() | Qt.ItemFlag.ItemIsUserCheckable) & ~Qt.ItemFlag.ItemIsEditable)
            name.setCheckState(Qt.CheckState.Unchecked)
            name.setToolTip(lyr.source())
            when = QTableWidgetItem(date or "not recorded")
            when.setFlags(when.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.setItem(r, self.NAME, name)
            self.setItem(r, self.DATE, when)
            self.setItem(r, self.YEAR, QTableWidgetItem(date[:4] if date else ""))
        self.horizontalHeader().setSectionResizeMode(self.NAME, QHeaderView.ResizeMode.Stretch)

    def count(self) -> int:
        return self.rowCount()

    def check(self, row: int, on: bool = True) -> None:
        self.item(row, self.NAME).setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def set_year(self, row: int, year: str) -> None:
        self.item(row, self.YEAR).setText(year)

    def chosen(self) -> List[Tuple[object, str]]:
        """``(layer, year)`` of the ticked rows, in the order of their years; a ticked row without
        a year (four digits) is an error naming it."""
        out = []
        for r in range(self.rowCount()):
            name = self.item(r, self.NAME)
            if name.checkState() != Qt.CheckState.Checked:
                continue
            year = self.item(r, self.YEAR).text().strip()
            if not (len(year) == 4 and year.isdigit()):
                raise ValueError("give the year of %s (four digits; it records no date)" % name.text()
                                 if not year else "the year of %s is %r: four digits" % (name.text(), year))
            out.append((QgsProject.instance().mapLayer(name.data(Qt.ItemDataRole.UserRole)), year))
        return sorted(out, key=lambda t: t[1])


def result_file(layer) -> str:
    """The file (``path|layername=L`` for polygons) whose metadata records a result's date."""
    if isinstance(layer, QgsRasterLayer):
        return layer_path(layer)
    path, name = change_task._gpkg_and_layer(layer)
    return "%s|layername=%s" % (path, name) if name else path


class ChangeDialog(TaskDialog):
    def __init__(self, iface=None, parent=None, out_dir: str = ""):
        super().__init__("change map", "Tick two or more results of the same ground from different years; they are "
                         "compared in the order of their years (the date each records, else type its year). Polygon "
                         "layers are read as you edited them (unsaved edits included): they are the truth, over the "
                         "raster they came from.", "Make the change map", parent=parent)
        self.iface = iface
        form = self.form
        self.results = ResultRows(_candidates())
        self.results.setMinimumHeight(120)
        form.addRow("Results", self.results)
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

    def options(self, years: Optional[Tuple[str, ...]] = None) -> ChangeOptions:
        """The options of the change; ``years``: those of the chosen results, in their order."""
        fac = self.facilities.currentLayer()
        if fac is not None and not self.field.currentField():
            raise ValueError("choose the facilities' id field")
        return ChangeOptions(years=years, facility_field=self.field.currentField() or None if fac else None)

    def start(self, open_report: bool = True) -> Optional[change_task.ChangeTask]:
        out = self.out.filePath().strip()
        try:
            if not out:
                raise ValueError("choose an output folder")
            chosen = self.results.chosen()
            if len(chosen) < 2:
                raise ValueError("tick two or more results")
            layers = [lyr for lyr, _ in chosen]
            task = change_task.start(layers, out, self.options(tuple(y for _, y in chosen)),
                                     self.iface.messageBar() if self.iface is not None else None,
                                     open_report=open_report, facilities=self.facilities.currentLayer())
        except (ValueError, TailingsError) as e:
            self.problem(str(e))
            return None
        return self.track(task, "comparing…")
