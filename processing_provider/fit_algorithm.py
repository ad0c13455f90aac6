"""Processing algorithm "Train a model from polygons" (tailings_mapper:fit): ``training.fit`` from the
toolbox, the model builder and ``qgis_process``.  The label and area layers are handed to training
as files (selected features only when asked); the new model goes into the user's model list."""
from __future__ import annotations

import traceback

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingOutputString,
                       QgsProcessingParameterBoolean, QgsProcessingParameterEnum, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterField, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterMultipleLayers, QgsProcessingParameterNumber,
                       QgsProcessingParameterString)

from ..qgis_glue import compat, deps
from ..qgis_glue.icons import icon
from ..qgis_glue.layers import layer_path
from ..qgis_glue.training_bridge import TORCH_MISSING, fit_module

DEVICES = ["auto", "cpu", "cuda"]


class FitAlgorithm(QgsProcessingAlgorithm):
    def createInstance(self):  # noqa: N802
        return FitAlgorithm()

    def name(self):
        return "fit"

    def displayName(self):  # noqa: N802
        return "Train a model from polygons"

    def group(self):
        return "Training"

    def groupId(self):  # noqa: N802
        return "training"

    def icon(self):
        return icon()

    def tags(self):
        return ["training", "fine-tune", "labels", "polygons", "corrections", "mining", "tailings"]

    def shortHelpString(self):  # noqa: N802
        return ("Trains a segmentation model from polygons drawn over one or more rasters, starting from a model "
                "(the shipped <i>tailings</i> by default) or from scratch, and adds it to your model list with "
                "its card.<br><br><b>Class field</b>: a class name or id per polygon; empty: every polygon is "
                "the positive class of a binary model. <b>Classes</b>: <i>tailings</i>, <i>mining10</i> (the ten "
                "mining components) or your names separated by commas; empty: the starting model's. <b>Area</b>: "
                "where everything not drawn is background (without it, only the ground near the polygons); an "
                "empty label layer with an area teaches &quot;nothing here&quot;. A part of the labelled ground is held "
                "back and scored; cancelling keeps the best epoch so far. Needs PyTorch (Python packages…).")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers("RASTERS", "Rasters", compat.SOURCE_RASTER))
        self.addParameter(QgsProcessingParameterFeatureSource("LABELS", "Label polygons",
                                                              [compat.SOURCE_VECTOR_POLYGON]))
        self.addParameter(QgsProcessingParameterField("FIELD", "Class field", parentLayerParameterName="LABELS",
                                                      optional=True))
        self.addParameter(QgsProcessingParameterString("CLASSES", "Classes (tailings, mining10 or names)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterBoolean("MULTILABEL", "Classes may overlap (multilabel)", False))
        self.addParameter(QgsProcessingParameterFeatureSource("AOI", "Area (everything not drawn is background)",
                                                              [compat.SOURCE_VECTOR_POLYGON], optional=True))
        self.addParameter(QgsProcessingParameterString("INIT", "Start from (a model name or file, or scratch)",
                                                       "tailings"))
        self.addParameter(QgsProcessingParameterNumber("EPOCHS", "Epochs", compat.NUMBER_INTEGER, 10,
                                                       minValue=1, maxValue=500))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterString("NAME", "New model's name", optional=True))
        for name, label, default, lo, hi in (("CHIP", "Chip size (px)", 256, 64, 1024),
                                             ("CHIPS_PER_EPOCH", "Chips per epoch", 64, 4, 100000)):
            p = QgsProcessingParameterNumber(name, label, compat.NUMBER_INTEGER, default,
                                             minValue=lo, maxValue=hi)
            p.setFlags(p.flags() | compat.PARAMETER_ADVANCED)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", "Model file (default: your models folder)", "ONNX models (*.onnx)", optional=True,
            createByDefault=False))
        self.addOutput(QgsProcessingOutputString("MODEL_NAME", "Model name"))
        self.addOutput(QgsProcessingOutputString("CARD", "Model card"))
        self.addOutput(QgsProcessingOutputString("VALIDATION", "Scores on the part held back"))

    def canExecute(self):  # noqa: N802
        problem = deps.onnxruntime_problem()
        if problem is not None:
            return False, problem
        if deps.torch_missing():
            return False, TORCH_MISSING
        return True, ""

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        ok, why = self.canExecute()
        if not ok:
            raise QgsProcessingException(why)
        layers = self.parameterAsLayerList(parameters, "RASTERS", context)
        try:
            rasters = [layer_path(lyr) for lyr in layers]
        except ValueError as e:
            raise QgsProcessingException(str(e))
        if not rasters:
            raise QgsProcessingException("give at least one raster")
        labels = self.parameterAsCompatibleSourceLayerPath(parameters, "LABELS", context, ["gpkg"], "gpkg", feedback)
        aoi = (self.parameterAsCompatibleSourceLayerPath(parameters, "AOI", context, ["gpkg"], "gpkg", feedback)
               if parameters.get("AOI") not in (None, "") else None)
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context) or None
        fitmod = fit_module()
        try:
            res = fitmod.fit(
                rasters, labels.split("|")[0], self.parameterAsString(parameters, "FIELD", context) or None,
                self.parameterAsString(parameters, "CLASSES", context) or None, aoi.split("|")[0] if aoi else None,
                self.parameterAsString(parameters, "INIT", context) or "tailings",
                self.parameterAsInt(parameters, "EPOCHS", context),
                DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)], out,
                self.parameterAsString(parameters, "NAME", context) or None,
                self.parameterAsBool(parameters, "MULTILABEL", context),
                chip=self.parameterAsInt(parameters, "CHIP", context),
                chips_per_epoch=self.parameterAsInt(parameters, "CHIPS_PER_EPOCH", context),
                labels_layer=_layer_name(labels),
                progress=lambda f, m: (feedback.setProgress(100 * f), feedback.setProgressText(m)),
                cancel=feedback.isCanceled, log=feedback.pushInfo)
        except fitmod.Cancelled as e:
            raise QgsProcessingException(str(e))
        except (fitmod.TailingsError, ValueError) as e:
            raise QgsProcessingException(str(e))
        except Exception as e:
            feedback.reportError(traceback.format_exc())
            raise QgsProcessingException("unexpected error: %s: %s" % (type(e).__name__, e))
        for w in res.warnings:
            feedback.pushWarning(w)
        val = res.info.extra.get("validation_fit") or {}
        text = ", ".join("%s IoU %.3f" % (k, v) for k, v in (val.get("per_class") or {}).items() if v is not None)
        feedback.pushInfo("model %s: %s%s" % (res.info.name, res.path, " (cancelled: best epoch)" if res.cancelled
                                                                        else ""))
        return {"OUTPUT": res.path, "MODEL_NAME": res.info.name, "CARD": res.card,
                "VALIDATION": text or "no part could be held back"}


def _layer_name(uri: str):
    parts = uri.split("|")
    return next((p.split("=", 1)[1] for p in parts[1:] if p.startswith("layername=")), None)
