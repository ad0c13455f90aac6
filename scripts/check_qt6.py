#!/usr/bin/env python3
"""Stand-in checks for a QGIS 4 (Qt 6) we cannot run here; exit 1 listing every finding, 0 when clean.

1. metadata.txt: qgisMinimumVersion <= 3.22 and qgisMaximumVersion >= 4.0.
2. QGIS's official migration checker (``pyqt5_to_pyqt6.py``, on PyPI as ``qgis-pyqt5to6``), run on a
   COPY of the plugin (it rewrites files in place): every change it proposes and every warning it prints
   (compiled resources, QRegExp, missing imports) is a finding.  It needs Python >= 3.12 and PyQt6: a venv
   of its own, ``.venv-qt6check`` (made here when missing, from python3.12, else with
   ``--ignore-requires-python`` on this Python).
3. A lint for Qt 6 blockers the checker misses (it knows no QGIS enums, and only constructing things finds
   them at run time): unscoped enums (``Qgis.Warning``, ``QgsTask.CanCancel``, ``Qt.AlignLeft``...), the
   Processing and layer-filter enums whose QGIS 4 name 3.22 lacks used anywhere but through
   ``qgis_glue/compat.py``, ``exec_``, compiled resources, ``QAction`` from QtGui, PyQt5 imports, QRegExp,
   QtWebKit and other classes Qt 6 removed.

Checked: the plugin as it ships (scripts/package_plugin.py's file list), what QGIS 4 runs; the tests and
the development scripts run on this machine's QGIS 3.22 only (tests/qt6 is written for PyQt6).

    python3 scripts/check_qt6.py [--source DIR] [--venv DIR] [--no-checker]
"""
from __future__ import annotations

import argparse
import ast
import configparser
import difflib
import glob
import os
import re
import shutil
import subprocess  # nosec B404 - runs pip and the migration checker, both on purpose
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import package_plugin  # noqa: E402  the shipped file list

CHECKER_PACKAGES = ["qgis-pyqt5to6==0.0.0.dev0", "PyQt6>=6.5", "PyQt6-QScintilla>=2.14", "tokenize-rt>=5"]

# Enums 3.22 spells differently from QGIS 4: only qgis_glue/compat.py may name them (as strings).
MOVED = ("QgsProcessing.SourceType", "QgsProcessingParameterNumber.Type", "QgsProcessingParameterDefinition.Flag",
         "QgsProcessingParameterFile.Behavior", "QgsProcessingParameterField.DataType", "QgsProcessingAlgorithm.Flag",
         "QgsMapLayerProxyModel.Filter", "QgsWkbTypes.GeometryType", "QgsWkbTypes.Type")
# Module prefixes dropped before looking at a dotted name (QtCore.Qt.AlignLeft is Qt.AlignLeft).
MODULES = {"qgis", "core", "gui", "PyQt", "PyQt5", "PyQt6", "QtCore", "QtGui", "QtWidgets", "QtNetwork", "QtSvg",
           "QtXml", "QtSql", "QtTest", "QtPrintSupport"}
TEXT_RULES = [
    (re.compile(r"\.exec_\s*\("), "exec_() is gone in PyQt6: exec()"),
    (re.compile(r"\bresources_rc\b|\.qrc\b|pyrcc"), "compiled Qt resources are gone in Qt 6: load files by path"),
    (re.compile(r"QtGui\s+import\s+[^\n]*\bQAction\b|QtGui\.QAction\b"),
     "QAction from qgis.PyQt.QtWidgets (QtGui has none on QGIS 3.22)"),
    (re.compile(r"^\s*(from|import)\s+PyQt[56]\b", re.M), "import Qt through qgis.PyQt"),
    (re.compile(r"\bQRegExp(Validator)?\b"), "QRegExp is gone in Qt 6: QRegularExpression"),
    (re.compile(r"\bQtWebKit(Widgets)?\b"), "QtWebKit is gone in Qt 6 (QGIS 4 has QtWebEngine)"),
    (re.compile(r"\b(QDesktopWidget|QTextCodec|QMatrix)\b|\.desktop\(\)"),
     "removed in Qt 6"),
    (re.compile(r"\.setMargin\s*\("), "QLayout.setMargin is gone in Qt 6: setContentsMargins"),
]


def plugin_files(src: str) -> list:
    return [f.replace(os.sep, "/") for f in package_plugin.candidate_files(src, models=False) if f.endswith(".py")]


# ---------------------------------------------------------------- metadata
def check_metadata(src: str) -> list:
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    with open(os.path.join(src, "metadata.txt"), encoding="utf-8") as f:
        cp.read_file(f)
    g = cp["general"]

    def ver(key, default):
        return tuple(int(x) for x in re.findall(r"\d+", g.get(key, default))[:2])
    out = []
    if ver("qgisMinimumVersion", "99") > (3, 22):
        out.append("metadata.txt: qgisMinimumVersion %s is above 3.22" % g.get("qgisMinimumVersion"))
    if ver("qgisMaximumVersion", "%d.99" % ver("qgisMinimumVersion", "3")[0]) < (4, 0):
        out.append("metadata.txt: qgisMaximumVersion %s hides the plugin from QGIS 4 (needs >= 4.0)"
                   % g.get("qgisMaximumVersion", "(unset: the minimum's major .99)"))
    return out


