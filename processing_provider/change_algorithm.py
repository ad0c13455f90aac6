"""Processing algorithm "Change map between years" (tailings_mapper:change): the change engine from
the toolbox, in batch mode and the model builder, and with ``qgis_process``.  Its options are the
engine's (``inference.change.CHANGE_OPTIONS``)."""
from __future__ import annotations

import os
import shutil
import tempfile
import traceback

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingOutputFile,
                       QgsProcessingOutputNumber, QgsProcessingOutputRasterLayer, QgsProcessingOutputVectorLayer,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterField,
                       QgsProcessingParameterFolderDestination, QgsProcessingParameterMultipleLayers,
                       QgsProcessingParameterString)

from .. import inference as eng
from ..inference.change import CHANGE_OPTIONS, options_from_texts, plan_change, run_change
from ..inference.change.products import doubt_lines
from ..qgis_glue import compat
from ..qgis_glue.change_task import result_path
from ..qgis_glue.icons import icon


def _option(name):
    return next(o for o in CHANGE_OPTIONS if o.name == name)


class ChangeAlgorithm(QgsProcessingAlgorithm):
    def createInstance(self):  # noqa: N802
        return ChangeAlgorithm()

    def name(self):
        return "change"

    def displayName(self):  # noqa: N802
        return "Change map between years"

    def group(self):
        return "Change"

    def groupId(self):  # noqa: N802
        return "change"

    def icon(self):
        return icon()

    def tags(self):
        return ["change", "years", "transition", "tailings", "monitoring", "report"]

    def shortHelpString(self):  # noqa: N802
        return ("Compares two or more Tailings Mapper results of the same ground from different years: class rasters, "
                "or polygon layers as you edited them (they take precedence over the raster they came from). They "
                "are brought onto the first raster's grid over the ground all of them cover; no data (or cloud) in "
                "any year is never change. Writes a transition raster (code = from x N + to, legend "
                "'tailings -> background'), change polygons, CSV tables (areas per year, the transition matrix, "
                "gain, loss, net change, persistence), summary.json and an HTML report. Areas are true hectares in "
                "any CRS.<br><br><b>%s</b>: %s<br><b>%s</b>: %s" % (
                    _option("years").label, _option("years").help, _option("facilities").label,
                    _option("facilities").help))

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers("INPUTS", "Results (class rasters or polygon layers)",
                                                               compat.SOURCE_MAP_LAYER))
        self.addParameter(QgsProcessingParameterString("YEARS", _option("years").label, optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource("FACILITIES", _option("facilities").label,
                                                              [compat.SOURCE_VECTOR_POLYGON], optional=True))
        self.addParameter(QgsProcessingParameterField("FACILITY_FIELD", _option("facility_field").label,
                                                      parentLayerParameterName="FACILITIES", optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT_FOLDER", "Output folder"))
        self.addOutput(QgsProcessingOutputRasterLayer("TRANSITIONS", "Transitions"))
        self.addOutput(QgsProcessingOutputVectorLayer("POLYGONS", "Change polygons", compat.SOURCE_VECTOR_POLYGON))
        self.addOutput(QgsProcessingOutputFile("REPORT", "Report (HTML)"))
        self.addOutput(QgsProcessingOutputFile("SUMMARY", "summary.json"))
        self.addOutput(QgsProcessingOutputNumber("COMPARED_HA", "Compared area (ha)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layers = self.parameterAsLayerList(parameters, "INPUTS", context)
        work = tempfile.mkdtemp(prefix="tm-change-alg-")
        try:
            try:
                paths = [result_path(lyr, work) for lyr in layers]
            except ValueError as e:
                raise QgsProcessingException(str(e))
            fac = None
            if parameters.get("FACILITIES") not in (None, ""):
                fac = self.parameterAsCompatibleSourceLayerPath(parameters, "FACILITIES", context, ["gpkg"], "gpkg",
                                                                feedback)
            try:
                opts = options_from_texts({"years": self.parameterAsString(parameters, "YEARS", context) or None,
                                           "facilities": fac or None,
                                           "facility_field": self.parameterAsString(parameters, "FACILITY_FIELD",
                                                                                    context) or None,
                                           "overwrite": "true"})
                out = self.parameterAsString(parameters, "OUTPUT_FOLDER", context)
                p = plan_change(paths, opts, out)
                feedback.pushInfo("comparing %s on one grid: %s" % (
                    ", ".join("%s (%s)" % (y, i.label) for y, i in zip(p.years, p.inputs)), p.grid.describe()))
                res = run_change(p, progress=lambda f, m: feedback.setProgress(100 * f), cancel=feedback.isCanceled)
            except eng.Cancelled:
                raise QgsProcessingException("cancelled")
            except eng.TailingsError as e:
                raise QgsProcessingException(str(e))
            except Exception as e:
                feedback.reportError(traceback.format_exc())
                raise QgsProcessingException("unexpected error: %s: %s" % (type(e).__name__, e))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for w in res.warnings:
            feedback.pushWarning(w)
        s = res.summary
        feedback.pushInfo("compared %.2f ha (common ground %.2f ha, no data %.2f ha)" % (
            s["compared_area_ha"], s["common_area_ha"], s["nodata_area_ha"]))
        for line in doubt_lines(s):
            feedback.pushInfo(line)
        o = res.outputs
        name = os.path.splitext(os.path.basename(o["polygons"]))[0]
        return {"TRANSITIONS": o["transitions"], "POLYGONS": "%s|layername=%s" % (o["polygons"], name),
                "REPORT": o["report"], "SUMMARY": o["summary"], "COMPARED_HA": s["compared_area_ha"],
                "OUTPUT_FOLDER": out}
