#!/usr/bin/env bash
# Installs what the project needs on Debian 12: QGIS 3.22 LTR and GDAL from apt, then a venv
# (.venv, on Debian's python3 with system site-packages so PyQGIS and GDAL are visible) with the
# pip packages.  Idempotent: quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=0
/usr/bin/python3 -c "import qgis.core, osgeo.gdal" >/dev/null 2>&1 || need_apt=1
command -v xvfb-run >/dev/null 2>&1 || need_apt=1
command -v qgis_process >/dev/null 2>&1 || need_apt=1
/usr/bin/python3 -c "import ensurepip" >/dev/null 2>&1 || need_apt=1
if [ "$need_apt" = 1 ]; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends qgis python3-qgis qgis-providers python3-gdal gdal-bin \
    python3-venv python3-pip xvfb xauth
fi
[ -x .venv/bin/python ] || /usr/bin/python3 -m venv --system-site-packages .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -r requirements-dev.txt
# Optional at run time (the plugin's dependency dialog offers it): ukis-csmask's cloud/shadow networks
# (ONNX, Apache-2.0, 145 MB); --no-deps: its own requirement on onnxruntime extras is not wanted.
.venv/bin/python -c "import ukis_csmask" >/dev/null 2>&1 ||
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps ukis-csmask
