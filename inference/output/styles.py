"""QGIS styles (QML) for the outputs, written by the engine itself (plain XML, no QGIS needed).

Saved with the outputs so that whoever opens them later sees what the analyst saw: a ``.qml``
beside each GeoTIFF (QGIS loads ``<name>.qml`` as the default style of ``<name>.tif``) and the
polygons' style in the GeoPackage's ``layer_styles`` table (QGIS's own convention, the default
style of the layer).  The defaults let the imagery show through: polygons as outlines with a
light fill, the class raster with a transparent background, the confidence as a grey ramp.
"""
from __future__ import annotations

import datetime
from html import escape
from typing import Iterable, Optional, Sequence

from ..model.metadata import ClassInfo

QGIS_VERSION = "3.22.0-Białowieża"   # the oldest QGIS the plugin supports; later versions read it
FILL_ALPHA = 40                      # of 255: a light tint, the imagery stays readable
OUTLINE_MM = 0.6
FIELD_ALIASES = (("class_id", "Class id"), ("class_name", "Class"), ("area_m2", "Area (m²)"),
                 ("area_ha", "Area (ha)"), ("perimeter_m", "Perimeter (m)"),
                 ("mean_confidence", "Mean confidence (%)"), ("source", "Source image"), ("model", "Model"),
                 ("run_time", "Run time"))


def quoteattr(value: str) -> str:
    """``value`` as a double-quoted XML attribute (``&``, ``<``, ``>``, quotes, tabs and line
    breaks escaped): what ``xml.sax.saxutils.quoteattr`` gives, without the SAX package."""
    text = escape(value, quote=False).replace('"', "&quot;")
    return '"%s"' % text.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")


def _head(categories: str) -> str:
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            "<qgis version=%s styleCategories=%s>\n" % (quoteattr(QGIS_VERSION), quoteattr(categories)))


def _fill_layer(rgb, alpha: int) -> str:
    props = (("color", "%d,%d,%d,%d" % (rgb + (alpha,))), ("outline_color", "%d,%d,%d,255" % rgb),
             ("outline_style", "solid"), ("outline_width", "%g" % OUTLINE_MM), ("outline_width_unit", "MM"),
             ("style", "solid"), ("joinstyle", "bevel"))
    opts = "".join('      <Option type="QString" name=%s value=%s/>\n' % (quoteattr(k), quoteattr(v)) for k, v in props)
    legacy = "".join('     <prop k=%s v=%s/>\n' % (quoteattr(k), quoteattr(v)) for k, v in props)
    return ('    <layer class="SimpleFill" enabled="1" locked="0" pass="0">\n'
            '     <Option type="Map">\n%s     </Option>\n%s    </layer>\n' % (opts, legacy))


def polygons_qml(classes: Sequence[ClassInfo], field: str = "class_id") -> str:
    """Categorized by ``field``, one outlined, lightly filled symbol per class (background has
    no polygons), with readable field aliases."""
    shown = [c for c in classes if not c.is_background]
    cats = "".join('   <category render="true" symbol="%d" value="%d" label=%s/>\n' % (k, c.id, quoteattr(c.name))
                   for k, c in enumerate(shown))
    syms = "".join('   <symbol type="fill" name="%d" alpha="1" clip_to_extent="1" force_rhr="0">\n%s   </symbol>\n'
                   % (k, _fill_layer(c.rgb, FILL_ALPHA)) for k, c in enumerate(shown))
    aliases = "".join(' <alias field=%s index="%d" name=%s/>\n' % (quoteattr(f), i + 1, quoteattr(a))
                      for i, (f, a) in enumerate(FIELD_ALIASES))
    return (_head("Symbology|Fields")
            + ' <renderer-v2 type="categorizedSymbol" attr=%s forceraster="0" enableorderby="0" symbollevels="0">\n'
            % quoteattr(field)
            + "  <categories>\n%s  </categories>\n  <symbols>\n%s  </symbols>\n </renderer-v2>\n" % (cats, syms)
            + " <blendMode>0</blendMode>\n <featureBlendMode>0</featureBlendMode>\n"
            + " <aliases>\n%s </aliases>\n <layerGeometryType>2</layerGeometryType>\n</qgis>\n" % aliases)


