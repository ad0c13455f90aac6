"""Processing parameters generated from the engine's option table, and the options read back.

Every option with ``"processing"`` in its fronts becomes a parameter named ``NAME.upper()``:
numbers as number parameters (empty: the model's value), choices as enums of their text forms
(static strings, so ``qgis_process ... TTA=4`` and batch mode take the text), scales and band
mappings as text in the command line's form (``SCALES=1,0.5``), the extent and the area of
interest as QGIS's own extent and feature-source parameters.  Values are checked by the
engine, which names the option; the algorithm shows that message.
"""
from __future__ import annotations

from typing import Dict, List

from qgis.core import (QgsProcessingException, QgsProcessingParameterBoolean, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterExtent, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterField, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterMultipleLayers, QgsProcessingParameterNumber,
                       QgsProcessingParameterString)

from ..inference.run.options import Option, for_front
from ..qgis_glue import compat


def parameter_name(o: Option) -> str:
    return o.param or o.name.upper()


def make_parameter(o: Option, check_boxes: bool = False) -> QgsProcessingParameterDefinition:
    """``o``'s parameter (``check_boxes``: on/off options as check boxes, as training's are; a
    run's stay text, ``true``/``false``)."""
    name = parameter_name(o)
    optional = (o.model_default or o.default is None) and not o.required
    label = o.label + (" (empty = %s)" % o.unset_label if o.model_default else "")
    if o.kind in ("int", "float"):
        p = QgsProcessingParameterNumber(
            name, label, compat.NUMBER_INTEGER if o.kind == "int" else compat.NUMBER_DOUBLE,
            defaultValue=None if optional else o.default, optional=optional)
        if o.minimum is not None:
            p.setMinimum(o.minimum)
        if o.maximum is not None:
            p.setMaximum(o.maximum)
    elif o.kind == "choice":
        options = ([o.unset_label] if o.unset_label and optional else []) + [o.format(c) for c in o.choices]
        p = QgsProcessingParameterEnum(name, label, options=options, allowMultiple=False,
                                       defaultValue=o.format(o.default) if o.default is not None else options[0],
                                       usesStaticStrings=True)
    elif o.kind == "extent":
        p = QgsProcessingParameterExtent(name, o.label + " (default: whole raster)", optional=True)
    elif o.kind == "bool" and check_boxes:
        p = QgsProcessingParameterBoolean(name, o.label, bool(o.default))
    elif o.kind == "files":
        p = QgsProcessingParameterMultipleLayers(name, o.label, compat.SOURCE_RASTER)
    elif o.kind == "vector":
        p = QgsProcessingParameterFeatureSource(name, o.label, [compat.SOURCE_VECTOR_POLYGON], optional=optional)
    elif o.kind == "field":
        p = QgsProcessingParameterField(name, o.label, parentLayerParameterName=o.parent.upper(), optional=optional)
    elif o.kind == "model_file":
        p = QgsProcessingParameterFileDestination(name, o.label, "ONNX models (*.onnx)", optional=optional,
                                                  createByDefault=False)
    elif o.kind == "aoi":
        p = QgsProcessingParameterFeatureSource(name, o.label + " (polygons; pixels outside get no class)",
                                                [compat.SOURCE_VECTOR_POLYGON], optional=True)
    else:  # scales, bands, text: the command line's text form
        hint = {"scales": " (e.g. 1,0.5; empty = model default)", "text": "",
                "bands": " (e.g. 3,2,1 or S2:B04=3,S2:B03=2,S2:B02=1)"}.get(o.kind, "")
        p = QgsProcessingParameterString(name, o.label + hint, defaultValue=o.default, optional=optional)
    p.setHelp(o.describe())
    if o.advanced:
        p.setFlags(p.flags() | compat.PARAMETER_ADVANCED)
    return p


def parameters() -> List[QgsProcessingParameterDefinition]:
    """The option parameters, in the table's order."""
    return [make_parameter(o) for o in for_front("processing")]


def option_texts(alg, parameters: Dict, context, skip=("extent", "aoi")) -> Dict[str, str]:
    """The text form of each option parameter given (what the engine parses)."""
    out = {}
    for o in for_front("processing"):
        name = parameter_name(o)
        if o.name in skip or parameters.get(name) in (None, ""):
            continue
        if o.kind in ("int", "float"):
            value = (alg.parameterAsInt if o.kind == "int" else alg.parameterAsDouble)(parameters, name, context)
            out[o.name] = o.format(value)
        elif o.kind == "choice":
            out[o.name] = alg.parameterAsEnumString(parameters, name, context)
        else:
            out[o.name] = alg.parameterAsString(parameters, name, context).strip()
    return out


def help_html() -> str:
    """The options' help, for the algorithm's help text."""
    return "<br>".join("<b>%s</b> (%s): %s" % (o.label, parameter_name(o), o.describe())
                       for o in for_front("processing"))


def processing_error(e) -> QgsProcessingException:
    """The engine's message, naming the parameter when one option is at fault."""
    opt = getattr(e, "option", None)
    return QgsProcessingException(("%s: %s" % (opt.upper(), e)) if opt else str(e))
