"""Processing algorithm "Segment tailings / mining components" (tailings_mapper:segment).

Same options as the dock panel and the command line (generated from the engine's option table,
``parameters.py``); usable from the toolbox, in batch mode, in the model builder and from
``qgis_process run tailings_mapper:segment -- INPUT=... MODEL=...``.  The engine writes into a
temporary folder; the results are then moved (or converted) to the destinations Processing asked
for.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import traceback
from dataclasses import replace

from qgis.core import (QgsCoordinateReferenceSystem, QgsProcessingAlgorithm, QgsProcessingContext,
                       QgsProcessingException,
                       QgsProcessingFeedback, QgsProcessingLayerPostProcessorInterface, QgsProcessingOutputNumber,
                       QgsProcessingOutputString, QgsProcessingParameterEnum, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination,
                       QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterVectorDestination, QgsProcessingUtils, QgsRasterFileWriter)

from .. import inference as eng
from ..inference.model.opened import MODELS
from ..inference.output import present
from ..inference.output import report as eng_report
from ..inference.run.options import from_texts
from ..qgis_glue import compat, deps, results
from ..qgis_glue.icons import icon
from ..qgis_glue.layers import layer_path, polygons_wkt_in, product_name
from . import parameters as optparams
from .input_parameter import RasterOrProductParameter, product_path


def _model_names():
    names = []
    for e in eng.list_models(load=False):
        if e.name not in names:
            names.append(e.name)
    return names


class _RunGroup:
    """The layer-tree group of one run's outputs, named when the first of them is loaded."""

    def __init__(self, source_name):
        self.source_name, self.name = source_name, None

    def get(self, project):
        if self.name is None:
            self.name = results.group_name(self.source_name, project=project)
        return self.name


class _ResultPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """An output loaded by Processing becomes a result layer as the panel adds them: named, styled
    (its saved style, else the engine's), marked, in the run's group, shown or hidden by kind."""
    _keep = []   # Processing does not own Python post-processors: keep them alive here

    def __init__(self, kind, classes, group: _RunGroup, shown: bool = False):
        super().__init__()
        self.kind, self.classes, self.group, self.shown = kind, list(classes), group, shown

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        try:
            if not results._has_style(layer, self.kind):
                results.apply_style(layer, results.engine_style(self.kind, self.classes))
            results.mark_result(layer, self.kind)
            if self.shown:
                layer.setCustomProperty(results.SHOWN_PROPERTY, True)
            results.move_into_group(layer, self.group.get(context.project()), context.project())
        except Exception as e:  # presentation must never fail the run
            feedback.reportError("could not style %s: %s" % (layer.name(), e))

    @classmethod
    def create(cls, kind, classes, group, shown=False):
        pp = cls(kind, classes, group, shown)
        cls._keep.append(pp)
        del cls._keep[:-50]
        return pp


