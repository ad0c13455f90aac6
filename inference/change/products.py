"""What a change map writes besides its raster: the transition raster's style and legend, the
change polygons, the CSV tables and ``summary.json``.

Transition code: ``from x N + to`` (N: the classes in the table), so ``tailings -> background``
of a binary table is 1 x 2 + 0 = 2; uncertain change (:mod:`.doubt`) ``N x N + from x N + to``
(``uncertain: tailings -> background`` = 6).  Colours: unchanged background is transparent; a
class that stays is its colour, pale; a class that appears (from background) is its colour; a
class that goes (to background) is dark violet; one class becoming another is the new class's
colour, dark; uncertain change is grey (its polygons grey and hatched).

Uncertain change has its own rows: in the transition table (``uncertain: <class>`` under the
matrix of certain change), in ``summary.json`` (``"uncertain": true``) and its own gain and loss
columns per class.  A facility with no compared ground is ``not covered``, never 0 ha.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from osgeo import gdal, ogr, osr

from .. import provenance
from ..areas import EqualArea, hectares
from ..grid import Grid
from ..model.metadata import BACKGROUND_NAMES, DEFAULT_COLOURS, rgb
from ..output.styles import quoteattr, write_gpkg_style
from .compute import Counts, transition_nodata, uncertain_code
from .doubt import RULE

LOSS = "#542788"
UNCERTAIN = "#9a9a9a"
CHANGE_COLOURS = {"new": "#e66101", "lost": "#5e3c99", "changed class": "#fdb863", "unchanged": "#b2abd2",
                  "uncertain": UNCERTAIN}
NOT_COVERED = "not covered"


def code_text(n: int) -> Dict[str, str]:
    """The transition raster's codes, as its metadata records them."""
    return {provenance.CODE: "from x %d + to" % n, provenance.UNCERTAIN_CODE: "%d + from x %d + to" % (n * n, n)}


def codes(classes: Dict[int, str], colours: Dict[int, str]):
    """Every transition code with its label, colour and alpha (certain, then uncertain change)."""
    n = len(classes)
    bg = background_ids(classes)
    out = [(f * n + t, label(classes, f, t)) + transition_colour(f, t, bg, colours) for f in range(n) for t in range(n)]
    out += [(uncertain_code(n, f, t), "uncertain: " + label(classes, f, t), UNCERTAIN, 255)
            for f in range(n) for t in range(n) if f != t]
    return out


def background_ids(classes: Dict[int, str]) -> set:
    return {k for k, v in classes.items() if v.strip().lower() in BACKGROUND_NAMES}


def colour_of(k: int) -> str:
    return DEFAULT_COLOURS[k % len(DEFAULT_COLOURS)]


def _mix(colour: str, other: str, t: float) -> str:
    a, b = rgb(colour), rgb(other)
    return "#%02x%02x%02x" % tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def transition_colour(f: int, t: int, bg: set, colours: Dict[int, str]):
    """``(colour, alpha)`` of the transition ``f -> t``."""
    if f == t:
        return (colours[f], 0) if f in bg else (_mix(colours[f], "#ffffff", 0.55), 255)
    if f in bg:
        return colours[t], 255
    if t in bg:
        return LOSS, 255
    return _mix(colours[t], "#000000", 0.35), 255


def change_kind(f: int, t: int, bg: set) -> str:
    if f == t:
        return "unchanged"
    if f in bg:
        return "new"
    if t in bg:
        return "lost"
    return "changed class"


def label(classes, f: int, t: int) -> str:
    return "%s -> %s" % (classes[f], classes[t])


def transitions_qml(classes: Dict[int, str], colours: Dict[int, str]) -> str:
    entries = []
    for code, name, c, a in codes(classes, colours):
        r, g, b = rgb(c)
        entries.append('      <paletteEntry value="%d" color="#%02x%02x%02x" alpha="%d" label=%s/>'
                       % (code, r, g, b, a, quoteattr(name)))
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n<qgis version=\"3.22\" styleCategories=\"Symbology\">\n"
            " <pipe>\n  <rasterrenderer type=\"paletted\" band=\"1\" opacity=\"1\" alphaBand=\"-1\" nodataColor=\"\">\n"
            "   <colorPalette>\n%s\n   </colorPalette>\n  </rasterrenderer>\n </pipe>\n</qgis>\n" % "\n".join(entries))


