#!/usr/bin/env bash
# Build the plugin zip and check it as plugins.qgis.org checks an upload (validator, file rules,
# Bandit with the repository's rules, detect-secrets); exits 1 on any finding.
# The scanners live in a virtual environment of their own, .venv-scan (made on the first run).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-scan
if [ ! -x "$VENV/bin/bandit" ] || [ ! -x "$VENV/bin/detect-secrets" ]; then
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check bandit==1.9.4 detect-secrets==1.5.0
fi
exec /usr/bin/python3 scripts/check_publish.py --bin "$VENV/bin" "$@"