class SegmentAlgorithm(QgsProcessingAlgorithm):
    INPUT = "INPUT"
    MODEL = "MODEL"
    MODEL_FILE = "MODEL_FILE"
    OUTPUT_CLASSES = "OUTPUT_CLASSES"
    OUTPUT_CONFIDENCE = "OUTPUT_CONFIDENCE"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    OUTPUT_TILES = "OUTPUT_TILES"
    OUTPUT_REPORT = "OUTPUT_REPORT"

    def createInstance(self):  # noqa: N802
        return SegmentAlgorithm()

    def name(self):
        return "segment"

    def displayName(self):  # noqa: N802
        return "Segment tailings / mining components"

    def group(self):
        return "Segmentation"

    def groupId(self):  # noqa: N802
        return "segmentation"

    def tags(self):
        return ["tailings", "mining", "segmentation", "onnx", "deep learning", "sentinel-2", "gf-6", "dam"]

    def icon(self):
        return icon()

    def shortHelpString(self):  # noqa: N802
        return (
            "Segments mining tailings ponds (or the classes of another ONNX segmentation model) in a "
            "multispectral raster, tile by tile, and writes a class raster, a confidence raster (percent) "
            "and polygons with class, area, perimeter and mean confidence.<br><br>"
            "<b>Model</b>: a shipped or user model by name; <b>ONNX model file</b> overrides it.<br>"
            + optparams.help_html())

    def helpUrl(self):  # noqa: N802
        return "https://github.com/tailings-mapper/tailings_mapper#processing"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(RasterOrProductParameter(
            self.INPUT, "Input raster, or a Sentinel-2 product (SAFE folder or zip, its MTD_MSI*.xml)"))
        names = _model_names()
        default = "tailings" if "tailings" in names else (names[0] if names else None)
        self.addParameter(QgsProcessingParameterEnum(
            self.MODEL, "Model", options=names, allowMultiple=False, defaultValue=default,
            optional=True, usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL_FILE, "Model file: ONNX, or a STAC MLM item (.json) with an ONNX asset (overrides Model)",
            optional=True))
        for p in optparams.parameters():
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_CLASSES, "Classes"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_CONFIDENCE, "Confidence (%)", optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT_POLYGONS, "Polygons", compat.SOURCE_VECTOR_POLYGON, optional=True,
            createByDefault=True))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT_TILES, "Tiles scored against the training data (unreliable ones marked)",
            compat.SOURCE_VECTOR_POLYGON, optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_REPORT, "Run report (JSON)", fileFilter="JSON files (*.json)", optional=True,
            createByDefault=True))
        self.addOutput(QgsProcessingOutputString("SUMMARY", "Summary"))
        self.addOutput(QgsProcessingOutputString("DEVICE", "Device used"))
        self.addOutput(QgsProcessingOutputString("WARNINGS", "Warnings (why the result may not be trusted)"))
        self.addOutput(QgsProcessingOutputNumber("POLYGON_COUNT", "Number of polygons"))
        self.addOutput(QgsProcessingOutputNumber("AREA_HA", "Total area (ha) of the non-background classes"))
        self.addOutput(QgsProcessingOutputNumber("MASKED_FRACTION", "Share of the area masked (cloud, shadow...)"))
        self.addOutput(QgsProcessingOutputNumber("FLAGGED_FRACTION", "Share of the segmented area flagged"))
        self.addOutput(QgsProcessingOutputNumber(
            "OOD_SCORE", "Unlike the training data: score (up to 1 is like it; none without the model's statistics)"))

    def canExecute(self):  # noqa: N802
        problem = deps.onnxruntime_problem()
        if problem is not None:
            return False, ("%s Use Raster > Tailings Mapper > Python packages…, or in a terminal: %s"
                           % (problem, deps.manual_command()))
        return True, ""

    # -------------------------------------------------------------------------------
    def _model(self, parameters, context):
        """The model opened (the engine's opened models: a second run reuses the first's session)."""
        path = self.parameterAsFile(parameters, self.MODEL_FILE, context)
        name = path or self.parameterAsEnumString(parameters, self.MODEL, context)
        if not name:
            raise QgsProcessingException("choose a model or an ONNX model file")
        return MODELS.get(name)

    def _source(self, parameters, context):
        """``(path the engine reads, the name of the run's layers, its CRS)``: a raster layer, or a
        product path QGIS cannot load as one layer (read by the engine)."""
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            path = product_path(parameters.get(self.INPUT))
            if path is None:
                raise QgsProcessingException("the input raster cannot be opened")
            from ..inference.input.raster import open_input
            return path, product_name(path), QgsCoordinateReferenceSystem.fromWkt(open_input(path).wkt)
        try:
            return layer_path(layer), layer.name(), layer.crs()
        except ValueError as e:
            raise QgsProcessingException(str(e))

    def _extent(self, parameters, context, crs):
        if parameters.get("EXTENT") in (None, ""):
            return None
        rect = self.parameterAsExtent(parameters, "EXTENT", context, crs)
        if rect.isNull() or rect.isEmpty():
            return None
        return rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()

    def _aoi(self, parameters, context, crs, feedback):
        """The area of interest's polygons as WKT in the raster's CRS (None: no area given)."""
        if parameters.get("AOI") in (None, ""):
            return None
        source = self.parameterAsSource(parameters, "AOI", context)
        if source is None:
            raise QgsProcessingException("the area of interest layer cannot be opened")
        wkts, _ = polygons_wkt_in(source.getFeatures(), source.sourceCrs(), crs,
                                  context.transformContext(), feedback.isCanceled)
        if not wkts:
            raise QgsProcessingException("the area of interest holds no polygon")
        return wkts

    def _destinations(self, parameters, context):
        """Where each output goes ("" or None: not made).  Resolved once per run: a temporary
        output gets a new name, and a destination to load when done, each time it is resolved."""
        dests = {k: self.parameterAsOutputLayer(parameters, k, context)
                 for k in (self.OUTPUT_CLASSES, self.OUTPUT_CONFIDENCE, self.OUTPUT_POLYGONS, self.OUTPUT_TILES)}
        dests[self.OUTPUT_REPORT] = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        return dests

    def _plan(self, parameters, context, feedback, work, dests):
        """``(the name of the run's layers, the engine's plan)`` of this run, into ``work`` (None:
        only checked); ``dests``: as :meth:`_destinations` resolved them."""
        input_path, source_name, crs = self._source(parameters, context)
        opts = replace(from_texts(optparams.option_texts(self, parameters, context)),
                       extent=self._extent(parameters, context, crs),
                       aoi=self._aoi(parameters, context, crs, feedback),
                       confidence=bool(dests[self.OUTPUT_CONFIDENCE]),
                       polygons=bool(dests[self.OUTPUT_POLYGONS] or dests[self.OUTPUT_TILES]), overwrite=True,
                       prefix="result")
        return source_name, eng.plan(input_path, self._model(parameters, context), opts, work)

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """The engine's checks, before the run: a bad value is reported once, as QGIS reports any
        parameter error (in the dialog, in batch mode, by qgis_process), and nothing runs."""
        ok, msg = super().checkParameterValues(parameters, context)
        if not ok or not self.canExecute()[0]:   # (processAlgorithm says what is missing)
            return ok, msg
        # the destinations resolved in a scratch context: the run's own resolves them once (see _destinations)
        scratch = QgsProcessingContext()
        scratch.copyThreadSafeSettings(context)
        scratch.setProject(context.project())
        try:
            dests = self._destinations(parameters, scratch)
            self._plan(parameters, context, QgsProcessingFeedback(), None, dests)   # checked, nothing written
        except eng.TailingsError as e:
            return False, str(optparams.processing_error(e))
        except QgsProcessingException as e:
            return False, str(e)
        return True, ""

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        ok, why = self.canExecute()
        if not ok:
            raise QgsProcessingException(why)
        dests = self._destinations(parameters, context)
        for d in dests.values():
            if d and ":" in d.split(os.sep)[0] and not os.path.splitdrive(d)[0]:
                raise QgsProcessingException("outputs must be files; %s is not supported" % d)
        work = tempfile.mkdtemp(prefix="tailings-", dir=QgsProcessingUtils.tempFolder())
        try:
            return self._run(parameters, context, feedback, work, dests)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run(self, parameters, context, feedback, work, dests):
        try:
            source_name, plan = self._plan(parameters, context, feedback, work, dests)

            def progress(fraction, message):
                feedback.setProgress(100.0 * fraction)
                if message:
                    feedback.setProgressText(message)

            feedback.pushInfo("Segmenting %s with %s" % (plan.input, plan.model.path))
            feedback.pushInfo("band mapping: %s" % plan.mapping.as_text(plan.info.bands))
            for w in plan.warnings:
                feedback.pushWarning("Warning: %s" % w)
            res = eng.execute(plan, progress=progress, cancel=feedback.isCanceled)
        except eng.Cancelled as e:
            raise QgsProcessingException(present.failure(e))
        except eng.TailingsError as e:
            raise optparams.processing_error(e)
        except QgsProcessingException:
            raise
        except Exception as e:
            feedback.reportError(traceback.format_exc())
            raise QgsProcessingException(present.failure(e))
        out = {}
        dest_classes, dest_conf, dest_poly = (dests[k] for k in (self.OUTPUT_CLASSES, self.OUTPUT_CONFIDENCE,
                                                                 self.OUTPUT_POLYGONS))
        group = _RunGroup(source_name)
        classes = res.model.classes
        _move_raster(res.class_raster, dest_classes, results.engine_style("classes", classes))
        out[self.OUTPUT_CLASSES] = dest_classes
        self._load_as_result(context, dest_classes, "classes", res, source_name, group)
        if dest_conf and res.confidence_raster:
            _move_raster(res.confidence_raster, dest_conf, results.engine_style("confidence", classes))
            out[self.OUTPUT_CONFIDENCE] = dest_conf
            self._load_as_result(context, dest_conf, "confidence", res, source_name, group)
        if dest_poly and res.polygons:
            _convert_vector(res.polygons, res.layer_name, dest_poly, results.engine_style("polygons", classes))
            out[self.OUTPUT_POLYGONS] = dest_poly
            self._load_as_result(context, dest_poly, "polygons", res, source_name, group)
        dest_tiles = dests[self.OUTPUT_TILES]
        if dest_tiles and res.tiles_layer:
            threshold = float(res.reliability.get("tile_threshold") or 1.5)
            _convert_vector(res.polygons, res.tiles_layer, dest_tiles, results.engine_style("tiles", classes, threshold))
            out[self.OUTPUT_TILES] = dest_tiles
            self._load_as_result(context, dest_tiles, "tiles", res, source_name, group)
        elif dest_tiles:
            feedback.pushInfo("no tiles layer: the model carries no statistics of its training data to score tiles "
                              "against, or the check was turned off")
        if dests[self.OUTPUT_REPORT]:
            kinds = {"classes": self.OUTPUT_CLASSES, "confidence": self.OUTPUT_CONFIDENCE,
                     "polygons": self.OUTPUT_POLYGONS, "tiles": self.OUTPUT_TILES}
            moved = {k: out[v] for k, v in kinds.items() if v in out}
            eng_report.write(dests[self.OUTPUT_REPORT], eng_report.relocated(eng_report.read(res.report), moved))
            out[self.OUTPUT_REPORT] = dests[self.OUTPUT_REPORT]
        _forget_unwritten(context, [d for k, d in dests.items() if d and k not in out])
        for line in present.run_lines(res, skip_warnings=len(plan.warnings)):   # (the plan's were given before)
            if line.kind == present.WARNING:
                feedback.pushWarning("Warning: %s" % line.text)
            elif line.kind != present.OUTPUT:   # (the outputs are Processing's destinations)
                feedback.pushInfo(str(line))
        summary = present.headline(res)
        feedback.pushInfo(summary)
        out["SUMMARY"] = summary
        out["WARNINGS"] = "\n".join(res.warnings)
        out["DEVICE"] = res.device
        out["POLYGON_COUNT"] = results.stats_total(res.stats)
        out["AREA_HA"] = float(sum(float(s.get("area_ha") or 0.0) for s in res.stats.values()))
        out["MASKED_FRACTION"] = float(res.masked_fraction)
        out["FLAGGED_FRACTION"] = float(res.flagged_fraction)
        out["OOD_SCORE"] = res.reliability.get("ood_score") if res.reliability else None
        return out

    def _load_as_result(self, context, dest, kind, res, source_name, group):
        if context.willLoadLayerOnCompletion(dest):
            details = context.layerToLoadOnCompletionDetails(dest)
            details.name = results.layer_name(source_name, kind)
            shown = kind == "tiles" and bool((res.reliability or {}).get("unreliable_tiles"))
            details.setPostProcessor(_ResultPostProcessor.create(kind, res.model.classes, group, shown))


