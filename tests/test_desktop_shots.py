"""Desktop QGIS under Xvfb, the panel docked at its default width (360 px): one session takes the
README's screenshots of the panel before and after a run, the review queue open on the run's
polygons, and the change dialog with two runs of different dates (the shipped network without its
veto, on synthetic bright squares: it finds them).

The screenshots are checked, then written to docs/ only when asked (scripts/panel_shots.sh):

    TM_WRITE_SCREENSHOTS=1 .venv/bin/python -m pytest -q tests/test_desktop_shots.py
"""
import json
import os
import shutil

import pytest

from test_desktop import DRIVER_PRELUDE, ROOT, _have_desktop, run_desktop

SHOTS = ("panel_before.png", "panel_after.png", "review_queue.png", "change_dialog.png")
DATES = ("2019-07-14", "2023-08-02")   # in the scenes' file names: the panel pre-fills them

DRIVER = DRIVER_PRELUDE + r'''
from qgis.PyQt.QtCore import QRect
from qgis.PyQt.QtWidgets import QApplication, QScrollArea

RASTER2 = os.environ["TM_RASTER2"]
state = {}


def step(fn, ms=0):
    """Run ``fn`` from the event loop after ``ms``; any error ends the session with its traceback."""
    def run():
        try:
            fn()
        except Exception:
            log(traceback.format_exc())
            finish(6)
    QTimer.singleShot(ms, run)


def when(pred, then, what, timeout=150):
    t = time.time()

    def poll():
        if pred():
            step(then, 1500)   # let the panel, the message bar and the canvas settle
        elif time.time() - t > timeout:
            log("timeout waiting for %s" % what)
            finish(5)
        else:
            step(poll, 300)
    step(poll)


def save(widget_pixmap, name):
    path = os.path.join(SHOT, name)
    report.setdefault("shots", {})[name] = [widget_pixmap.width(), widget_pixmap.height()]
    assert widget_pixmap.save(path), path
    log("saved %s %dx%d" % (name, widget_pixmap.width(), widget_pixmap.height()))


def add_raster(path):
    lyr = iface.addRasterLayer(path, os.path.splitext(os.path.basename(path))[0])
    iface.setActiveLayer(lyr)
    iface.mapCanvas().setExtent(lyr.extent())
    return lyr


def in_view(widget, scroll):
    top = widget.mapTo(scroll.viewport(), widget.rect().topLeft())
    return widget.isVisible() and scroll.viewport().rect().contains(top)


def cut_labels(dock):
    """The panel's wrapped labels shown lower than their text needs at their width."""
    from qgis.PyQt.QtWidgets import QLabel
    return ["%r: %d px of %d" % (w.text()[:60], w.height(), w.heightForWidth(w.width()))
            for w in dock.findChildren(QLabel) if w.isVisible() and w.wordWrap() and w.text()
            and w.height() < w.heightForWidth(w.width())]


def start():
    mw = iface.mainWindow()
    mw.setGeometry(0, 0, 1600, 900)    # the whole window on the screen (review_queue.png grabs the screen)
    mw.showMaximized()
    for d in mw.findChildren(QDockWidget):
        if d.objectName() == "Browser":
            d.hide()
    add_raster(RASTER)
    plugin = plugins["tailings_mapper"]
    plugin.show_panel(True)
    state["plugin"], state["dock"] = plugin, plugin.dock
    step(before, 1500)


def before():
    dock = state["dock"]
    mw = iface.mainWindow()
    report["dock_area"] = int(mw.dockWidgetArea(dock))
    report["dock_width"] = dock.width()
    report["dock_floating"] = dock.isFloating()
    report["date_before"] = dock.date_edit.text()
    report["cut_before"] = cut_labels(dock)
    save(dock.grab(), "panel_before.png")
    state["task"] = dock.run()
    report["run_started"] = state["task"] is not None
    when(lambda: state["task"].ok is not None, after, "the first run")


def after():
    dock, task = state["dock"], state["task"]
    report["run_ok"], report["outcome"] = task.ok, str(task.outcome)[:500]
    report["dock_width_after"] = dock.width()
    scroll = [w for w in dock.findChildren(QScrollArea) if w.isAncestorOf(dock.findings_label)][0]
    report["findings"] = dock.findings_label.text()
    report["findings_in_view"] = in_view(dock.findings_label, scroll)
    report["cut_after"] = cut_labels(dock)
    save(dock.grab(), "panel_after.png")
    poly = [x for x in task.layers if x.customProperty("tailings_mapper/result") == "polygons"][0]
    report["polygons"] = poly.featureCount()
    dock.review_button.click()
    step(review, 1500)


def review():
    dock = state["dock"]
    dlg = dock.review_dialog
    dlg.act("accept")      # the first region accepted: the queue moves on, the progress counts it
    canvas = iface.mapCanvas()
    canvas.waitWhileRendering()
    QgsApplication.processEvents()
    # the dialog over the map's top left corner, grabbed from the screen as the user sees both
    at = canvas.mapToGlobal(canvas.rect().topLeft())
    dlg.move(at.x() + 12, at.y() + 70)   # below the message bar
    QgsApplication.processEvents()
    step(lambda: shoot_review(dlg), 800)


def shoot_review(dlg):
    canvas = iface.mapCanvas()
    canvas.waitWhileRendering()
    QgsApplication.processEvents()
    report["review_title"] = dlg.windowTitle()
    report["review_region"] = dlg.region_label.text()
    report["review_progress"] = dlg.progress_label.text()
    report["review_visible"] = dlg.isVisible()
    at = canvas.mapToGlobal(canvas.rect().topLeft())
    rect = QRect(at.x(), at.y(), canvas.width(), canvas.height())
    report["review_on_screen"] = QApplication.primaryScreen().geometry().contains(rect)
    save(QApplication.primaryScreen().grabWindow(0, rect.x(), rect.y(), rect.width(), rect.height()),
         "review_queue.png")
    dlg.close()
    add_raster(RASTER2)    # the panel follows the current layer: a second run, of a later date
    step(second, 1000)


def second():
    dock = state["dock"]
    report["date_second"] = dock.date_edit.text()
    state["task2"] = dock.run()
    when(lambda: state["task2"].ok is not None, change, "the second run")


def change():
    report["run2_ok"] = state["task2"].ok
    dlg = state["plugin"].show_change_dialog()
    rows = dlg.results
    report["change_rows"] = [[rows.item(r, c).text() for c in range(3)] for r in range(rows.rowCount())]
    for r in range(rows.rowCount()):
        if rows.item(r, 0).text().split(" (")[0].endswith("classes"):
            rows.check(r)
    report["change_chosen_years"] = [y for _, y in rows.chosen()]
    dlg.resize(max(dlg.width(), 900), dlg.height())
    QgsApplication.processEvents()
    step(lambda: shoot_change(dlg), 800)


def shoot_change(dlg):
    report["change_title"] = dlg.windowTitle()
    save(dlg.grab(), "change_dialog.png")
    finish(0)


step(start, int(os.environ.get("TM_START_DELAY_MS", "1500")))
'''


