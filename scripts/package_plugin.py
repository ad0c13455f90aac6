#!/usr/bin/env python3
"""Build the installable plugin zip: dist/tailings_mapper-<version>.zip.

The zip holds one folder, ``tailings_mapper/``, as QGIS's "Install from ZIP" and the
official plugin repository expect, with the engine, the UI, the icons (loaded by file path: no
compiled resources), the shipped models (models/*.onnx) and the training package (training from polygons
in QGIS; imported only when used, with PyTorch installed).  Development files stay out: tests,
scripts, virtual environments, benchmarks, CI, caches, build output.

    python3 scripts/package_plugin.py [--out-dir dist] [--no-models]
"""
from __future__ import annotations

import argparse
import configparser
import fnmatch
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "tailings_mapper"

EXCLUDE_DIRS = {"tests", "scripts", "bench", "benchmarks", ".ci", ".github", ".git", ".venv", "venv",
                "env", "dist", "build", "runs", "out", "__pycache__", ".pytest_cache", ".mypy_cache",
                ".ruff_cache", ".qgis-settings", ".idea", ".vscode", ".whl", ".gl", "node_modules", "shared"}
EXCLUDE_FILES = ["*.pyc", "*.pyo", "*~", ".DS_Store", ".gitignore", ".gitattributes", "pytest.ini", "setup.cfg",
                 "tox.ini", "requirements-dev.txt", "*.log", ".coverage", "*.orig", "*.rej", ".tm-*"]
REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                     "repository", "tracker", "tags", "icon", "changelog")


def read_metadata(root: str = ROOT) -> configparser.SectionProxy:
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    with open(os.path.join(root, "metadata.txt"), encoding="utf-8") as f:
        cp.read_file(f)
    g = cp["general"]
    missing = [k for k in REQUIRED_METADATA if not g.get(k, "").strip()]
    if missing:
        raise SystemExit("metadata.txt lacks %s" % ", ".join(missing))
    if not os.path.isfile(os.path.join(root, g["icon"])):
        raise SystemExit("metadata.txt icon %s does not exist" % g["icon"])
    return g


def _excluded(rel: str) -> bool:
    parts = rel.replace("\\", "/").split("/")
    if any(p in EXCLUDE_DIRS for p in parts[:-1]):
        return True
    return any(fnmatch.fnmatch(parts[-1], pat) for pat in EXCLUDE_FILES)


def candidate_files(root: str = ROOT, models: bool = True):
    """Files of the checkout (tracked and untracked-not-ignored when git is there, else all)."""
    files = None
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True)
        files = [f for f in out.stdout.decode("utf-8").split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = None
    if files is None:
        files = []
        for d, dirs, names in os.walk(root):
            dirs[:] = [x for x in dirs if x not in EXCLUDE_DIRS]
            for n in names:
                files.append(os.path.relpath(os.path.join(d, n), root))
    files = [f for f in files if os.path.isfile(os.path.join(root, f)) and not _excluded(f)]
    model_dir = os.path.join(root, "models")
    if models and os.path.isdir(model_dir):
        for n in sorted(os.listdir(model_dir)):   # shipped models, even when git ignores them
            rel = "models/" + n
            if n.endswith((".onnx", ".json", ".md", ".txt")) and rel not in files:
                files.append(rel)
    elif not models:
        files = [f for f in files if not (f.startswith("models/") and f.endswith(".onnx"))]
    return sorted(set(files))


def _is_lfs_pointer(path: str) -> bool:
    if os.path.getsize(path) > 1024:
        return False
    with open(path, "rb") as f:
        return f.read(40).startswith(b"version https://git-lfs")


def build(out_dir: str, root: str = ROOT, models: bool = True) -> str:
    meta = read_metadata(root)
    version = meta["version"].strip()
    files = candidate_files(root, models)
    for must in ("metadata.txt", "__init__.py", "plugin.py", meta["icon"]):
        if must not in files:
            raise SystemExit("%s is missing from the plugin" % must)
    for f in files:
        if f.endswith(".onnx") and _is_lfs_pointer(os.path.join(root, f)):
            raise SystemExit("%s is a git-lfs pointer; run 'git lfs pull' first" % f)
    os.makedirs(out_dir, exist_ok=True)
    zpath = os.path.join(out_dir, "%s-%s.zip" % (PACKAGE, version))
    tmp = zpath + ".part"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            src = os.path.join(root, f)
            comp = zipfile.ZIP_STORED if f.endswith((".onnx", ".png", ".zip")) else zipfile.ZIP_DEFLATED
            z.write(src, "%s/%s" % (PACKAGE, f), compress_type=comp)
    os.replace(tmp, zpath)
    return zpath


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "dist"))
    ap.add_argument("--no-models", action="store_true", help="leave models/*.onnx out (for a quick test build)")
    a = ap.parse_args(argv)
    z = build(a.out_dir, ROOT, models=not a.no_models)
    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
        size = sum(i.file_size for i in zf.infolist())
    onnx = [n for n in names if n.endswith(".onnx")]
    if not any(os.path.basename(n).upper().startswith(("LICENSE", "LICENCE", "COPYING")) for n in names):
        print("warning: no LICENSE file in the zip; the QGIS plugin repository requires one", file=sys.stderr)
    print("%s: %d files, %.1f MB unpacked, models: %s" % (z, len(names), size / 1e6,
                                                         ", ".join(os.path.basename(n) for n in onnx) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
