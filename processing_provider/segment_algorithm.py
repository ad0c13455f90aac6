"""Processing algorithm "Segment tailings / mining components" (tailings_mapper:segment).

Same options as the dock panel; usable from the toolbox, in batch mode, in the model
builder and from ``qgis_process run tailings_mapper:segment -- INPUT=... MODEL=...``.
The engine writes into a temporary folder; the results are then moved (or converted)
to the destinations Processing asked for.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import traceback

from qgis.core import (QgsProcessing, QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingParameterFeatureSource,
                       QgsProcessingLayerPostProcessorInterface, QgsProcessingOutputNumber,
                       QgsProcessingOutputString, QgsProcessingParameterEnum, QgsProcessingParameterExtent,
                       QgsProcessingParameterFile, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString, QgsProcessingParameterVectorDestination, QgsProcessingUtils,
                       QgsRasterFileWriter)

AUTO = "auto"
DEVICES = ["auto", "cuda", "cpu"]
TTA = ["model default", "1", "2", "4", "8"]  # test-time augmentation passes ("1" = off)
SCALES = ["model default", "1", "1 + 0.5", "1 + 0.5 + 0.25"]  # multi-scale inference (no commas: QGIS
#   reads a comma in an enum's static string as a list of values)


def _engine():
    from .. import inference
    return inference


def _model_names():
    try:
        names = [e.name for e in _engine().list_models(load=False)]
    except Exception:
        names = []
    out = []
    for n in names:
        if n not in out:
            out.append(n)
    return out


class _StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Applies the model's palette / categorized symbology when Processing loads an output."""
    _keep = []   # Processing does not own Python post-processors: keep them alive here

    def __init__(self, kind, classes):
        super().__init__()
        self.kind = kind
        self.classes = [(c.id, c.name, c.color) for c in classes]

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        from .. import results
        try:
            if self.kind == "classes":
                results.style_class_raster(layer, self.classes)
            elif self.kind == "polygons":
                results.style_polygons(layer, self.classes)
        except Exception as e:  # styling must never fail the run
            feedback.reportError("could not style %s: %s" % (layer.name(), e))

    @classmethod
    def create(cls, kind, classes):
        pp = cls(kind, classes)
        cls._keep.append(pp)
        del cls._keep[:-50]
        return pp