def _raster(renderer: str) -> str:
    return (_head("Symbology") + " <pipe>\n%s  <brightnesscontrast brightness=\"0\" contrast=\"0\" gamma=\"1\"/>\n"
            "  <huesaturation saturation=\"0\" grayscaleMode=\"0\" colorizeOn=\"0\" colorizeRed=\"255\" "
            "colorizeGreen=\"128\" colorizeBlue=\"128\" colorizeStrength=\"100\" invertColors=\"0\"/>\n"
            "  <rasterresampler maxOversampling=\"2\"/>\n </pipe>\n <blendMode>0</blendMode>\n</qgis>\n" % renderer)


def classes_qml(classes: Iterable[ClassInfo], opacity: float = 0.7) -> str:
    """Paletted: each class in its colour and name (the legend); background not drawn (and not
    listed: values without an entry are transparent), nodata transparent."""
    entries = "".join('    <paletteEntry value="%d" color=%s alpha="255" label=%s/>\n'
                      % (c.id, quoteattr(c.color), quoteattr(c.name)) for c in classes if not c.is_background)
    return _raster('  <rasterrenderer type="paletted" band="1" opacity="%g" alphaBand="-1" nodataColor="">\n'
                   '   <colorPalette>\n%s   </colorPalette>\n  </rasterrenderer>\n' % (opacity, entries))


def confidence_qml() -> str:
    """A grey ramp over 0-100 % (black: certain background, white: certain class)."""
    return _raster('  <rasterrenderer type="singlebandgray" grayBand="1" opacity="1" alphaBand="-1" '
                   'gradient="BlackToWhite" nodataColor="">\n'
                   '   <contrastEnhancement><minValue>0</minValue><maxValue>100</maxValue>'
                   '<algorithm>StretchToMinimumMaximum</algorithm></contrastEnhancement>\n'
                   '  </rasterrenderer>\n')


def write_gpkg_style(gpkg, layer_name: str, qml: str, name: str = "Tailings Mapper") -> None:
    """Store ``qml`` as the default style of ``layer_name`` in an open OGR GeoPackage data
    source ``gpkg`` (the ``layer_styles`` table QGIS reads and writes)."""
    from osgeo import ogr
    styles = gpkg.GetLayerByName("layer_styles")
    if styles is None:
        styles = gpkg.CreateLayer("layer_styles", None, ogr.wkbNone)
        for fname, ftype in (("f_table_catalog", ogr.OFTString), ("f_table_schema", ogr.OFTString),
                             ("f_table_name", ogr.OFTString), ("f_geometry_column", ogr.OFTString),
                             ("styleName", ogr.OFTString), ("styleQML", ogr.OFTString),
                             ("styleSLD", ogr.OFTString), ("useAsDefault", ogr.OFTInteger),
                             ("description", ogr.OFTString), ("owner", ogr.OFTString), ("ui", ogr.OFTString),
                             ("update_time", ogr.OFTDateTime)):
            styles.CreateField(ogr.FieldDefn(fname, ftype))
    f = ogr.Feature(styles.GetLayerDefn())
    for k, v in (("f_table_catalog", ""), ("f_table_schema", ""), ("f_table_name", layer_name),
                 ("f_geometry_column", "geom"), ("styleName", name), ("styleQML", qml), ("styleSLD", ""),
                 ("description", "written by Tailings Mapper"), ("owner", "")):
        f.SetField(k, v)
    f.SetField("useAsDefault", 1)
    f.SetField("update_time", datetime.datetime.now().strftime("%Y/%m/%d %H:%M:%S"))
    styles.CreateFeature(f)


def tiles_qml(threshold: float) -> str:
    """Unreliable tiles (``unreliable = 1``) hatched in red; the others not drawn."""
    layer = ('    <layer class="SimpleFill" enabled="1" locked="0" pass="0">\n     <Option type="Map">\n'
             '      <Option type="QString" name="color" value="215,25,28,255"/>\n'
             '      <Option type="QString" name="style" value="b_diagonal"/>\n'
             '      <Option type="QString" name="outline_color" value="215,25,28,255"/>\n'
             '      <Option type="QString" name="outline_width" value="0.5"/>\n'
             '      <Option type="QString" name="outline_width_unit" value="MM"/>\n'
             '     </Option>\n     <prop k="color" v="215,25,28,255"/>\n     <prop k="style" v="b_diagonal"/>\n'
             '     <prop k="outline_color" v="215,25,28,255"/>\n     <prop k="outline_width" v="0.5"/>\n'
             '    </layer>\n')
    return (_head("Symbology")
            + ' <renderer-v2 type="RuleRenderer" forceraster="0" enableorderby="0" symbollevels="0">\n'
            + '  <rules key="root">\n   <rule key="unreliable" symbol="0" filter="&quot;unreliable&quot; = 1" '
            + 'label=%s/>\n  </rules>\n' % quoteattr("unlike the training data (score above %g)" % threshold)
            + '  <symbols>\n   <symbol type="fill" name="0" alpha="1" clip_to_extent="1" force_rhr="0">\n%s'
            % layer + '   </symbol>\n  </symbols>\n </renderer-v2>\n <layerGeometryType>2</layerGeometryType>\n</qgis>\n')


