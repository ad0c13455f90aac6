"""The "Train a model from polygons" dialog: rasters, a label layer and its class field, the classes
(tailings, the ten mining components, or your own), an area, the model to start from; trains in
the task manager (``qgis_glue.fit_task``) with progress and Cancel."""
from __future__ import annotations

import os
import tempfile
from typing import Optional

from qgis.core import QgsFieldProxyModel, QgsProject, QgsRasterLayer
from qgis.gui import QgsFieldComboBox, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QComboBox

from ..inference import list_models
from ..inference.model.class_schemas import MINING10, SCHEMA_LABELS, TAILINGS
from ..qgis_glue import compat, deps
from ..qgis_glue import fit_task
from ..qgis_glue.layers import layer_path
from ..training.fit_options import BY_NAME as FIT, values
from .layer_list import LayerList
from .model_picker import schema_tooltip
from .option_widgets import OptionWidgets
from .task_dialog import TaskDialog

FROM_MODEL = "__model__"


class FitDialog(TaskDialog):
    def __init__(self, iface=None, parent=None, on_model=None):
        super().__init__("train a model from polygons", "Draw polygons of what the model should find (a field says "
                         "which class each is) over one or more rasters. Inside the area, everything you did not draw "
                         "is taught as background; without an area, only the ground near your polygons is.",
                         "Train", "Cancel training", parent=parent)
        self.iface, self.on_model = iface, on_model
        form = self.form
        self.rasters = LayerList([lyr for lyr in QgsProject.instance().mapLayers().values()
                                  if isinstance(lyr, QgsRasterLayer) and not lyr.customProperty("tailings_mapper/result")],
                                 check_first=True)
        self.rasters.setMaximumHeight(110)
        form.addRow("Rasters (scenes, years)", self.rasters)
        self.labels = QgsMapLayerComboBox()
        self.labels.setFilters(compat.LAYER_POLYGON)
        form.addRow("Label polygons", self.labels)
        self.field = QgsFieldComboBox()
        self.field.setAllowEmptyFieldName(True)
        self.field.setFilters(QgsFieldProxyModel.Filter.String | QgsFieldProxyModel.Filter.Int | QgsFieldProxyModel.Filter.LongLong)
        self.labels.layerChanged.connect(self.field.setLayer)
        self.field.setLayer(self.labels.currentLayer())
        self.field.setToolTip("Each polygon's class: a class name or id. Empty: every polygon is tailings (binary)")
        form.addRow("Class field", self.field)
        self.classes = QComboBox()
        self.classes.setEditable(True)
        self.classes.addItem("those of the model it starts from", FROM_MODEL)
        self.classes.addItem(SCHEMA_LABELS["tailings"], "tailings")
        self.classes.addItem(SCHEMA_LABELS["mining10"], "mining10")
        self.classes.setItemData(1, schema_tooltip(TAILINGS), Qt.ItemDataRole.ToolTipRole)
        self.classes.setItemData(2, schema_tooltip(MINING10), Qt.ItemDataRole.ToolTipRole)
        self.classes.setToolTip("A schema, or your own class names separated by commas (pit,dump,pond)<br><br>"
                                + schema_tooltip(MINING10))
        form.addRow("Classes", self.classes)
        # training's options the dialog shows as they are declared (training.fit_options)
        self.options = OptionWidgets(None, [FIT[n] for n in ("multilabel", "epochs", "device", "name")])
        for n in self.options.options:
            self.options.set_text(n, "")
        self.multilabel, self.epochs, self.device, self.name = (self.options.widget(n) for n in self.options.options)
        form.addRow("", self.multilabel)
        self.area = QgsMapLayerComboBox()
        self.area.setFilters(compat.LAYER_POLYGON)
        self.area.setAllowEmptyLayer(True)
        self.area.setLayer(None)
        form.addRow("Area (optional)", self.area)
        self.init = QComboBox()
        for e in list_models(load=False):
            self.init.addItem("%s%s" % (e.name, " (shipped)" if e.shipped else ""), e.path)
        self.init.addItem("scratch (ImageNet encoder)", "scratch")
        form.addRow("Start from", self.init)
        for n in ("epochs", "device", "name"):
            form.addRow(FIT[n].label, self.options.widget(n))
        if deps.torch_missing():
            self.problem("Training needs PyTorch: install it with Raster > Tailings Mapper > Python packages… "
                          "(its CPU build, about 200 MB).")
            self.run_button.setEnabled(False)

    def request(self) -> fit_task.FitRequest:
        """What the dialog asks for, the layers written to files (ValueError: what is missing)."""
        chosen = self.rasters.chosen()
        if not chosen:
            raise ValueError("tick at least one raster")
        rasters = [layer_path(lyr) for lyr in chosen]
        labels = self.labels.currentLayer()
        if labels is None:
            raise ValueError("choose the label polygons")
        work = tempfile.mkdtemp(prefix="tm-fit-")
        area = self.area.currentLayer()
        text = self.classes.currentText().strip()
        idx = self.classes.findText(text)
        spec = self.classes.itemData(idx) if idx >= 0 else text     # a listed choice, or names typed in
        return fit_task.FitRequest(
            rasters=rasters, labels=fit_task.write_layer(labels, os.path.join(work, "labels.gpkg")),
            field_name=self.field.currentField() or None, classes=None if spec == FROM_MODEL else spec,
            aoi=fit_task.write_layer(area, os.path.join(work, "area.gpkg")) if area is not None else None,
            init=self.init.currentData(), workdir=work, **values(self.options.texts(), names=self.options.options))

    def start(self) -> Optional[fit_task.FitTask]:
        try:
            req = self.request()
        except (ValueError, RuntimeError) as e:
            self.problem(str(e))
            return None
        task = fit_task.start(req, self.iface.messageBar() if self.iface is not None else None, self.on_model)
        task.progressText.connect(self.status.setText)
        return self.track(task)
