"""Installs what training needs (PyTorch, onnx and what they pull) into the plugin's folder, with
versions that work with QGIS's own Python, and checks it before anyone says "ready".

pip's resolver picks the whole set against what QGIS's Python has (``--dry-run --report``), with
the installed numpy pinned as a constraint: a package that needs another numpy is never chosen, and
numpy itself is never installed.  The chosen set, less QGIS's own packages (numpy, GDAL, PyQt,
setuptools, pip: see :data:`dep_path.PROTECTED_DISTS`), is then installed with ``--no-deps``.  Which
copy wins at import is :mod:`dep_path`'s rule; :func:`verify` proves it in a fresh interpreter.

Measured on Debian 12 (Python 3.11.2, numpy 1.24.2, sympy 1.11.1, pip 23.0.1), 2026: torch
2.13.0+cpu, onnx 1.23.2, ml_dtypes 0.5.4 (0.6.0 needs numpy 2), protobuf 7.36.2, sympy 1.14.0,
mpmath 1.3.0, networkx 3.6.1, fsspec, filelock, typing_extensions: about 950 MB on disk.
"""
from __future__ import annotations

import json
import os
import subprocess  # nosec B404 - pip and a check of QGIS's own Python, on purpose
import tempfile
from typing import Callable, List, Optional, Sequence

from . import dep_path, deps

_VERSIONS = ("import importlib.metadata as m\n"
             "for n in %r:\n"
             "    try:\n        print(n, m.version(n))\n"
             "    except Exception:\n        pass\n")


def installed_versions(python: str, names: Sequence[str]) -> dict:
    """``{distribution: version}`` of those of ``names`` that ``python`` has (without importing them)."""
    try:
        r = subprocess.run([python, "-c", _VERSIONS % (tuple(names),)],  # nosec B603 - no shell
                           capture_output=True, text=True, timeout=60, **deps._no_window())
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)


def constraints_for(versions: dict) -> List[str]:
    """pip constraints that keep QGIS's numpy: the installed version pinned, and on numpy 1.x the
    releases known to need numpy 2 whatever their metadata says (ml_dtypes 0.6.0 imports
    ``numpy.exceptions``, which numpy 1.24 lacks)."""
    numpy = versions.get("numpy")
    if not numpy:
        return []
    out = ["numpy==%s" % numpy]
    if numpy.split(".")[0] in ("0", "1"):
        out.append("ml_dtypes<0.6")
    return out


def index_reachable(url: str, timeout: float = 15) -> bool:
    """False only when the index's host cannot be reached at all (no name, refused, timed out):
    pip would retry it for every package, for minutes, to no use.  A certificate problem counts as
    reachable (pip has its own certificates)."""
    import ssl
    import urllib.error
    import urllib.request
    try:
        urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=timeout).close()  # nosec B310 - https URL
    except urllib.error.HTTPError:
        return True
    except urllib.error.URLError as e:
        return isinstance(e.reason, ssl.SSLError)
    except OSError:
        return False
    return True


def resolve(python: str, packages: Sequence[str], constraints: Sequence[str], index_args: Sequence[str],
            log: Callable[[str], None], cancel: Callable[[], bool]) -> Optional[List[tuple]]:
    """``[(name, version)]`` pip would install into ``python``'s environment for ``packages``; None
    when pip failed (the log says why)."""
    with tempfile.TemporaryDirectory(prefix="tm-resolve-") as tmp:
        cons = os.path.join(tmp, "constraints.txt")
        with open(cons, "w", encoding="utf-8") as f:
            f.write("\n".join(constraints) + "\n")
        report = os.path.join(tmp, "report.json")
        cmd = ([python, "-m", "pip", "install", "--dry-run", "--quiet", "--report", report, "-c", cons,
                "--disable-pip-version-check", "--no-input"] + list(index_args) + list(packages))
        if not deps._run_pip(cmd, log, cancel):
            return None
        try:
            with open(report, encoding="utf-8") as f:
                items = json.load(f)["install"]
            return [(i["metadata"]["name"], i["metadata"]["version"]) for i in items]
        except (OSError, ValueError, KeyError, TypeError) as e:
            log("ERROR: pip's report cannot be read (pip 22.2 or newer is needed): %s" % e)
            return None


def install_training(target: Optional[str] = None, python: Optional[str] = None,
                     log: Callable[[str], None] = print, cancel: Callable[[], bool] = lambda: False,
                     packages: Sequence[str] = tuple(deps.TRAINING),
                     index_url: Optional[str] = deps.TORCH.index_url) -> bool:
    """Resolve and install ``packages`` (torch==2.13.0 and onnx) into ``target``; True on success."""
    target = target or deps.deps_dir()
    try:
        python = python or deps.find_python()
    except RuntimeError as e:
        log("ERROR: %s" % e)
        return False
    have = installed_versions(python, ["numpy"] + sorted(dep_path.PROTECTED_DISTS - {"numpy"}))
    constraints = constraints_for(have)
    log("constraints from this Python: %s" % (", ".join(constraints) or "none (no numpy)"))
    index_args = []
    if index_url:
        if index_reachable(index_url):
            index_args = ["--extra-index-url", index_url]
        else:
            log("%s cannot be reached: torch comes from the other indexes" % index_url)
    chosen = resolve(python, packages, constraints, index_args, log, cancel)
    if chosen is None:
        return False
    theirs = {deps._norm(k) for k in have}
    keep = [(n, v) for n, v in chosen if not (deps._norm(n) in dep_path.PROTECTED_DISTS and deps._norm(n) in theirs)]
    for n, v in chosen:
        if (n, v) not in keep:
            log("%s %s (asked for) is left to this Python's own copy" % (n, v))
    if not keep:
        log("nothing to install")
        return True
    os.makedirs(target, exist_ok=True)
    cmd = deps.pip_command(python, ["%s==%s" % nv for nv in keep], target) + list(index_args)
    if not deps._run_pip(cmd, log, cancel):
        return False
    deps.add_to_path(target)
    log("installed into %s: %s" % (target, ", ".join("%s %s" % nv for nv in keep)))
    return True


def verify(target: str, modules: Sequence[str], python: Optional[str] = None, timeout: float = 600) -> Optional[str]:
    """Import ``modules`` from ``target`` in a fresh ``python`` by the same path rule (torch: with a
    tiny ONNX export): None when all work, else the first failure as one line."""
    try:
        python = python or deps.find_python()
    except RuntimeError as e:
        return str(e)
    try:
        r = subprocess.run(dep_path.check_command(python, target, modules),  # nosec B603 - no shell
                           capture_output=True, text=True, timeout=timeout, **deps._no_window())
    except subprocess.TimeoutExpired:
        return "importing %s took over %d s" % (", ".join(modules), timeout)
    except OSError as e:
        return "cannot run %s: %s" % (python, e)
    for line in r.stdout.splitlines():
        if line.startswith("FAIL "):
            return line[5:]
        if line == "OK" and r.returncode == 0:
            return None
    tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
    return "the check of %s exited with status %d: %s" % (", ".join(modules), r.returncode, tail)
