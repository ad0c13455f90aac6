#!/usr/bin/env python3
"""The README's change report picture: a constructed example (three years of two facilities whose
ponds grow, shrink and turn from water to tailings), its change map, and the report rendered by
Qt's web engine (QtWebKit, which QGIS brings).

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/change_example.py [--out out/change_example]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from osgeo import gdal, ogr, osr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from inference import provenance  # noqa: E402

CLASSES = {0: "background", 1: "tailings", 2: "water"}
COLOURS = {0: (0, 0, 0), 1: (230, 85, 13), 2: (49, 130, 189)}


def _raster(path, arr, year):
    h, w = arr.shape
    ds = gdal.GetDriverByName("GTiff").Create(path, w, h, 1, gdal.GDT_Byte)
    ds.SetGeoTransform((500000.0, 10.0, 0, 7700000.0, 0, -10.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32723)
    ds.SetProjection(srs.ExportToWkt())
    b = ds.GetRasterBand(1)
    b.WriteArray(arr)
    b.SetNoDataValue(255)
    ct = gdal.ColorTable()
    for k, c in COLOURS.items():
        ct.SetColorEntry(k, c + (255,))
    b.SetRasterColorTable(ct)
    ds.SetMetadata(dict(provenance.class_table(CLASSES), **{provenance.DATE: str(year)}))
    ds = None
    return path


def _disc(a, cy, cx, r, v):
    yy, xx = np.mgrid[0:a.shape[0], 0:a.shape[1]]
    a[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = v


def build(out: str):
    os.makedirs(out, exist_ok=True)
    paths = []
    for k, year in enumerate((2019, 2021, 2023)):
        a = np.zeros((400, 500), np.uint8)
        _disc(a, 120, 130, 50 + 25 * k, 1)          # facility A's pond grows
        _disc(a, 260, 360, 70 - 20 * k, 1)          # facility B's pond shrinks
        _disc(a, 300, 120, 35, 2 if k == 0 else 1)  # water becomes tailings
        if k == 1:
            a[:40, 400:] = 250                       # a cloud in 2021
        paths.append(_raster(os.path.join(out, "%d_classes.tif" % year), a, year))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32723)
    fac = os.path.join(out, "facilities.gpkg")
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(fac)
    lyr = ds.CreateLayer("facilities", srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("dam_id", ogr.OFTString))
    for fid, (r, c, rad) in (("MG-001", (120, 130, 150)), ("MG-002", (260, 360, 120))):
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetField("dam_id", fid)
        f.SetGeometry(ogr.CreateGeometryFromWkt("POINT(%r %r)" % (500000 + 10 * c, 7700000 - 10 * r)).Buffer(10 * rad))
        lyr.CreateFeature(f)
    ds = None
    return paths, fac


def screenshot(html_path: str, png: str, width: int = 1100) -> str:
    from qgis.PyQt.QtCore import QEventLoop, QSize, QUrl
    from qgis.PyQt.QtGui import QImage, QPainter
    from qgis.PyQt.QtWidgets import QApplication
    from qgis.PyQt.QtWebKitWidgets import QWebPage  # QGIS 3 only (Qt 6 has no QtWebKit): a dev script
    app = QApplication.instance() or QApplication(sys.argv)
    page = QWebPage()
    loop = QEventLoop()
    page.mainFrame().loadFinished.connect(loop.quit)
    page.mainFrame().load(QUrl.fromLocalFile(os.path.abspath(html_path)))
    loop.exec()
    page.setViewportSize(QSize(width, 800))
    size = page.mainFrame().contentsSize()
    size.setHeight(min(size.height(), 2600))
    page.setViewportSize(size)
    img = QImage(size, QImage.Format.Format_ARGB32)
    img.fill(0xFFFFFFFF)
    p = QPainter(img)
    page.mainFrame().render(p)
    p.end()
    img.save(png)
    del app
    return png


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "out", "change_example"))
    ap.add_argument("--png", default=os.path.join(ROOT, "docs", "change_report.png"))
    a = ap.parse_args()
    from inference.change import ChangeOptions, change
    paths, fac = build(a.out)
    res = change(paths, os.path.join(a.out, "change"), ChangeOptions(facilities=fac, facility_field="dam_id",
                                                                      overwrite=True))
    print("report: %s" % res.outputs["report"])
    print("picture: %s" % screenshot(res.outputs["report"], a.png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