class SegmentAlgorithm(QgsProcessingAlgorithm):
    INPUT = "INPUT"
    MODEL = "MODEL"
    MODEL_FILE = "MODEL_FILE"
    PRESET = "PRESET"
    BANDS = "BANDS"
    EXTENT = "EXTENT"
    AOI = "AOI"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH = "BATCH"
    DEVICE = "DEVICE"
    THRESHOLD = "THRESHOLD"
    TTA = "TTA"
    SCALES = "SCALES"
    MIN_AREA_HA = "MIN_AREA_HA"
    SIMPLIFY_M = "SIMPLIFY_M"
    OUTPUT_CLASSES = "OUTPUT_CLASSES"
    OUTPUT_CONFIDENCE = "OUTPUT_CONFIDENCE"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"

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
        from ..plugin import icon
        return icon()

    def shortHelpString(self):  # noqa: N802
        return (
            "Segments mining tailings ponds (or the classes of another ONNX segmentation model) in a "
            "multispectral raster, tile by tile, and writes a class raster, a confidence raster (percent) "
            "and polygons with class, area, perimeter and mean confidence.<br><br>"
            "<b>Model</b>: a shipped or user model by name; <b>ONNX model file</b> overrides it.<br>"
            "<b>Sensor preset</b>: how to read the raster's bands ('auto' detects it from the band "
            "descriptions).<br><b>Band mapping</b>: optional, the raster band feeding each model input, "
            "in model order ('3,2,1') or by name ('S2:B04=3,S2:B03=2,S2:B02=1'); by default bands are "
            "matched by name.<br><b>Extent</b>: process only this area.<br>"
            "<b>Area of interest</b>: polygons (or the selected ones); pixels outside them get no class.<br>"
            "Tile size, overlap, threshold and minimum area default to the model's values when empty. "
            "<b>Test-time augmentation</b>: the network also sees each tile flipped (and rotated) and the "
            "results are averaged; a little more accurate, slower in proportion to the passes. "
            "<b>Scales</b>: also at half (quarter) resolution, averaged: more context for large ponds. "
            "<b>Device</b>: auto uses an NVIDIA GPU when onnxruntime-gpu can, else the CPU.")

    def helpUrl(self):  # noqa: N802
        return "https://github.com/tailings-mapper/tailings_mapper#processing"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"))
        names = _model_names()
        default = "tailings" if "tailings" in names else (names[0] if names else None)
        self.addParameter(QgsProcessingParameterEnum(
            self.MODEL, "Model", options=names, allowMultiple=False, defaultValue=default,
            optional=True, usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL_FILE, "ONNX model file (overrides Model)", extension="onnx", optional=True))
        presets = [AUTO] + list(_engine().bands.PRESETS)
        self.addParameter(QgsProcessingParameterEnum(
            self.PRESET, "Sensor preset", options=presets, defaultValue=AUTO, usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterString(
            self.BANDS, "Band mapping (e.g. 3,2,1 or S2:B04=3,S2:B03=2,S2:B02=1)", optional=True))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent (default: whole raster)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.AOI, "Area of interest (polygons; pixels outside get no class)",
            [QgsProcessing.TypeVectorPolygon], optional=True))
        adv = [
            QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size (px, empty = model default)",
                                         QgsProcessingParameterNumber.Integer, optional=True, minValue=16),
            QgsProcessingParameterNumber(self.OVERLAP, "Tile overlap (px, empty = model default)",
                                         QgsProcessingParameterNumber.Integer, optional=True, minValue=0),
            QgsProcessingParameterNumber(self.BATCH, "Batch size", QgsProcessingParameterNumber.Integer,
                                         defaultValue=4, minValue=1),
            QgsProcessingParameterEnum(self.DEVICE, "Device", options=DEVICES, defaultValue="auto",
                                       usesStaticStrings=True),
            QgsProcessingParameterNumber(self.THRESHOLD, "Threshold (empty = model default)",
                                         QgsProcessingParameterNumber.Double, optional=True, minValue=0.0,
                                         maxValue=1.0),
            QgsProcessingParameterEnum(self.TTA, "Test-time augmentation: passes per tile (1 = off)", options=TTA,
                                       defaultValue=TTA[0], usesStaticStrings=True),
            QgsProcessingParameterEnum(self.SCALES, "Scales each tile is seen at (1 + 0.5: also at half resolution)",
                                       options=SCALES, defaultValue=SCALES[0], usesStaticStrings=True),
            QgsProcessingParameterNumber(self.MIN_AREA_HA, "Minimum polygon area, ha (empty = model default)",
                                         QgsProcessingParameterNumber.Double, optional=True, minValue=0.0),
            QgsProcessingParameterNumber(self.SIMPLIFY_M, "Polygon simplification tolerance (m, 0 = none)",
                                         QgsProcessingParameterNumber.Double, defaultValue=0.0, minValue=0.0),
        ]
        for p in adv:
            p.setFlags(p.flags() | p.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_CLASSES, "Classes"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_CONFIDENCE, "Confidence (%)", optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT_POLYGONS, "Polygons", QgsProcessing.TypeVectorPolygon, optional=True,
            createByDefault=True))
        self.addOutput(QgsProcessingOutputString("SUMMARY", "Summary"))
        self.addOutput(QgsProcessingOutputString("DEVICE", "Device used"))
        self.addOutput(QgsProcessingOutputNumber("POLYGON_COUNT", "Number of polygons"))
        self.addOutput(QgsProcessingOutputNumber("AREA_HA", "Total area (ha) of the non-background classes"))

    def canExecute(self):  # noqa: N802
        from .. import deps
        missing = [m for m in deps.check() if m.requirement.module == "onnxruntime"]
        if missing:
            return False, ("the Python package onnxruntime is missing (%s); install it from the menu "
                           "Raster > Tailings Mapper > Python packages, or: %s"
                           % (missing[0].error, deps.manual_command()))
        return True, ""

    # -------------------------------------------------------------------------------
    def _opt(self, parameters, name, conv, context):
        v = parameters.get(name)
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        if conv is int:
            return self.parameterAsInt(parameters, name, context)
        return self.parameterAsDouble(parameters, name, context)

    def _tta(self, parameters, context):
        """Passes per tile, or None for the model's default (also for a value given as an index)."""
        v = parameters.get(self.TTA)
        if v is None or v == "":
            return None
        text = self.parameterAsEnumString(parameters, self.TTA, context)
        return None if text in ("", TTA[0]) else int(text)

    def _scales(self, parameters, context):
        """Scales, or None for the model's default."""
        if parameters.get(self.SCALES) in (None, ""):
            return None
        text = self.parameterAsEnumString(parameters, self.SCALES, context)
        return None if text in ("", SCALES[0]) else tuple(float(v) for v in text.split("+"))

    def _model(self, parameters, context):
        path = self.parameterAsFile(parameters, self.MODEL_FILE, context)
        if path:
            return path
        name = self.parameterAsEnumString(parameters, self.MODEL, context) if hasattr(
            self, "parameterAsEnumString") else parameters.get(self.MODEL)
        if not name:
            raise QgsProcessingException("choose a model or an ONNX model file")
        return name

    def _aoi(self, parameters, context, layer, feedback):
        """The area of interest's polygons as WKT in the raster's CRS (None: no area given)."""
        if parameters.get(self.AOI) in (None, ""):
            return None
        from ..ui.config import polygons_wkt_in
        source = self.parameterAsSource(parameters, self.AOI, context)
        if source is None:
            raise QgsProcessingException("the area of interest layer cannot be opened")
        wkts, _ = polygons_wkt_in(source.getFeatures(), source.sourceCrs(), layer.crs(),
                                  context.transformContext(), feedback.isCanceled)
        if not wkts:
            raise QgsProcessingException("the area of interest holds no polygon")
        return wkts

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..ui.config import layer_path
        eng = _engine()
        ok, why = self.canExecute()
        if not ok:
            raise QgsProcessingException(why)
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException("the input raster cannot be opened")
        try:
            input_path = layer_path(layer)
        except ValueError as e:
            raise QgsProcessingException(str(e))
        model = self._model(parameters, context)
        preset = self.parameterAsEnumString(parameters, self.PRESET, context) or AUTO
        device = self.parameterAsEnumString(parameters, self.DEVICE, context) or "auto"
        mapping_text = self.parameterAsString(parameters, self.BANDS, context).strip()
        extent = None
        if parameters.get(self.EXTENT) not in (None, ""):
            rect = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            if not rect.isNull() and not rect.isEmpty():
                extent = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
        aoi = self._aoi(parameters, context, layer, feedback)
        dest_classes = self.parameterAsOutputLayer(parameters, self.OUTPUT_CLASSES, context)
        dest_conf = self.parameterAsOutputLayer(parameters, self.OUTPUT_CONFIDENCE, context)
        dest_poly = self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context)
        for d in (dest_classes, dest_conf, dest_poly):
            if d and ":" in d.split(os.sep)[0] and not os.path.splitdrive(d)[0]:
                raise QgsProcessingException("outputs must be files; %s is not supported" % d)
        try:
            opts = eng.SegmentOptions(
                bands=mapping_text or None, preset=None if preset == AUTO else preset,
                tile_size=self._opt(parameters, self.TILE_SIZE, int, context),
                overlap=self._opt(parameters, self.OVERLAP, int, context),
                batch=max(1, self.parameterAsInt(parameters, self.BATCH, context) or 4), device=device,
                threshold=self._opt(parameters, self.THRESHOLD, float, context),
                tta=self._tta(parameters, context),
                scales=self._scales(parameters, context),
                min_area_ha=self._opt(parameters, self.MIN_AREA_HA, float, context),
                simplify_m=self.parameterAsDouble(parameters, self.SIMPLIFY_M, context) or 0.0,
                confidence=bool(dest_conf), polygons=bool(dest_poly), overwrite=True, extent=extent, aoi=aoi,
                prefix="result")
            work = tempfile.mkdtemp(prefix="tailings-", dir=QgsProcessingUtils.tempFolder())

            def progress(fraction, message):
                feedback.setProgress(100.0 * fraction)
                if message:
                    feedback.setProgressText(message)

            feedback.pushInfo("Segmenting %s with %s" % (input_path, model))
            res = eng.segment(input_path, model, work, opts, progress=progress, cancel=feedback.isCanceled)
        except eng.Cancelled:
            raise QgsProcessingException("cancelled")
        except eng.TailingsError as e:
            raise QgsProcessingException(str(e))
        except QgsProcessingException:
            raise
        except Exception as e:
            feedback.reportError(traceback.format_exc())
            raise QgsProcessingException("unexpected error: %s: %s" % (type(e).__name__, e))
        for note in res.notes:
            feedback.pushInfo(note)
        feedback.pushInfo("device: %s (%s)" % (res.device, res.provider_reason))
        from .. import results
        out = {}
        _move_raster(res.class_raster, dest_classes)
        out[self.OUTPUT_CLASSES] = dest_classes
        self._style_on_load(context, dest_classes, "classes", res, "%s classes" % layer.name())
        if dest_conf and res.confidence_raster:
            _move_raster(res.confidence_raster, dest_conf)
            out[self.OUTPUT_CONFIDENCE] = dest_conf
        if dest_poly and res.polygons:
            _convert_vector(res.polygons, res.layer_name, dest_poly)
            out[self.OUTPUT_POLYGONS] = dest_poly
            self._style_on_load(context, dest_poly, "polygons", res, "%s polygons" % layer.name())
        shutil.rmtree(work, ignore_errors=True)
        summary = results.summary(res)
        feedback.pushInfo(summary)
        out["SUMMARY"] = summary
        out["DEVICE"] = res.device
        out["POLYGON_COUNT"] = results.stats_total(res.stats)
        out["AREA_HA"] = float(sum(float(s.get("area_ha") or 0.0) for s in res.stats.values()))
        return out

    def _style_on_load(self, context, dest, kind, res, name):
        if context.willLoadLayerOnCompletion(dest):
            details = context.layerToLoadOnCompletionDetails(dest)
            details.name = name
            details.setPostProcessor(_StylePostProcessor.create(kind, res.model.classes))


def _move_raster(src: str, dest: str) -> None:
    """Move a GeoTIFF (and its .aux.xml) to ``dest``, converting when ``dest`` is another format."""
    from osgeo import gdal
    ext = os.path.splitext(dest)[1].lower().lstrip(".")
    os.makedirs(os.path.dirname(os.path.abspath(dest)) or ".", exist_ok=True)
    for p in (dest, dest + ".aux.xml"):
        if os.path.exists(p):
            os.remove(p)
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


def _convert_vector(src: str, layer_name, dest: str) -> None:
    """Copy the engine's GeoPackage layer to ``dest`` (any OGR format), layer named after the file."""
    from osgeo import gdal
    os.makedirs(os.path.dirname(os.path.abspath(dest)) or ".", exist_ok=True)
    if os.path.exists(dest):
        os.remove(dest)
    stem = os.path.splitext(os.path.basename(dest))[0]
    ds = gdal.VectorTranslate(dest, src, layers=[layer_name] if layer_name else None, layerName=stem)
    if ds is None:
        raise QgsProcessingException("could not write %s" % dest)
    ds = None
