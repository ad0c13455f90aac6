"""Processing algorithm "Batch over facilities" (tailings_mapper:batch): every facility of a layer
loaded in QGIS, with each year's scene of a folder that covers it, segmented by the engine's batch
on this machine: one job after the other in QGIS's process, or on Dask worker processes when Dask
is installed (Python packages…)."""
from __future__ import annotations

import traceback

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingOutputFile,
                       QgsProcessingOutputNumber, QgsProcessingParameterBoolean, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterField, QgsProcessingParameterFile, QgsProcessingParameterFolderDestination,
                       QgsProcessingParameterNumber, QgsProcessingParameterString)

from .. import inference as eng
from ..inference.batch import plan_batch, run_batch
from ..qgis_glue import compat
from ..qgis_glue.icons import icon


class BatchAlgorithm(QgsProcessingAlgorithm):
    def createInstance(self):  # noqa: N802
        return BatchAlgorithm()

    def name(self):
        return "batch"

    def displayName(self):  # noqa: N802
        return "Batch over facilities"

    def group(self):
        return "Change"

    def groupId(self):  # noqa: N802
        return "change"

    def icon(self):
        return icon()

    def tags(self):
        return ["batch", "facilities", "years", "registry", "monitoring", "time series", "dask"]

    def shortHelpString(self):  # noqa: N802
        return ("Segments every facility of a layer (polygons, or points with a buffer) in each year's scene of a "
                "folder that covers it (scenes dated by their product metadata or a YYYYMMDD in their names), into "
                "OUTPUT/&lt;facility&gt;/&lt;year&gt;/, then writes timeseries.csv, summary.json, a chart and the change "
                "maps between consecutive years. A job that fails is recorded and the rest go on; <b>Resume</b> "
                "continues a batch in the same folder, redoing only what is missing or changed. <b>Workers</b> 0 runs "
                "the jobs one after the other in QGIS; more needs Dask (Python packages…). For a whole registry, "
                "use the command line on a cluster (README, \"Batch runs\").")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFeatureSource("FACILITIES", "Facilities",
                                                              [compat.SOURCE_VECTOR_ANY]))
        self.addParameter(QgsProcessingParameterField("FACILITY_FIELD", "Facility id field",
                                                      parentLayerParameterName="FACILITIES"))
        self.addParameter(QgsProcessingParameterFile("SCENES", "Folder of scenes",
                                                     behavior=compat.FILE_FOLDER))
        self.addParameter(QgsProcessingParameterNumber("BUFFER_M", "Buffer around point facilities (m)",
                                                       compat.NUMBER_DOUBLE, 0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterString("MODEL", "Model (a name or an ONNX file)", "tailings"))
        self.addParameter(QgsProcessingParameterNumber("WORKERS", "Worker processes (0: in QGIS)",
                                                       compat.NUMBER_INTEGER, 0, minValue=0))
        self.addParameter(QgsProcessingParameterBoolean("RESUME", "Resume the batch in the output folder", False))
        self.addParameter(QgsProcessingParameterBoolean("CHANGES", "Change maps between consecutive years", True))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Output folder"))
        self.addOutput(QgsProcessingOutputFile("TIMESERIES", "timeseries.csv"))
        self.addOutput(QgsProcessingOutputFile("SUMMARY", "summary.json"))
        self.addOutput(QgsProcessingOutputNumber("DONE", "Jobs done"))
        self.addOutput(QgsProcessingOutputNumber("FAILED", "Jobs failed"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        fac = self.parameterAsCompatibleSourceLayerPath(parameters, "FACILITIES", context, ["gpkg"], "gpkg", feedback)
        out = self.parameterAsString(parameters, "OUTPUT", context)
        try:
            p = plan_batch(None, self.parameterAsString(parameters, "MODEL", context) or "tailings", out,
                           workers=self.parameterAsInt(parameters, "WORKERS", context),
                           resume=self.parameterAsBool(parameters, "RESUME", context),
                           buffer_m=self.parameterAsDouble(parameters, "BUFFER_M", context), facilities=fac,
                           facility_field=self.parameterAsString(parameters, "FACILITY_FIELD", context),
                           scenes=self.parameterAsFile(parameters, "SCENES", context),
                           changes=self.parameterAsBool(parameters, "CHANGES", context))
            for n in p.notes:
                feedback.pushInfo(n)
            feedback.pushInfo("%d jobs" % len(p.jobs))

            def progress(done, failed, running, total, eta, message):
                feedback.setProgress(100.0 * (done + failed) / max(1, total))
                feedback.setProgressText("%d of %d jobs (%d failed), about %.0f s left" % (done + failed, total, failed,
                                                                                          eta))
                feedback.pushInfo(message)
            res = run_batch(p, progress, cancel=feedback.isCanceled)
        except eng.Cancelled as e:
            raise QgsProcessingException(str(e))
        except eng.TailingsError as e:
            raise QgsProcessingException(str(e))
        except Exception as e:
            feedback.reportError(traceback.format_exc())
            raise QgsProcessingException("unexpected error: %s: %s" % (type(e).__name__, e))
        for f in res.summary["failures"]:
            feedback.pushWarning("failed: %s %s: %s" % (f["facility"], f["year"], f["error"]))
        return {"OUTPUT": out, "TIMESERIES": res.outputs["timeseries"], "SUMMARY": res.outputs["summary"],
                "DONE": res.summary["done"], "FAILED": res.summary["failed"]}