def label_raster(path: str, classes: Dict[int, str], colours: Dict[int, str]) -> None:
    """Category names (``tailings -> background``) and the colour table on the transition raster,
    its style beside it."""
    n = len(classes)
    ds = gdal.Open(path, gdal.GA_Update)
    b = ds.GetRasterBand(1)
    entries = codes(classes, colours)
    names = [""] * (2 * n * n)
    for code, name, _, _ in entries:
        names[code] = name
    if b.DataType == gdal.GDT_Byte:   # (first: GDAL's GTiff forgets category names set before a colour table)
        ct = gdal.ColorTable()
        for code, _, c, a in entries:
            ct.SetColorEntry(code, rgb(c) + (a,))
        ct.SetColorEntry(transition_nodata(n), (0, 0, 0, 0))
        b.SetRasterColorTable(ct)
        b = ds = None
        ds = gdal.Open(path, gdal.GA_Update)
        b = ds.GetRasterBand(1)
    b.SetCategoryNames(names)
    b = ds = None
    with open(os.path.splitext(path)[0] + ".qml", "w", encoding="utf-8") as fh:
        fh.write(transitions_qml(classes, colours))


def change_polygons(trans_path: str, fac_path: Optional[str], facility_ids: Sequence[str], grid: Grid,
                    classes: Dict[int, str], years: Sequence[str], gpkg: str, layer_name: str, cancel) -> int:
    """Polygons of every transition but background staying background (per facility when
    given): class_before, class_after, change, area_ha (true), both years, facility id."""
    n = len(classes)
    bg = background_ids(classes)
    nd = transition_nodata(n)
    tds = gdal.Open(trans_path)
    W, H = grid.width, grid.height
    mem = gdal.GetDriverByName("MEM").Create("", W, H, 1, gdal.GDT_UInt32)
    mem.SetGeoTransform(grid.gt)
    mem.SetProjection(grid.wkt)
    mask = gdal.GetDriverByName("MEM").Create("", W, H, 1, gdal.GDT_Byte)
    fds = gdal.Open(fac_path) if fac_path else None
    skip = {b * n + b for b in bg}
    for y in range(0, H, 512):
        h = min(512, H - y)
        code = tds.GetRasterBand(1).ReadAsArray(0, y, W, h).astype(np.int64)
        fac = fds.GetRasterBand(1).ReadAsArray(0, y, W, h).astype(np.int64) if fds is not None else 0
        keep = (code != nd) & ~np.isin(code, list(skip))
        mem.GetRasterBand(1).WriteArray(np.where(keep, fac * 2 * n * n + code, 0).astype(np.uint32), 0, y)
        mask.GetRasterBand(1).WriteArray(keep.astype(np.uint8), 0, y)
    tds = fds = None
    srs = osr.SpatialReference()
    srs.ImportFromWkt(grid.wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    out = ogr.GetDriverByName("GPKG").CreateDataSource(gpkg)
    lyr = out.CreateLayer(layer_name, srs, ogr.wkbPolygon, options=["GEOMETRY_NAME=geom", "FID=fid"])
    for name, kind in (("key", ogr.OFTInteger64), ("class_before", ogr.OFTString), ("class_after", ogr.OFTString),
                       ("change", ogr.OFTString), ("area_ha", ogr.OFTReal), ("year_before", ogr.OFTString),
                       ("year_after", ogr.OFTString), ("facility_id", ogr.OFTString), ("uncertain", ogr.OFTInteger)):
        lyr.CreateField(ogr.FieldDefn(name, kind))
    out.StartTransaction()
    gdal.Polygonize(mem.GetRasterBand(1), mask.GetRasterBand(1), lyr, 0, [])
    out.CommitTransaction()
    out.StartTransaction()
    count = 0
    measure = EqualArea.of_grid(grid)
    lyr.ResetReading()
    for feat in lyr:
        if count % 200 == 0 and cancel():
            break
        key = int(feat.GetField("key"))
        fi, code = divmod(key, 2 * n * n)
        unsure = code >= n * n
        f, t = divmod(code - n * n if unsure else code, n)
        feat.SetField("class_before", classes[f])
        feat.SetField("class_after", classes[t])
        feat.SetField("change", "uncertain" if unsure else change_kind(f, t, bg))
        feat.SetField("uncertain", int(unsure))
        feat.SetField("area_ha", round(hectares(measure.area_m2(feat.GetGeometryRef())), 4))
        feat.SetField("year_before", years[0])
        feat.SetField("year_after", years[-1])
        if fi:
            feat.SetField("facility_id", facility_ids[fi - 1])
        lyr.SetFeature(feat)
        count += 1
    out.CommitTransaction()
    lyr.SetMetadata({provenance.YEARS: ",".join(years), **code_text(n)})
    lyr = None
    write_gpkg_style(out, layer_name, change_qml())
    out = mem = mask = None
    return count


def change_qml() -> str:
    cats, syms = [], []
    for i, (k, c) in enumerate(CHANGE_COLOURS.items()):
        r, g, b = rgb(c)
        cats.append('   <category render="true" value=%s symbol="%d" label=%s/>' % (quoteattr(k), i, quoteattr(k)))
        syms.append('   <symbol type="fill" name="%d" alpha="1" clip_to_extent="1" force_rhr="0">\n'
                    '    <layer class="SimpleFill" enabled="1" locked="0" pass="0">\n'
                    '     <prop k="color" v="%d,%d,%d,110"/>\n     <prop k="outline_color" v="%d,%d,%d,255"/>\n'
                    '     <prop k="outline_width" v="0.4"/>\n     <prop k="style" v="%s"/>\n    </layer>\n   </symbol>'
                    % (i, r, g, b, r, g, b, "b_diagonal" if k == "uncertain" else "solid"))
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n<qgis version=\"3.22\" styleCategories=\"Symbology\">\n"
            ' <renderer-v2 type="categorizedSymbol" attr="change" forceraster="0" symbollevels="0" enableorderby="0">\n'
            "  <categories>\n%s\n  </categories>\n  <symbols>\n%s\n  </symbols>\n </renderer-v2>\n"
            " <layerGeometryType>2</layerGeometryType>\n</qgis>\n" % ("\n".join(cats), "\n".join(syms)))


