#!/usr/bin/env bash
# The PyQt6 suite (tests/qt6): the plugin under PyQt6 with stand-in QGIS 4 modules, in a venv of its
# own (.venv-qt6): Debian's python3 (the Python its GDAL bindings are built for) WITHOUT system
# site-packages, so no PyQt5 and no QGIS on the path; PyQt6, numpy<2 and pytest from PyPI; GDAL's
# bindings through a folder holding only a link to Debian's osgeo package. Made once, reused.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-qt6
PY=$VENV/bin/python
if ! "$PY" -c "import PyQt6.QtWidgets, numpy, pytest; from osgeo import gdal" >/dev/null 2>&1; then
  rm -rf "$VENV"
  /usr/bin/python3 -m venv "$VENV"
  "$PY" -m pip install -q --disable-pip-version-check -r tests/qt6/requirements.txt
  mkdir -p "$VENV/gdal-only"
  ln -sfn /usr/lib/python3/dist-packages/osgeo "$VENV/gdal-only/osgeo"
  "$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" | {
    read -r site; echo "$PWD/$VENV/gdal-only" > "$site/debian-osgeo.pth"; }
fi
export QT_QPA_PLATFORM=offscreen
exec "$PY" -m pytest -c tests/qt6/pytest.ini --rootdir tests/qt6 -q tests/qt6 "$@"
