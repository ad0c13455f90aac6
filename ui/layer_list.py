"""A list of map layers with check boxes (the rasters to train on, the results to compare)."""
from __future__ import annotations

from typing import Iterable, List

from qgis.core import QgsProject
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QListWidget, QListWidgetItem


class LayerList(QListWidget):
    def __init__(self, layers: Iterable, check_first: bool = False, parent=None):
        super().__init__(parent)
        for lyr in layers:
            it = QListWidgetItem(lyr.name())
            it.setData(Qt.ItemDataRole.UserRole, lyr.id())
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Unchecked)
            self.addItem(it)
        if check_first and self.count():
            self.item(0).setCheckState(Qt.CheckState.Checked)

    def chosen(self) -> List:
        """The ticked layers, in the list's order."""
        return [QgsProject.instance().mapLayer(self.item(i).data(Qt.ItemDataRole.UserRole))
                for i in range(self.count()) if self.item(i).checkState() == Qt.CheckState.Checked]
