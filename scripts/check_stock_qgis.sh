#!/usr/bin/env bash
# Training in a stock QGIS (issue 28): Debian's own Python, no venv. Installs into a temporary folder
# exactly as the dependency dialog does (onnxruntime; torch==2.13.0 CPU, onnx and what they pull,
# numpy pinned; the import check), then trains, runs and improves a tiny model (from an edit, and from
# a review stored by the plugin's review queue through headless PyQGIS) with only
# /usr/bin/python3's packages and that folder. About 3 minutes and 1 GB of disk on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
QUIET=1 $PY scripts/check_stock_qgis.py install "$work/deps" "$PY"
mkdir "$work/run"
env -u PYTHONPATH -u VIRTUAL_ENV $PY -s scripts/check_stock_qgis.py train "$work/deps" "$work/run"
echo "stock QGIS training check: ok in $(( $(date +%s) - start )) s"
