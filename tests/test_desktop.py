"""Desktop QGIS under Xvfb with the plugin enabled in a fresh profile: load a raster, click
"Segment tailings", wait for the layers, save a screenshot.

Also a command to refresh the README screenshot (real QGIS, real tile, a model of your choice):

    .venv/bin/python tests/test_desktop.py --raster TILE.tif --model models/tailings.onnx \
        --out docs/screenshot.png
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the driver's prelude (imports, the report, quitting), shared with tests/test_desktop_shots.py
DRIVER_PRELUDE = r'''
import json, os, time, traceback
from qgis.utils import iface, plugins
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer, QgsApplication
from qgis.PyQt.QtCore import QTimer, QSize, Qt
from qgis.PyQt.QtWidgets import QDockWidget, QToolBar

RASTER = os.environ["TM_RASTER"]
OUT = os.environ["TM_OUT"]
SHOT = os.environ["TM_SHOT"]
T0 = time.time()
report = {"log": []}


def log(msg):
    report["log"].append("%.1f %s" % (time.time() - T0, msg))
    with open(os.path.join(OUT, "report.json"), "w") as f:
        json.dump(report, f, indent=1)


def finish(code=0):
    report["exit"] = code
    log("quit")
    QgsProject.instance().setDirty(False)
    QTimer.singleShot(200, lambda: os._exit(code))
'''

DRIVER = DRIVER_PRELUDE + r'''

def start():
    try:
        mw = iface.mainWindow()
        mw.resize(QSize(1600, 900))
        mw.showMaximized()
        for d in mw.findChildren(QDockWidget):
            if d.objectName() == "Browser":
                d.hide()  # more room for the layer tree in the screenshot
        layers_dock = [d for d in mw.findChildren(QDockWidget) if d.objectName() == "Layers"]
        if layers_dock:
            mw.resizeDocks(layers_dock, [330], Qt.Horizontal)
        lyr = iface.addRasterLayer(RASTER, os.environ.get("TM_LAYER_NAME", "Sentinel-2 scene"))
        log("raster valid: %s" % (lyr is not None and lyr.isValid()))
        rgb = os.environ.get("TM_RGB")
        if rgb:  # e.g. "3,2,1" for a B2,B3,B4 raster shown in true colour
            r, g, b = (int(x) for x in rgb.split(","))
            ren = lyr.renderer()
            ren.setRedBand(r)
            ren.setGreenBand(g)
            ren.setBlueBand(b)
            lyr.setDefaultContrastEnhancement()
            lyr.triggerRepaint()
        iface.setActiveLayer(lyr)
        plugin = plugins.get("tailings_mapper")
        report["plugin_loaded"] = plugin is not None
        if plugin is None:
            log("plugin not loaded; plugins: %s" % list(plugins))
            return finish(3)
        plugin.show_panel(True)
        acts = [a for tb in mw.findChildren(QToolBar) for a in tb.actions() if a.text() == "Segment tailings"]
        report["toolbar_actions"] = len(acts)
        log("clicking Segment tailings (%d actions)" % len(acts))
        acts[0].trigger()
        report["tasks_started"] = len(plugin.tasks)
        QTimer.singleShot(300, poll)
    except Exception:
        log(traceback.format_exc())
        finish(4)


def poll():
    layers = list(QgsProject.instance().mapLayers().values())
    names = [l.name() for l in layers]
    if any(n.endswith("polygons") for n in names):
        log("layers: %s" % names)
        src = [l for l in QgsProject.instance().mapLayers().values() if l.source() == RASTER]
        node = QgsProject.instance().layerTreeRoot().findLayer(src[0].id()) if src else None
        if node is not None:
            node.setExpanded(False)
        grp = QgsProject.instance().layerTreeRoot().children()[0]
        log("group expanded: %s" % grp.isExpanded())
        view = iface.layerTreeView()
        if hasattr(view, "node2index"):
            log("view expanded: %s" % view.isExpanded(view.node2index(grp)))
        QTimer.singleShot(2500, shoot)
    elif time.time() - T0 > float(os.environ.get("TM_TIMEOUT", "120")):
        log("timeout; layers %s" % names)
        finish(5)
    else:
        QTimer.singleShot(300, poll)


def shoot():
    try:
        canvas = iface.mapCanvas()
        raster = [l for l in QgsProject.instance().mapLayers().values() if l.source() == RASTER][0]
        canvas.setExtent(raster.extent())
        canvas.refreshAllLayers()
        canvas.waitWhileRendering()
        QgsApplication.processEvents()
        poly = [l for l in QgsProject.instance().mapLayers().values() if l.name().endswith("polygons")][0]
        cls = [l for l in QgsProject.instance().mapLayers().values() if l.name().endswith("classes")][0]
        root = QgsProject.instance().layerTreeRoot()
        report["group"] = root.children()[0].name()
        report["polygon_count"] = poly.featureCount()
        report["polygon_renderer"] = poly.renderer().type()
        report["class_renderer"] = cls.renderer().type()
        report["fields"] = [f.name() for f in poly.fields()]
        bar = iface.messageBar()
        report["message_bar"] = [w.text() for w in bar.items()] if hasattr(bar, "items") else []
        pix = iface.mainWindow().grab()
        report["screenshot"] = bool(pix.save(SHOT))
        log("screenshot %s %dx%d" % (SHOT, pix.width(), pix.height()))
        # the canvas alone, with the result and without it: is the imagery readable through it?
        report["canvas_png"] = SHOT[:-4] + "_map.png"
        canvas.grab().toImage().save(report["canvas_png"])
        node = QgsProject.instance().layerTreeRoot().findLayer(poly.id())
        node.setItemVisibilityChecked(False)
        canvas.refreshAllLayers()
        canvas.waitWhileRendering()
        QgsApplication.processEvents()
        report["canvas_bare_png"] = SHOT[:-4] + "_map_bare.png"
        canvas.grab().toImage().save(report["canvas_bare_png"])
        node.setItemVisibilityChecked(True)
        # the panel, then the polygons' attribute table
        dock = [d for d in iface.mainWindow().findChildren(QDockWidget) if d.objectName() == "TailingsMapperDock"][0]
        report["panel_png"] = SHOT[:-4] + "_panel.png"
        dock.grab().save(report["panel_png"])
        table = iface.showAttributeTable(poly)
        QTimer.singleShot(1500, lambda: shoot_table(table))
    except Exception:
        log(traceback.format_exc())
        finish(6)


def shoot_table(table):
    try:
        table.resize(1100, 300)
        QgsApplication.processEvents()
        report["table_png"] = SHOT[:-4] + "_attributes.png"
        report["table_saved"] = bool(table.grab().save(report["table_png"]))
        table.close()
        finish(0)
    except Exception:
        log(traceback.format_exc())
        finish(6)


QTimer.singleShot(int(os.environ.get("TM_START_DELAY_MS", "1500")), start)
'''

INI = """[PythonPlugins]
tailings_mapper=true

