#!/bin/sh
# The panel at its default width (360 px) before and after a run, drawn offscreen by its test:
# docs/panel_before.png and docs/panel_after.png (shown in the README's "In QGIS").
cd "$(dirname "$0")/.." && TM_PANEL_SHOTS="$PWD/docs" QT_QPA_PLATFORM=offscreen \
    .venv/bin/python -m pytest -q tests/test_plugin_panel_fit.py -k "findings_are_in_view"
