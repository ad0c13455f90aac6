"""Processing algorithm "Train a model from polygons" (tailings_mapper:fit): ``training.fit`` from the
toolbox, the model builder and ``qgis_process``.  The label and area layers are handed to training
as files (selected features only when asked); the new model goes into the user's model list."""
from __future__ import annotations

import traceback

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingOutputString

from ..qgis_glue import deps
from ..qgis_glue.icons import icon
from ..qgis_glue.layers import layer_path
from ..qgis_glue.training_bridge import TORCH_MISSING, fit_module
from ..training import fit_present
from ..training.fit_options import for_front, values
from .parameters import make_parameter, parameter_name, processing_error


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
        for o in for_front("processing"):
            self.addParameter(make_parameter(o, check_boxes=True))
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
        fitmod = fit_module()
        try:
            args = fit_values(self, parameters, context, feedback)
            res = fitmod.fit(**args, progress=lambda f, m: (feedback.setProgress(100 * f), feedback.setProgressText(m)),
                             cancel=feedback.isCanceled, log=feedback.pushInfo)
        except fitmod.Cancelled as e:
            raise QgsProcessingException(str(e))
        except (fitmod.TailingsError, ValueError) as e:
            raise processing_error(e)
        except Exception as e:
            feedback.reportError(traceback.format_exc())
            raise QgsProcessingException("unexpected error: %s: %s" % (type(e).__name__, e))
        for line in fit_present.lines(res):
            if line.startswith("warning: "):
                feedback.pushWarning(line[len("warning: "):])
            else:
                feedback.pushInfo(line)
        feedback.pushInfo(fit_present.outcome(res))
        return {"OUTPUT": res.path, "MODEL_NAME": res.info.name, "CARD": res.card,
                "VALIDATION": fit_present.validation(res)}


def fit_values(alg, parameters, context, feedback) -> dict:
    """``fit``'s keyword arguments from the parameters: the layers as files (selected features
    only when asked), the rest in their text form, parsed and checked by the option table."""
    out, texts = {}, {}
    for o in for_front("processing"):
        name = parameter_name(o)
        if o.kind == "files":
            try:
                out[o.name] = [layer_path(lyr) for lyr in alg.parameterAsLayerList(parameters, name, context)]
            except ValueError as e:
                raise QgsProcessingException(str(e))
            if not out[o.name]:
                raise QgsProcessingException("give at least one raster")
        elif o.kind == "vector":
            uri = (alg.parameterAsCompatibleSourceLayerPath(parameters, name, context, ["gpkg"], "gpkg", feedback)
                   if parameters.get(name) not in (None, "") else None)
            out[o.name] = uri.split("|")[0] if uri else None
            if o.name == "labels":
                out["labels_layer"] = _layer_name(uri)
        elif o.kind == "model_file":
            out[o.name] = alg.parameterAsFileOutput(parameters, name, context) or None
        elif o.kind == "bool":
            out[o.name] = alg.parameterAsBool(parameters, name, context)
        elif o.kind == "int":
            texts[o.name] = str(alg.parameterAsInt(parameters, name, context))
        elif o.kind == "choice":
            texts[o.name] = alg.parameterAsEnumString(parameters, name, context)
        else:
            texts[o.name] = alg.parameterAsString(parameters, name, context).strip() or None
    out.update(values(texts, names=list(texts)))
    return out

def _layer_name(uri: str):
    parts = uri.split("|")
    return next((p.split("=", 1)[1] for p in parts[1:] if p.startswith("layername=")), None)