REVIEW_ALIASES = (("for_review", "Marked for review (unlike the training tailings)"),
                  ("tailings_distance", "Distance to the training tailings (over 1: marked)"))


def _review_fill(rgb) -> str:
    """A region marked for review: its class colour, hatched, dashed outline."""
    props = (("color", "%d,%d,%d,255" % rgb), ("outline_color", "%d,%d,%d,255" % rgb), ("outline_style", "dash"),
             ("outline_width", "%g" % OUTLINE_MM), ("outline_width_unit", "MM"), ("style", "b_diagonal"),
             ("joinstyle", "bevel"))
    opts = "".join('      <Option type="QString" name=%s value=%s/>\n' % (quoteattr(k), quoteattr(v)) for k, v in props)
    legacy = "".join('     <prop k=%s v=%s/>\n' % (quoteattr(k), quoteattr(v)) for k, v in props)
    return ('    <layer class="SimpleFill" enabled="1" locked="0" pass="0">\n'
            '     <Option type="Map">\n%s     </Option>\n%s    </layer>\n' % (opts, legacy))


def polygons_review_qml(classes: Sequence[ClassInfo]) -> str:
    """Like :func:`polygons_qml`, with the regions marked for review (``for_review = 1``) drawn
    hatched with a dashed outline, under a legend entry of their own per class."""
    shown = [c for c in classes if not c.is_background]
    rules, syms = [], []
    for k, c in enumerate(shown):
        keep = '&quot;class_id&quot; = %d AND coalesce(&quot;for_review&quot;, 0) = 0' % c.id
        marked = '&quot;class_id&quot; = %d AND &quot;for_review&quot; = 1' % c.id
        rules.append('   <rule key="c%d" symbol="%d" filter="%s" label=%s/>\n' % (c.id, 2 * k, keep, quoteattr(c.name)))
        rules.append('   <rule key="r%d" symbol="%d" filter="%s" label=%s/>\n' % (
            c.id, 2 * k + 1, marked, quoteattr("%s: marked for review (unlike the training tailings)" % c.name)))
        for j, body in ((2 * k, _fill_layer(c.rgb, FILL_ALPHA)), (2 * k + 1, _review_fill(c.rgb))):
            syms.append('   <symbol type="fill" name="%d" alpha="1" clip_to_extent="1" force_rhr="0">\n%s   </symbol>\n'
                        % (j, body))
    aliases = "".join(' <alias field=%s index="%d" name=%s/>\n' % (quoteattr(f), i + 1, quoteattr(a))
                      for i, (f, a) in enumerate(FIELD_ALIASES + REVIEW_ALIASES))
    return (_head("Symbology|Fields")
            + ' <renderer-v2 type="RuleRenderer" forceraster="0" enableorderby="0" symbollevels="0">\n'
            + '  <rules key="root">\n%s  </rules>\n  <symbols>\n%s  </symbols>\n </renderer-v2>\n'
            % ("".join(rules), "".join(syms))
            + " <blendMode>0</blendMode>\n <featureBlendMode>0</featureBlendMode>\n"
            + " <aliases>\n%s </aliases>\n <layerGeometryType>2</layerGeometryType>\n</qgis>\n" % aliases)


def write_styles(classes: Sequence[ClassInfo], classes_path: Optional[str], confidence_path: Optional[str]) -> None:
    """The result rasters' QGIS styles (``<stem>_classes.qml``, ``<stem>_confidence.qml``), where named."""
    for path, text in ((classes_path, classes_qml(classes)), (confidence_path, confidence_qml())):
        if path:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
