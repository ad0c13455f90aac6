#!/usr/bin/env bash
# The test suite (engine, training smoke test, QGIS plugin offscreen).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QT_QPA_PLATFORM=offscreen
exec .venv/bin/python -m pytest -q tests "$@"