def covered(counts: Counts, i: int) -> bool:
    """Whether facility ``i`` (1..F) has compared ground."""
    return bool(counts.facility_m2[i] > 0)


def _matrix(m: np.ndarray, idx) -> np.ndarray:
    m = m[idx]
    return hectares(m.sum(axis=0) if m.ndim == 3 else m)


def tables(counts: Counts, classes: Dict[int, str], years: Sequence[str], facility_ids: Sequence[str],
           folder: str, stem: str) -> Dict[str, str]:
    """The CSV tables (hectares): class areas per year, the transition matrix (first -> last) of
    certain change with the uncertain change in its own rows (``uncertain: <class>``) and totals,
    gross gain, loss (certain, then uncertain), net change and persistence per class; per facility
    when given, a facility with no compared ground ``not covered``."""
    n = len(classes)
    names = [classes[k] for k in range(n)]
    groups = [("all", slice(None), True)] + [(fid, i + 1, covered(counts, i + 1)) for i, fid in enumerate(facility_ids)]
    paths = {k: os.path.join(folder, "%s_%s.csv" % (stem, k)) for k in ("class_areas", "transitions", "change_by_class")}
    with open(paths["class_areas"], "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["facility", "year"] + names)
        for g, idx, cov in groups:
            for k, y in enumerate(years):
                a = counts.area_year[k][idx]
                a = a.sum(axis=0) if a.ndim == 2 else a
                w.writerow([g, y] + (["%.4f" % hectares(v) for v in a] if cov else [NOT_COVERED] * n))
    with open(paths["transitions"], "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        for g, idx, cov in groups:
            w.writerow(["facility", "%s \\ %s" % (years[0], years[-1])] + names + ["total %s" % years[0]])
            if not cov:
                w.writerow([g, NOT_COVERED] + [NOT_COVERED] * (n + 1))
                continue
            m, u = _matrix(counts.certain, idx), _matrix(counts.uncertain, idx)
            for f in range(n):
                w.writerow([g, names[f]] + ["%.4f" % v for v in m[f]] + ["%.4f" % m[f].sum()])
            for f in range(n):
                w.writerow([g, "uncertain: %s" % names[f]] + ["%.4f" % v for v in u[f]] + ["%.4f" % u[f].sum()])
            m = m + u
            w.writerow([g, "total %s" % years[-1]] + ["%.4f" % v for v in m.sum(axis=0)] + ["%.4f" % m.sum()])
    keys = ("before", "after", "gain", "loss", "net", "persistence", "uncertain_gain", "uncertain_loss")
    with open(paths["change_by_class"], "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["facility", "class", "area_%s_ha" % years[0], "area_%s_ha" % years[-1], "gross_gain_ha",
                    "gross_loss_ha", "net_change_ha", "persistence_ha", "uncertain_gain_ha", "uncertain_loss_ha"])
        for g, idx, cov in groups:
            for row in change_by_class(counts, idx, n):
                w.writerow([g, names[row["class"]]] + (["%.4f" % row[k] for k in keys] if cov
                                                       else [NOT_COVERED] * len(keys)))
    return paths


def change_by_class(counts: Counts, idx, n: int) -> List[Dict]:
    """Per class: areas before and after, certain gross gain and loss, uncertain gain and loss, net
    change (all of it) and persistence."""
    m, u = _matrix(counts.certain, idx), _matrix(counts.uncertain, idx)
    a = m + u
    out = []
    for c in range(n):
        stay = m[c, c]
        out.append({"class": c, "before": a[c].sum(), "after": a[:, c].sum(), "gain": m[:, c].sum() - stay,
                    "loss": m[c].sum() - stay, "uncertain_gain": u[:, c].sum(), "uncertain_loss": u[c].sum(),
                    "net": a[:, c].sum() - a[c].sum(), "persistence": stay})
    return out


def summary(counts: Counts, classes: Dict[int, str], years: Sequence[str], facility_ids: Sequence[str],
            grid_text: str) -> Dict:
    n = len(classes)
    total = hectares(counts.certain.sum(axis=0))
    unsure = hectares(counts.uncertain.sum(axis=0))
    area = lambda k: {classes[c]: round(float(hectares(counts.area_year[k][:, c].sum())), 4) for c in range(n)}   # noqa: E731
    out = {"years": [years[0], years[-1]],
           "area_ha": {years[0]: area(0), years[-1]: area(len(years) - 1)},
           "transitions": [{"from": classes[f], "to": classes[t], "area_ha": round(float(total[f, t]), 4),
                            "uncertain": False} for f in range(n) for t in range(n)]
           + [{"from": classes[f], "to": classes[t], "area_ha": round(float(unsure[f, t]), 4), "uncertain": True}
              for f in range(n) for t in range(n) if f != t],
           "certain_change_ha": round(float(total.sum() - np.trace(total)), 4),
           "uncertain_change_ha": round(float(unsure.sum()), 4),
           "uncertain_rule": RULE,
           "series": {"years": list(years), "area_ha": {y: area(k) for k, y in enumerate(years)}},
           "common_area_ha": round(hectares(counts.common_m2), 4),
           "nodata_area_ha": round(hectares(counts.nodata_m2), 4),
           "compared_area_ha": round(hectares(counts.common_m2 - counts.nodata_m2), 4),
           "grid": grid_text, "code": code_text(n)[provenance.CODE],
           "uncertain_code": code_text(n)[provenance.UNCERTAIN_CODE]}
    if facility_ids:
        out["facilities"] = {fid: ({y: {classes[c]: round(float(hectares(counts.area_year[k][i + 1, c])), 4)
                                        for c in range(n)} for k, y in enumerate(years)}
                                   if covered(counts, i + 1) else NOT_COVERED)
                             for i, fid in enumerate(facility_ids)}
        out["facilities_not_covered"] = [fid for i, fid in enumerate(facility_ids) if not covered(counts, i + 1)]
    return out


def doubt_lines(s: Dict) -> List[str]:
    """What a summary says of certain and uncertain change and of facilities not covered (the
    command line's lines, Processing's log)."""
    out = ["change: %.2f ha certain, %.2f ha uncertain (%s)" % (s["certain_change_ha"], s["uncertain_change_ha"],
                                                               s["uncertain_rule"])]
    if s.get("facilities_not_covered"):
        out.append("not covered (outside the compared ground): %s" % ", ".join(s["facilities_not_covered"]))
    return out


def write_json(path: str, d: Dict) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(d, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    return path
