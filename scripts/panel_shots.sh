#!/bin/sh
# The README's screenshots of desktop QGIS (under Xvfb) with the panel at its default width (360 px):
# docs/panel_before.png, docs/panel_after.png, docs/review_queue.png, docs/change_dialog.png,
# taken and checked by tests/test_desktop_shots.py, written to docs/ only when it passes.
cd "$(dirname "$0")/.." && TM_WRITE_SCREENSHOTS=1 .venv/bin/python -m pytest -q tests/test_desktop_shots.py
