"""The change report: one self-contained HTML file (its pictures inside) and the same figures as
PNG: a map of the change, the class areas per year, the transition matrix, and for a series of
years the area of each class (and facility) over the years.

The map is drawn with GDAL (always); the charts with matplotlib, which QGIS's Python brings on
every platform we know of -- without it the report says so and gives the tables.
"""
from __future__ import annotations

import base64
import html
import os
from typing import Dict, Optional, Sequence

import numpy as np
from osgeo import gdal

from .compute import Counts, transition_nodata
from .doubt import EDGE_PX, MARGIN_MIN, MARGIN_SUM
from .products import NOT_COVERED, _matrix, background_ids, change_by_class, codes, covered
from ..areas import hectares
from ..model.metadata import rgb

MAP_PX = 1000


def map_png(trans_path: str, classes: Dict[int, str], colours: Dict[int, str], out: str) -> str:
    """The transition raster as a picture (at most ``MAP_PX`` across), nodata white."""
    n = len(classes)
    ds = gdal.Open(trans_path)
    f = min(1.0, MAP_PX / max(ds.RasterXSize, ds.RasterYSize))
    w, h = max(1, int(ds.RasterXSize * f)), max(1, int(ds.RasterYSize * f))
    code = ds.GetRasterBand(1).ReadAsArray(buf_xsize=w, buf_ysize=h).astype(np.int64)
    ds = None
    lut = np.full((max(2 * n * n, transition_nodata(n)) + 1, 3), 255, np.uint8)
    for k, _, c, alpha in codes(classes, colours):
        lut[k] = (235, 235, 235) if alpha == 0 else rgb(c)
    lut[transition_nodata(n)] = (255, 255, 255)
    img = lut[np.clip(code, 0, len(lut) - 1)]
    mem = gdal.GetDriverByName("MEM").Create("", w, h, 3, gdal.GDT_Byte)
    for i in range(3):
        mem.GetRasterBand(i + 1).WriteArray(img[:, :, i])
    gdal.GetDriverByName("PNG").CreateCopy(out, mem)
    mem = None
    for extra in (out + ".aux.xml",):
        if os.path.exists(extra):
            os.remove(extra)
    return out


