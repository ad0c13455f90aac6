#!/usr/bin/env python3
"""Manual end-to-end check "as a new user would" (downloads onnxruntime from PyPI).

Builds the plugin zip, unzips it into a brand-new QGIS profile (what "Install from ZIP"
does), starts desktop QGIS under xvfb-run with QGIS's own Python only (no virtualenv on
PYTHONPATH, so onnxruntime is missing), then: the plugin explains what is missing, the
dependency dialog installs onnxruntime with pip into the profile's own folder, the
"Segment tailings" toolbar button runs on a Sentinel-2 GeoTIFF, a result polygon is
edited and saved, and the project is saved.

    python3 scripts/new_user_check.py --raster S2.tif [--model model.onnx] [--work /tmp/nu]

Prints the report (JSON); exit status 0 when every step worked.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

DRIVER = r'''
import json, os, time, traceback
from qgis.utils import iface, plugins
from qgis.core import QgsProject, QgsApplication, QgsGeometry, QgsPointXY
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication, QToolBar
OUT = os.environ["TM_OUT"]; RASTER = os.environ["TM_RASTER"]
T0 = time.time(); rep = {"log": []}
def log(m):
    rep["log"].append("%.1f %s" % (time.time() - T0, m))
    json.dump(rep, open(os.path.join(OUT, "report.json"), "w"), indent=1)
def finish(code):
    rep["exit"] = code; log("quit"); QgsProject.instance().setDirty(False); QTimer.singleShot(200, lambda: os._exit(code))

def start():
    try:
        p = plugins.get("tailings_mapper")
        log("plugin loaded: %s; missing: %s" % (p is not None, [m.requirement.module for m in p.missing]))
        bar = iface.messageBar()
        log("message bar: %s" % [w.text() for w in bar.items()])
        QTimer.singleShot(1000, drive_dialog)
        p.show_dependencies()  # modal; drive_dialog clicks Install
        log("dialog closed; missing now: %s" % [m.requirement.module for m in p.missing])
        QTimer.singleShot(100, run)
    except Exception:
        log(traceback.format_exc()); finish(4)

def drive_dialog():
    dlg = QApplication.activeModalWidget()
    log("dialog: %s gpu enabled %s" % (type(dlg).__name__, dlg.gpu.isEnabled()))
    dlg.install_button.click()
    def poll():
        if dlg.worker is not None and dlg.worker.isFinished():
            log("install finished; status: %s" % dlg.status.text())
            rep["install_log_tail"] = dlg.log.toPlainText()[-1500:]
            dlg.accept()
        elif time.time() - T0 > 400:
            log("install timeout"); dlg.reject()
        else:
            QTimer.singleShot(500, poll)
    QTimer.singleShot(500, poll)

def run():
    try:
        lyr = iface.addRasterLayer(RASTER, "my S2 scene")
        iface.setActiveLayer(lyr)
        acts = [a for tb in iface.mainWindow().findChildren(QToolBar) for a in tb.actions() if a.text() == "Segment tailings"]
        acts[0].trigger()
        log("tasks: %d; bar: %s" % (len(plugins["tailings_mapper"].tasks), [w.text() for w in iface.messageBar().items()][-1:]))
        QTimer.singleShot(500, wait)
    except Exception:
        log(traceback.format_exc()); finish(5)

def wait():
    polys = [l for l in QgsProject.instance().mapLayers().values() if l.name().endswith("polygons")]
    if polys:
        try:
            poly = polys[0]
            log("polygons: %d; bar: %s" % (poly.featureCount(), [w.text() for w in iface.messageBar().items()][-1:]))
            f = next(poly.getFeatures())
            poly.startEditing()
            g = f.geometry().buffer(20, 2)
            poly.changeGeometry(f.id(), g)
            poly.changeAttributeValue(f.id(), poly.fields().indexOf("class_name"), "edited by hand")
            ok = poly.commitChanges()
            log("edit committed: %s %s" % (ok, poly.commitErrors()))
            poly.reload()
            log("edited value: %s" % poly.getFeature(f.id())["class_name"])
            ok = QgsProject.instance().write(os.path.join(OUT, "project.qgz"))
            log("project saved: %s" % ok)
            finish(0)
        except Exception:
            log(traceback.format_exc()); finish(6)
    elif time.time() - T0 > 500:
        log("timeout"); finish(7)
    else:
        QTimer.singleShot(500, wait)

QTimer.singleShot(2000, start)
'''


def _clean_python_env(env):
    """Desktop QGIS started from a pyenv (or other non-system) Python process can hang at start:
    drop that interpreter's PATH entries and variables so QGIS finds its own Python."""
    for k in [k for k in env if k.startswith(("PYENV", "PYTHONHOME", "CONDA"))]:
        env.pop(k)
    exe_dir = os.path.dirname(os.path.realpath(sys.executable))
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and ".pyenv" not in p and
                                  (os.path.realpath(p) != exe_dir or exe_dir.startswith("/usr")))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raster", required=True, help="a Sentinel-2 GeoTIFF")
    ap.add_argument("--model", help="an ONNX model for the user models folder (default: the shipped ones)")
    ap.add_argument("--work", default=None)
    a = ap.parse_args(argv)
    import package_plugin
    work = a.work or tempfile.mkdtemp(prefix="tm-newuser-")
    z = package_plugin.build(os.path.join(work, "dist"))
    plugins = os.path.join(work, "prof", "profiles", "default", "python", "plugins")
    os.makedirs(plugins, exist_ok=True)
    zipfile.ZipFile(z).extractall(plugins)
    ini = os.path.join(work, "prof", "profiles", "default", "QGIS", "QGIS3.ini")
    os.makedirs(os.path.dirname(ini), exist_ok=True)
    with open(ini, "w") as f:
        f.write("[PythonPlugins]\ntailings_mapper=true\n[app]\nplugin_installer\\checkOnStart=false\n"
                "[core]\nNewsFeed\\httpsfeedqgisorg\\disabled=true\n")
    with open(os.path.join(work, "driver.py"), "w") as f:
        f.write(DRIVER)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH", "QT_QPA_PLATFORM",
                        "VIRTUAL_ENV", "TAILINGS_MAPPER_DEPS_DIR")}
    _clean_python_env(env)
    env.update({"TM_OUT": work, "TM_RASTER": os.path.abspath(a.raster), "XDG_RUNTIME_DIR": work})
    if a.model:
        models = os.path.join(work, "models")
        os.makedirs(models, exist_ok=True)
        shutil.copy(a.model, models)
        env["TAILINGS_MAPPER_MODELS"] = models
    qgis = shutil.which("qgis.bin") or shutil.which("qgis")
    subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1600x900x24", qgis, "--profiles-path",
                    os.path.join(work, "prof"), "--nologo", "--noversioncheck", "--code",
                    os.path.join(work, "driver.py")], env=env, timeout=900,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rep_path = os.path.join(work, "report.json")
    rep = json.load(open(rep_path)) if os.path.isfile(rep_path) else {"exit": None, "log": ["no report"]}
    print(json.dumps(rep, indent=1))
    return 0 if rep.get("exit") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
