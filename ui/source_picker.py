"""The panel's other source: a Sentinel-2 product (a SAFE folder, a folder of band files or a zip)
given as a path, without a QGIS layer; and the acquisition date of whatever is segmented, pre-filled
from the product's metadata or the file's name, editable, recorded in the outputs (TM_DATE)."""
from __future__ import annotations

import os
from typing import Optional

from qgis.PyQt.QtCore import QObject, pyqtSignal
from qgis.PyQt.QtWidgets import QFileDialog, QLineEdit, QMenu, QPushButton, QWidget

from ..inference.run.options import check_date
from ..inference.input.raster import scene_date
from .narrow import breakable, stacked, wrapping_label

FOLDER, ZIP = "folder", "zip"


class ProductSource(QObject):
    """``button`` ("Open Sentinel-2 product…": a folder or a zip), ``label`` (the chosen product and
    how to go back to the layer); ``changed`` when a product is chosen or dropped."""

    changed = pyqtSignal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.path: Optional[str] = None
        self.button = QPushButton("Open Sentinel-2 product…")
        self.button.setToolTip("A SAFE folder or zip (L1C, L2A) or a folder of band files: segmented as it is, "
                               "no layer needed")
        menu = QMenu(self.button)
        menu.addAction("SAFE or band folder…", lambda: self.ask(FOLDER))
        menu.addAction("Zip file…", lambda: self.ask(ZIP))
        self.button.setMenu(menu)
        self.clear_button = QPushButton("Use the raster layer instead")
        self.clear_button.clicked.connect(lambda: self.set_path(None))
        self.clear_button.setVisible(False)
        self.label = wrapping_label()
        self.label.setVisible(False)

    def widget(self) -> QWidget:
        """The button, the product chosen and the way back to the layer, one under the other (hidden
        ones take no room)."""
        w = QWidget()
        w.setLayout(stacked(self.button, self.label, self.clear_button))
        return w

    def ask(self, kind: str) -> Optional[str]:
        if kind == ZIP:
            path, _ = QFileDialog.getOpenFileName(self.button, "Open a Sentinel-2 product (zip)", "",
                                                  "Sentinel-2 products (*.zip)")
        else:
            path = QFileDialog.getExistingDirectory(self.button, "Open a Sentinel-2 product (SAFE or band folder)")
        if path:
            self.set_path(path)
        return path or None

    def set_path(self, path: Optional[str]) -> None:
        self.path = os.path.abspath(path) if path else None
        self.label.setText("product: %s" % breakable(os.path.basename(self.path)) if self.path else "")
        self.label.setVisible(bool(self.path))
        self.clear_button.setVisible(bool(self.path))
        self.changed.emit()


class DateField(QLineEdit):
    """The acquisition date, YYYY-MM-DD (or YYYY-MM, YYYY); empty: not recorded."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setPlaceholderText("YYYY-MM-DD")
        self.setToolTip("The scene's acquisition date, recorded in the outputs (TM_DATE): the change dialog orders "
                        "runs by it. Pre-filled from the product's metadata or a date in the file's name.")
        self.filled_for: Optional[str] = None   # the source the date was pre-filled for

    def prefill(self, path: Optional[str]) -> None:
        """The date of ``path`` (product metadata, TM_DATE, or name), when the source changed."""
        if path == self.filled_for:
            return
        self.filled_for = path
        self.setText((scene_date(path) or "") if path else "")

    def date(self) -> Optional[str]:
        """The date typed, checked (ValueError naming the format); None when empty."""
        text = self.text().strip()
        return check_date(text) if text else None