def _forget_unwritten(context, paths) -> None:
    """An output asked for but not made (no tiles without the model's statistics...) is no layer to
    load: else QGIS says it "was not correctly generated"."""
    if paths:
        keep = {p: d for p, d in context.layersToLoadOnCompletion().items() if p not in paths}
        context.setLayersToLoadOnCompletion(keep)


def _write_qml(dest: str, qml: str) -> None:
    """The style beside ``dest``, where QGIS looks for a file's default style."""
    with open(os.path.splitext(dest)[0] + ".qml", "w", encoding="utf-8") as fh:
        fh.write(qml)


def _move_raster(src: str, dest: str, qml: str) -> None:
    """Move a GeoTIFF (and its .aux.xml) to ``dest``, converting when ``dest`` is another format;
    its style beside it."""
    from osgeo import gdal
    ext = os.path.splitext(dest)[1].lower().lstrip(".")
    os.makedirs(os.path.dirname(os.path.abspath(dest)) or ".", exist_ok=True)
    for p in (dest, dest + ".aux.xml"):
        if os.path.exists(p):
            os.remove(p)
    _write_qml(dest, qml)
    if ext in ("tif", "tiff"):
        shutil.move(src, dest)
        if os.path.exists(src + ".aux.xml"):
            shutil.move(src + ".aux.xml", dest + ".aux.xml")
        return
    fmt = QgsRasterFileWriter.driverForExtension(ext) or "GTiff"
    ds = gdal.Translate(dest, src, format=fmt)
    if ds is None:
        raise QgsProcessingException("could not write %s" % dest)
    ds = None
    gdal.GetDriverByName("GTiff").Delete(src)


def _convert_vector(src: str, layer_name, dest: str, qml: str) -> None:
    """Copy the engine's GeoPackage layer to ``dest`` (any OGR format), layer named after the file,
    with its style (a GeoPackage's ``layer_styles``, else a ``.qml`` beside)."""
    from osgeo import gdal
    from ..inference.output.styles import write_gpkg_style
    os.makedirs(os.path.dirname(os.path.abspath(dest)) or ".", exist_ok=True)
    if os.path.exists(dest):
        os.remove(dest)
    stem = os.path.splitext(os.path.basename(dest))[0]
    ds = gdal.VectorTranslate(dest, src, layers=[layer_name] if layer_name else None, layerName=stem)
    if ds is None:
        raise QgsProcessingException("could not write %s" % dest)
    if dest.lower().endswith(".gpkg"):
        write_gpkg_style(ds, stem, qml)
    else:
        _write_qml(dest, qml)
    ds = None