[app]
plugin_installer\\checkOnStart=false
plugin_installer\\checkOnStartLastDate=@Variant(\\0\\0\\0\\xe\\0%\\x8a\\xc3)

[qgis]
checkVersion=false
showTips=false
showTips322=false
allowVersionCheck=false
mainSnappingWidgetMode=dialog

[core]
NewsFeed\\httpsfeedqgisorg\\disabled=true

[UI]
hidebrowser=false

[tailings_mapper]
model={model}
device=cpu
panel_visible=true
out_dir={out_dir}
"""


def run_desktop(raster, model_path, out_png, workdir, timeout=240, layer_name="Sentinel-2 scene", rgb=None,
                driver_code=DRIVER, env_extra=None):
    """Start QGIS (xvfb-run) with a fresh profile where the plugin is enabled, running ``driver_code``
    (``--code``; it writes ``report.json`` in ``workdir``, given as ``TM_OUT``) with ``env_extra`` in
    its environment; returns the report."""
    prof = os.path.join(workdir, "profiles")
    plugins = os.path.join(prof, "profiles", "default", "python", "plugins")
    os.makedirs(plugins, exist_ok=True)
    os.symlink(ROOT, os.path.join(plugins, "tailings_mapper"))
    models = os.path.join(workdir, "models")
    os.makedirs(models, exist_ok=True)
    name = os.path.splitext(os.path.basename(model_path))[0]
    shutil.copy(model_path, os.path.join(models, name + ".onnx"))
    ini = os.path.join(prof, "profiles", "default", "QGIS", "QGIS3.ini")
    os.makedirs(os.path.dirname(ini), exist_ok=True)
    with open(ini, "w") as f:
        f.write(INI.format(model=name, out_dir=os.path.join(workdir, "out")))
    driver = os.path.join(workdir, "driver.py")
    with open(driver, "w") as f:
        f.write(driver_code)
    env = dict(os.environ)
    for k in ("QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH", "QT_QPA_PLATFORM", "PYTHONHOME"):
        env.pop(k, None)
    for k in [k for k in env if k.startswith("PYENV")]:
        env.pop(k)  # desktop QGIS started under a pyenv shim's environment can hang at start
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".pyenv" not in p)
    site = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(os.path.join(p, "onnxruntime"))]
    env.update({"TM_RASTER": raster, "TM_OUT": workdir, "TM_SHOT": out_png, "TM_LAYER_NAME": layer_name,
                "TAILINGS_MAPPER_MODELS": models, "PYTHONPATH": os.pathsep.join(site),
                "XDG_RUNTIME_DIR": workdir, "TM_TIMEOUT": str(timeout - 30), "TM_RGB": rgb or ""})
    env.update(env_extra or {})
    qgis = shutil.which("qgis.bin") or shutil.which("qgis")
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x900x24", qgis, "--profiles-path", prof, "--nologo",
           "--noversioncheck", "--code", driver]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        out = r.stdout[-4000:] + r.stderr[-4000:]
    except subprocess.TimeoutExpired as e:
        out = "timeout: %s" % e
    rep_path = os.path.join(workdir, "report.json")
    report = json.load(open(rep_path)) if os.path.isfile(rep_path) else {}
    report["output"] = out
    return report


def _have_desktop():
    return shutil.which("xvfb-run") and (shutil.which("qgis.bin") or shutil.which("qgis"))


@pytest.mark.desktop
@pytest.mark.skipif(not _have_desktop(), reason="xvfb-run or qgis not installed")
def test_desktop_qgis_segment_and_screenshot(tm, tmp_path):
    pytest.importorskip("onnx")
    from qgis_helpers import s2_raster, tiny_model
    model = tiny_model(str(tmp_path / "desktop_tiny.onnx"))
    raster = s2_raster(str(tmp_path / "scene.tif"), squares=((40, 40, 80), (200, 180, 50)))
    png = str(tmp_path / "screenshot.png")
    rep = run_desktop(raster, model, png, str(tmp_path / "qgis"))
    assert rep.get("exit") == 0, json.dumps(rep, indent=1)[-6000:]
    assert rep["plugin_loaded"] and rep["toolbar_actions"] >= 1 and rep["tasks_started"] == 1
    assert rep["polygon_count"] == 2
    assert rep["polygon_renderer"] == "categorizedSymbol" and rep["class_renderer"] == "paletted"
    assert rep["group"].startswith("Sentinel-2 scene – tailings")
    assert "area_ha" in rep["fields"]
    assert os.path.getsize(png) > 10000
    for k in ("panel_png", "table_png", "canvas_png"):
        assert os.path.getsize(rep[k]) > 2000, k
    # the imagery shows through: inside the first pond (rows/cols 40-120 of 300) the map with the
    # result differs from the bare image by a light tint only (class raster hidden, light fill)
    from qgis.PyQt.QtGui import QImage
    a, b = QImage(rep["canvas_png"]), QImage(rep["canvas_bare_png"])
    x, y = int(a.width() / 2 - a.height() / 2 + a.height() * 0.27), int(a.height() * 0.27)
    ca, cb = a.pixelColor(x, y), b.pixelColor(x, y)
    assert max(abs(ca.red() - cb.red()), abs(ca.green() - cb.green()), abs(ca.blue() - cb.blue())) < 60, (
        ca.getRgb(), cb.getRgb())
    keep = os.environ.get("TM_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(png, keep)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raster", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "screenshot.png"))
    ap.add_argument("--name", default="Sentinel-2 scene")
    ap.add_argument("--rgb", help="raster bands shown as red,green,blue, e.g. 3,2,1")
    a = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="tm-desktop-")
    rep = run_desktop(os.path.abspath(a.raster), os.path.abspath(a.model), os.path.abspath(a.out), work,
                      layer_name=a.name, rgb=a.rgb)
    print(json.dumps({k: v for k, v in rep.items() if k != "output"}, indent=1))
    if rep.get("exit") != 0:
        print(rep.get("output"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