def charts(counts: Counts, classes: Dict[int, str], colours: Dict[int, str], years: Sequence[str],
           facility_ids: Sequence[str], folder: str, stem: str) -> Dict[str, str]:
    """PNG charts (matplotlib): class areas per year; for 3+ years, areas over the years per class
    and per facility.  ``{}`` without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:   # not installed (or broken): the report says so
        return {}
    n = len(classes)
    bg = background_ids(classes)
    shown = [c for c in range(n) if c not in bg] or list(range(n))
    out = {}
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    width = 0.8 / max(1, len(years))
    for k, y in enumerate(years):
        vals = [hectares(counts.area_year[k][:, c].sum()) for c in shown]
        ax.bar(np.arange(len(shown)) + k * width, vals, width, label=y,
               color=[_shade(colours[c], k, len(years)) for c in shown], edgecolor="#333333", linewidth=0.4)
    ax.set_xticks(np.arange(len(shown)) + width * (len(years) - 1) / 2)
    ax.set_xticklabels([classes[c] for c in shown], rotation=20 if len(shown) > 4 else 0, ha="right" if len(shown) > 4 else "center")
    ax.set_ylabel("hectares")
    ax.set_title("Area per class and year")
    ax.legend(title="year", fontsize=8)
    fig.tight_layout()
    out["areas"] = os.path.join(folder, "%s_class_areas.png" % stem)
    fig.savefig(out["areas"])
    plt.close(fig)
    if len(years) >= 3:
        fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
        x = [int(y) for y in years]
        for c in shown:
            ax.plot(x, [hectares(counts.area_year[k][:, c].sum()) for k in range(len(years))], marker="o",
                    color=colours[c], label=classes[c])
        for i, fid in enumerate(facility_ids[:12]):
            for c in shown:
                ax.plot(x, [hectares(counts.area_year[k][i + 1, c]) for k in range(len(years))], linestyle="--",
                        marker=".", linewidth=0.8, label="%s, %s" % (fid, classes[c]))
        ax.set_xticks(x)
        ax.set_ylabel("hectares")
        ax.set_title("Area over the years")
        ax.legend(fontsize=7)
        fig.tight_layout()
        out["series"] = os.path.join(folder, "%s_series.png" % stem)
        fig.savefig(out["series"])
        plt.close(fig)
    return out


def _shade(colour: str, k: int, n: int) -> str:
    r, g, b = rgb(colour)
    t = 0.55 * (1 - k / max(1, n - 1)) if n > 1 else 0.0
    return "#%02x%02x%02x" % tuple(int(round(v + (255 - v) * t)) for v in (r, g, b))


def _img(path: Optional[str], alt: str) -> str:
    if not path:
        return ""
    with open(path, "rb") as fh:
        data = base64.b64encode(fh.read()).decode("ascii")
    return "<img alt=%s src='data:image/png;base64,%s'>" % (html.escape(alt, quote=True).join("''"), data)


def html_report(path: str, counts: Counts, classes: Dict[int, str], colours: Dict[int, str], years: Sequence[str],
                inputs: Sequence[str], facility_ids: Sequence[str], grid_text: str, pictures: Dict[str, str],
                outputs: Dict[str, str]) -> str:
    n = len(classes)
    names = [classes[k] for k in range(n)]
    e = html.escape
    m, u = _matrix(counts.certain, slice(None)), _matrix(counts.uncertain, slice(None))
    legend = "".join(
        "<li><span class='sw' style='background:%s;opacity:%s'></span>%s</li>"
        % (c, "0.15" if alpha == 0 else "1", e(name)) for _, name, c, alpha in codes(classes, colours))
    rows = "".join("<tr><th>%s</th>%s<td class='tot'>%.2f</td></tr>" % (
        e(names[f]), "".join("<td>%.2f</td>" % v for v in m[f]), m[f].sum()) for f in range(n))
    rows += "".join("<tr class='unc'><th>uncertain: %s</th>%s<td class='tot'>%.2f</td></tr>" % (
        e(names[f]), "".join("<td>%.2f</td>" % v for v in u[f]), u[f].sum()) for f in range(n))
    rows += "<tr><th>total %s</th>%s<td class='tot'>%.2f</td></tr>" % (
        e(years[-1]), "".join("<td class='tot'>%.2f</td>" % v for v in (m + u).sum(axis=0)), (m + u).sum())
    per = change_by_class(counts, slice(None), n)
    byc = "".join("<tr><th>%s</th>%s</tr>" % (e(names[r["class"]]), "".join(
        "<td>%.2f</td>" % r[k] for k in ("before", "after", "gain", "loss", "net", "persistence",
                                          "uncertain_gain", "uncertain_loss"))) for r in per)
    certain_ha, unsure_ha = m.sum() - np.trace(m), u.sum()
    doubt = ("<p><b>Certain and uncertain change:</b> %.2f ha changed with certainty; %.2f ha of change is "
             "<b>uncertain</b> (grey on the map, its own rows below): there either year's run was on the fence "
             "(less than %d %% of the way from its model's threshold to certainty), or both years were unsure "
             "(their margins add up to less than %d %%), or the pixel lies within %d pixels of the edge (or no data) of the raster "
             "one year was segmented from but not of the other's, where one run saw the ground on one side only. Two runs over the same "
             "ground from the same imagery differ there; check uncertain change against the images before counting "
             "it.</p>" % (certain_ha, unsure_ha, MARGIN_MIN, MARGIN_SUM, EDGE_PX))
    areas = "".join("<tr><th>%s</th>%s</tr>" % (e(y), "".join(
        "<td>%.2f</td>" % hectares(counts.area_year[k][:, c].sum()) for c in range(n))) for k, y in enumerate(years))
    fac = ""
    if facility_ids:
        fac = "<h2>Per facility (hectares)</h2><table><tr><th>facility</th><th>year</th>%s</tr>%s</table>" % (
            "".join("<th>%s</th>" % e(x) for x in names),
            "".join("<tr><th>%s</th><td>%s</td>%s</tr>" % (e(fid), e(y), "".join(
                "<td>%.2f</td>" % hectares(counts.area_year[k][i + 1, c]) for c in range(n))
                if covered(counts, i + 1) else "<td colspan='%d' class='note'>%s: outside the compared ground</td>"
                % (n, NOT_COVERED)) for i, fid in enumerate(facility_ids) for k, y in enumerate(years)))
    no_charts = ("" if pictures.get("areas") else
                 "<p class='note'>Charts need matplotlib, which this Python does not have (Python packages… installs "
                 "it); the tables below give the same figures.</p>")
    compared = hectares(counts.common_m2 - counts.nodata_m2)
    doc = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Tailings Mapper – change %(y0)s to %(y1)s</title>
<style>
body{font-family:sans-serif;max-width:1100px;margin:1em auto;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td.tot{font-weight:bold}.note{color:#8a4b00}tr.unc{color:#666;font-style:italic}
ul.legend{columns:3;list-style:none;padding:0}.sw{display:inline-block;width:1em;height:1em;margin-right:.4em;
border:1px solid #888;vertical-align:middle}img{max-width:100%%;border:1px solid #ccc}
</style></head><body>
<h1>Change %(y0)s → %(y1)s</h1>
<p><b>Compared:</b> %(compared).2f ha, the ground every result covers (%(common).2f ha) less %(nodata).2f ha that is
no data, masked (cloud, shadow) or outside a result in some year: those pixels are no data, never change.
Areas are true areas on the ellipsoid. Grid: %(grid)s.</p>
<p><b>Results:</b> %(inputs)s</p>
%(doubt)s
<h2>Map of the change</h2>%(map)s<ul class="legend">%(legend)s</ul>
<h2>Area per class and year (hectares)</h2>%(no_charts)s%(areas_img)s
<table><tr><th>year</th>%(heads)s</tr>%(areas)s</table>
%(series_img)s
<h2>Transitions %(y0)s → %(y1)s (hectares)</h2>
<table><tr><th>%(y0)s \\ %(y1)s</th>%(heads)s<th>total %(y0)s</th></tr>%(rows)s</table>
<h2>Gain, loss and persistence (hectares)</h2>
<table><tr><th>class</th><th>%(y0)s</th><th>%(y1)s</th><th>certain gross gain</th><th>certain gross loss</th>
<th>net change</th><th>persistence</th><th>uncertain gain</th><th>uncertain loss</th></tr>%(byc)s</table>
%(fac)s
<h2>Files</h2><ul>%(files)s</ul>
<p class="note">Made by Tailings Mapper. The maps it compares are a model's, corrected or not: check them against
the images before drawing conclusions.</p>
</body></html>
""" % {"y0": e(years[0]), "y1": e(years[-1]), "compared": compared, "common": hectares(counts.common_m2),
       "nodata": hectares(counts.nodata_m2), "grid": e(grid_text), "doubt": doubt,
       "inputs": "; ".join("%s: %s" % (e(y), e(os.path.basename(i.split("|")[0]))) for y, i in zip(years, inputs)),
       "map": _img(pictures.get("map"), "map of the change"), "legend": legend, "no_charts": no_charts,
       "areas_img": _img(pictures.get("areas"), "area per class and year"),
       "series_img": ("<h2>Area over the years</h2>" + _img(pictures.get("series"), "area over the years"))
       if pictures.get("series") else "",
       "heads": "".join("<th>%s</th>" % e(x) for x in names), "areas": areas, "rows": rows, "byc": byc, "fac": fac,
       "files": "".join("<li>%s: %s</li>" % (e(k), e(os.path.basename(v))) for k, v in outputs.items())}
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(doc)
    return path