# ---------------------------------------------------------------- lint
def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    parts.reverse()
    while len(parts) > 2 and parts[0] in MODULES:
        parts.pop(0)
    return parts


def lint_source(text: str, rel: str) -> list:
    out = []
    for rx, why in TEXT_RULES:
        for m in rx.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append("%s:%d: %s: %s" % (rel, line, m.group(0).strip(), why))
    try:
        tree = ast.parse(text, rel)
    except SyntaxError as e:
        return out + ["%s:%s: does not parse: %s" % (rel, e.lineno, e.msg)]
    inner, called = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner.add(id(node.value))
        if isinstance(node, ast.Call):
            called.add(id(node.func))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or id(node) in inner:
            continue
        parts = _dotted(node)
        if not parts or not re.match(r"Q[A-Za-z]", parts[0]):
            continue
        name = ".".join(parts)
        moved = next((m for m in MOVED if name.startswith(m + ".")), None)
        if moved:
            out.append("%s:%d: %s: QGIS 4 names this differently; use qgis_glue/compat.py" % (rel, node.lineno, name))
        elif len(parts) == 2 and parts[1][:1].isupper() and not parts[1].isupper() and id(node) not in called:
            out.append("%s:%d: %s: unscoped enum (PyQt6 wants Class.Enum.Member)" % (rel, node.lineno, name))
    return out


def lint(src: str, files: list) -> list:
    out = []
    for rel in files:
        with open(os.path.join(src, rel), encoding="utf-8") as f:
            out += lint_source(f.read(), rel)
    return out


# ---------------------------------------------------------------- the official migration checker
def _python312():
    """A Python >= 3.12 that runs (pyenv's shims need a version chosen, so they come last)."""
    cands = [os.environ.get("PYTHON312")]
    for home in (os.path.expanduser("~"), "/root"):
        for minor in ("12", "1[3-9]"):  # QGIS 4's own Python (3.12 on Windows) first
            cands += sorted(glob.glob(home + "/.pyenv/versions/3.%s*/bin/python3.%s" % (minor, minor)), reverse=True)
    cands += [shutil.which("python3.%d" % minor) for minor in range(19, 11, -1)]
    for c in cands:
        if c and os.path.isfile(c) and subprocess.run(  # nosec B603 - a local interpreter, fixed arguments
                [c, "-c", "import sys; sys.exit(sys.version_info < (3, 12))"], capture_output=True).returncode == 0:
            return c
    return None


def ensure_venv(venv: str) -> str:
    tool = os.path.join(venv, "bin", "pyqt5to6")
    if os.path.isfile(tool):
        return tool
    py = _python312()
    extra = [] if py else ["--ignore-requires-python"]
    py = py or sys.executable
    print("making %s with %s (once)" % (venv, py), flush=True)
    subprocess.run([py, "-m", "venv", venv], check=True)  # nosec B603 - fixed arguments
    subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
                   + extra + CHECKER_PACKAGES, check=True)  # nosec B603 - fixed arguments
    return tool


def run_checker(tool: str, src: str, files: list):
    """(diff lines, number of files, number of changed lines, warnings) for the checker run on a copy."""
    with tempfile.TemporaryDirectory(prefix="qt6check-") as tmp:
        for rel in files:
            os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
            shutil.copyfile(os.path.join(src, rel), os.path.join(tmp, rel))
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
        r = subprocess.run([tool, tmp], capture_output=True, text=True, env=env)  # nosec B603 - fixed arguments
        warnings = [ln.replace(tmp + os.sep, "").replace(tmp, ".") for ln in (r.stdout + r.stderr).splitlines()
                    if ln.strip() and "not available for introspection" not in ln]
        diff, nfiles, nlines = [], 0, 0
        for rel in files:
            with open(os.path.join(src, rel), encoding="utf-8") as f:
                before = f.read().splitlines(keepends=True)
            with open(os.path.join(tmp, rel), encoding="utf-8") as f:
                after = f.read().splitlines(keepends=True)
            if before != after:
                nfiles += 1
                d = list(difflib.unified_diff(before, after, "a/" + rel, "b/" + rel, n=0))
                nlines += sum(1 for ln in d if ln.startswith("-") and not ln.startswith("---"))
                diff += d
    return diff, nfiles, nlines, warnings


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=ROOT, help="the checkout to check (default: this one)")
    ap.add_argument("--venv", default=os.environ.get("QT6CHECK_VENV", os.path.join(ROOT, ".venv-qt6check")))
    ap.add_argument("--no-checker", action="store_true", help="metadata and lint only (no venv, no PyQt6)")
    a = ap.parse_args(argv)
    src = os.path.abspath(a.source)
    files = plugin_files(src)
    meta = check_metadata(src)
    found = lint(src, files)
    diff, nfiles, nlines, warnings = [], 0, 0, []
    if not a.no_checker:
        diff, nfiles, nlines, warnings = run_checker(ensure_venv(a.venv), src, files)
    for ln in meta + found:
        print(ln)
    if diff or warnings:
        print("".join(diff), end="")
        for w in warnings:
            print("checker: " + w)
    print("Qt 6 check of %d files: metadata %d, lint %d, migration checker %s"
          % (len(files), len(meta), len(found),
             "skipped" if a.no_checker else "%d files / %d lines changed, %d warnings" % (nfiles, nlines, len(warnings))))
    return 1 if (meta or found or diff or warnings) else 0


if __name__ == "__main__":
    sys.exit(main())