@pytest.mark.desktop
@pytest.mark.skipif(not _have_desktop(), reason="xvfb-run or qgis not installed")
def test_desktop_screenshots_at_the_default_width(tmp_path):
    pytest.importorskip("torch")
    from qgis_helpers import s2_raster
    from training.ship_veto import unvetoed
    model = unvetoed("tailings", str(tmp_path / "tailings_raw.onnx"))
    # two scenes of the same ground, four years apart: a pond grew, one appeared
    first = s2_raster(str(tmp_path / ("tile_094_%s.tif" % DATES[0].replace("-", ""))), size=448,
                      squares=((40, 40, 110), (250, 200, 90), (40, 300, 70)))
    later = s2_raster(str(tmp_path / ("tile_094_%s.tif" % DATES[1].replace("-", ""))), size=448,
                      squares=((40, 40, 140), (250, 200, 90), (40, 300, 70), (320, 40, 80)))
    shots = tmp_path / "shots"
    shots.mkdir()
    rep = run_desktop(first, model, str(shots), str(tmp_path / "qgis"), timeout=420,
                      driver_code=DRIVER, env_extra={"TM_RASTER2": later})
    assert rep.get("exit") == 0, json.dumps(rep, indent=1)[-6000:]
    # the panel docked on the right at its default width, before and after a run
    assert rep["dock_area"] == 2 and not rep["dock_floating"], rep
    assert abs(rep["dock_width"] - 360) <= 4 and abs(rep["dock_width_after"] - 360) <= 4, rep
    assert rep["cut_before"] == [] and rep["cut_after"] == [], (rep["cut_before"], rep["cut_after"])
    assert rep["date_before"] == DATES[0] and rep["date_second"] == DATES[1]
    assert rep["run_ok"] and rep["run2_ok"], rep["outcome"]
    assert rep["polygons"] >= 2
    assert "tailings" in rep["findings"] and rep["findings_in_view"], rep["findings"]
    # the review queue on the run's polygons, one region accepted
    n = rep["polygons"]
    assert rep["review_visible"] and rep["review_on_screen"] and rep["review_title"].startswith("Review detections:")
    assert rep["review_progress"] == "1 of %d reviewed" % n, rep["review_progress"]
    assert rep["review_region"].startswith("Region 2 of %d" % n), rep["review_region"]
    # the change dialog: both runs' results named by their runs, in the order of their dates
    rows = [r for r in rep["change_rows"] if r[0].split(" (")[0].endswith("classes")]
    assert [r[1] for r in rows] == list(DATES), rep["change_rows"]
    assert rows[0][0] != rows[1][0] and all(" (tailings " in r[0] for r in rows), rows
    assert rep["change_chosen_years"] == [d[:4] for d in DATES]
    from qgis.PyQt.QtGui import QImage
    for name in SHOTS:
        img = QImage(str(shots / name))
        assert not img.isNull(), name
        assert [img.width(), img.height()] == rep["shots"][name], name
    for name in ("panel_before.png", "panel_after.png"):
        w = QImage(str(shots / name)).width()
        assert abs(w - 360) <= 4, (name, w)
    if os.environ.get("TM_WRITE_SCREENSHOTS") == "1":
        for name in SHOTS:
            shutil.copy(str(shots / name), os.path.join(ROOT, "docs", name))
