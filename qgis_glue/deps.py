"""Runtime dependencies of Tailings Mapper inside a user's QGIS.

QGIS brings Python, numpy and GDAL; the engine also needs ``onnxruntime`` (or
``onnxruntime-gpu``).  Missing packages are installed with pip into a folder that
the plugin owns (``<profile>/python/dependencies/tailings_mapper/pyXY``), never into
QGIS's own Python, and that folder is put on ``sys.path`` when the plugin loads.

Packages are installed with ``--no-deps`` one round at a time and only the
requirements that QGIS's Python does not already satisfy are fetched in the next
round, so the folder never shadows QGIS's numpy (whose GDAL bindings are built
against it).

Training (PyTorch and onnx, :data:`TRAINING`) is installed differently, because its requirements
need versions, not only names: QGIS's Python already has some of them, older (Debian 12: sympy
1.11.1, while torch 2.13 needs >= 1.13.3), and some newest releases need numpy 2 (ml_dtypes 0.6.0
fails on Debian's numpy 1.24.2 with ``module 'numpy' has no attribute 'exceptions'``).  So pip's
resolver chooses the whole set first (``pip install --dry-run --report``, the installed numpy pinned
as a constraint so that nothing needing another numpy is chosen), and exactly that set, less
QGIS's own packages, is installed with ``--no-deps``.  Which copy then wins on ``sys.path`` is the
rule of :mod:`dep_path` (the folder's copies first for the packages in it, never for numpy,
GDAL or PyQt); :func:`verify` proves it in a fresh interpreter before the dialog says "ready".

This module has no Qt import at module level so that it can be tested and used
from plain Python; the dialog lives in ``ui/deps_dialog.py``.
"""
from __future__ import annotations

import glob
import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess  # nosec B404 - the installer runs pip of QGIS's own Python, on purpose
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence

if __package__:
    from . import dep_path
else:   # run as a script (manual_command): its folder is on sys.path
    import dep_path

PLUGIN_KEY = "tailings_mapper"
ENV_DIR = "TAILINGS_MAPPER_DEPS_DIR"      # overrides the install folder (tests, admins)


@dataclass
class Requirement:
    module: str          # what is imported
    pip_name: str        # what pip installs
    why: str             # shown to the user
    brought_by_qgis: bool = False
    index_url: Optional[str] = None   # where pip finds it, when not PyPI (its requirements come from PyPI)
    alone: bool = False                # installed without its requirements (only its files are used)


REQUIREMENTS = [
    Requirement("numpy", "numpy<2", "arrays (QGIS normally brings it)", True),
    Requirement("osgeo.gdal", "GDAL", "raster and vector input/output (QGIS brings it)", True),
    Requirement("onnxruntime", "onnxruntime", "runs the ONNX segmentation models"),
]
# Not needed to run; installed on request, alone (the engine uses its ONNX networks, not its code,
# so its own requirements are not fetched).
CSMASK = Requirement("ukis_csmask", "ukis-csmask", "cloud and cloud-shadow masks for Sentinel-2 L1C scenes "
                     "(DLR's networks, Apache-2.0; a download of about 145 MB)", alone=True)
# Training from polygons and improving a model from corrections run PyTorch (its CPU build: the
# CUDA one is gigabytes).
# Always exactly this torch (the version training is tested with); onnx exports the networks.
TORCH_VERSION = "2.13.0"
TORCH = Requirement("torch", "torch==%s" % TORCH_VERSION, "training models from your polygons and corrections "
                    "(PyTorch %s, CPU build, with onnx; a download of about 230 MB, about 950 MB on disk)"
                    % TORCH_VERSION, index_url="https://download.pytorch.org/whl/cpu")
TRAINING = [TORCH.pip_name, "onnx"]
TRAINING_CHECK = ["torch", "onnx", "sympy"]     # what verify() imports (torch: with a tiny ONNX export)
DASK = Requirement("distributed", "distributed", "batch runs over many facilities on several worker processes (Dask; "
                   "about 15 MB)")
OPTIONAL = (CSMASK, TORCH, DASK)


def optional_missing() -> List[Requirement]:
    """Optional packages that are not installed (found without importing them)."""
    import importlib.util
    importlib.invalidate_caches()
    return [r for r in OPTIONAL if importlib.util.find_spec(r.module) is None]


def torch_missing() -> bool:
    return TORCH in optional_missing()


@dataclass
class Missing:
    requirement: Requirement
    error: str
    absent: bool = True     # not installed at all (else installed, but its import fails)

    def describe(self) -> str:
        return "%s (%s): %s" % (self.requirement.module, self.requirement.why, self.error)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message.  (The engine has the same helper, but this module
    must not import the engine: it runs first, to say whether numpy and GDAL are there at all.)"""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _warn(message: str) -> None:
    """To the QGIS log when QGIS is there, else stderr (this module also runs in plain Python)."""
    try:
        from .log import log
        from qgis.core import Qgis
        log(message, Qgis.MessageLevel.Warning)
    except ImportError:
        print("Tailings Mapper: %s" % message, file=sys.stderr)


def deps_dir() -> str:
    """The folder the plugin owns for packages it installs, for this Python version."""
    base = os.environ.get(ENV_DIR)
    if not base:
        settings_dir = None
        try:
            from qgis.core import QgsApplication
            settings_dir = QgsApplication.qgisSettingsDirPath()
        except Exception:  # plain Python, no QGIS
            settings_dir = None
        if settings_dir:
            base = os.path.join(settings_dir, "python", "dependencies", PLUGIN_KEY)
        else:
            base = os.path.join(os.path.expanduser("~"), ".tailings_mapper", "dependencies")
    return os.path.join(base, "py%d%d" % sys.version_info[:2])


def add_to_path(path: Optional[str] = None) -> str:
    """Make the dependency folder's packages importable by the rule of :mod:`dep_path` (the folder
    after QGIS's own paths; its own packages first, never numpy, GDAL or PyQt) when it exists;
    returns it.  What could not be switched to the folder's copy goes to the log."""
    path = path or deps_dir()
    for line in dep_path.apply(path):
        _warn(line)
    return path


def check(requirements: Sequence[Requirement] = REQUIREMENTS) -> List[Missing]:
    """The requirements that cannot be imported, each with the import error."""
    out = []
    for req in requirements:
        try:
            importlib.import_module(req.module)
        except Exception as e:  # ImportError, but also DLL load failures (OSError)
            absent = isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] == req.module.split(".")[0]
            out.append(Missing(req, first_line(e), absent))
    return out


def missing_text(missing: Iterable[Missing]) -> str:
    return "; ".join(m.describe() for m in missing)


def nvidia_driver_present() -> bool:
    """True when an NVIDIA driver is installed (``nvidia-smi`` on PATH or in its usual places)."""
    if shutil.which("nvidia-smi"):
        return True
    for p in (r"C:\Windows\System32\nvidia-smi.exe",
              r"C:\Program Files\NVIDIA Corporation\NVSMI\nvidia-smi.exe"):
        if os.path.isfile(p):
            return True
    return False


def _python_identity(exe: str) -> Optional[tuple]:
    """``(major.minor, prefix)`` of an interpreter, or None when it does not run."""
    code = "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.base_prefix)"
    try:
        out = subprocess.run([exe, "-c", code],  # nosec B603 - an interpreter asked its version, no shell
                             capture_output=True, text=True, timeout=30,
                             **_no_window())
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return (lines[0], lines[1]) if out.returncode == 0 and len(lines) >= 2 else None


def find_python() -> str:
    """The Python interpreter of this QGIS (``sys.executable`` is QGIS itself, or whatever
    ``python3`` PATH finds first, on some platforms).  One of the same version and the same
    installation (``sys.base_prefix``) is preferred; RuntimeError when none of the same
    version is found."""
    want = "%d.%d" % sys.version_info[:2]
    prefix = os.path.realpath(getattr(sys, "base_prefix", sys.prefix))
    names = ["python%s" % want, "python3", "python"]
    cands = []
    for root in (sys.exec_prefix, sys.prefix, getattr(sys, "base_exec_prefix", None),
                 getattr(sys, "base_prefix", None)):
        if not root:
            continue
        for n in names:
            cands += [os.path.join(root, "bin", n), os.path.join(root, n + ".exe"), os.path.join(root, n)]
    cands += [getattr(sys, "_base_executable", None), sys.executable]
    cands += _windows_layout(sys.executable)
    for n in names:
        cands.append(shutil.which(n))
    seen, same_version = set(), None
    for c in cands:
        if not c or c in seen or not os.path.isfile(c):
            continue
        seen.add(c)
        if not os.path.basename(c).lower().startswith("python"):
            continue
        ident = _python_identity(c)
        if not ident or ident[0] != want:
            continue
        if os.path.realpath(ident[1]) == prefix:
            return c
        same_version = same_version or c
    if same_version:
        return same_version
    raise RuntimeError("could not find the Python %s interpreter of this QGIS (looked for %s near %s)"
                       % (want, ", ".join(names), sys.exec_prefix))


def _windows_layout(qgis_exe: str) -> List[str]:
    """Where QGIS's Python is in a Windows install (standalone or OSGeo4W, QGIS 3.x and 4.x), seen
    from ``bin/qgis-bin.exe``: ``bin/python.exe`` or ``apps/PythonXY/python.exe`` (Python312 on
    QGIS 4 and recent 3.x)."""
    bin_dir = os.path.dirname(os.path.abspath(qgis_exe))
    apps = os.path.join(os.path.dirname(bin_dir), "apps")
    want = os.path.join(apps, "Python%d%d" % sys.version_info[:2], "python.exe")
    return ([os.path.join(bin_dir, "python.exe"), os.path.join(bin_dir, "python3.exe"), want]
            + sorted(glob.glob(os.path.join(apps, "Python3*", "python.exe"))))


def _no_window():
    if sys.platform == "win32":
        return {"creationflags": 0x08000000}  # CREATE_NO_WINDOW
    return {}


def packages_for(gpu: bool) -> List[str]:
    """pip requirement strings to install for the CPU or GPU build."""
    return ["onnxruntime-gpu"] if gpu else ["onnxruntime"]


_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*)(;.*)?$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _marker_ok(marker: str) -> bool:
    """Evaluate an environment marker; extras are never requested."""
    marker = marker.strip().lstrip(";").strip()
    if not marker:
        return True
    if "extra" in marker:
        return False
    try:
        from packaging.markers import Marker
        return Marker(marker).evaluate()
    except Exception:
        return True


def _dists_in(target: str) -> List[tuple]:
    """``[(normalised distribution name, its .dist-info folder)]`` installed in ``target``."""
    out = []
    for info in glob.glob(os.path.join(target, "*.dist-info")):
        dist = os.path.basename(info)[:-len(".dist-info")].rsplit("-", 1)[0]
        out.append((_norm(dist), info))
    return out


def requires_of(target: str, names: Iterable[str]) -> List[str]:
    """Requirement strings (``name>=x``) declared by distributions ``names`` installed in ``target``."""
    wanted = {_norm(n) for n in names}
    out = []
    for dist, info in _dists_in(target):
        if dist not in wanted:
            continue
        meta = os.path.join(info, "METADATA")
        if not os.path.isfile(meta):
            continue
        with open(meta, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("Requires-Dist:"):
                    spec = line.split(":", 1)[1].strip()
                    m = _REQ.match(spec)
                    if m and _marker_ok(m.group(4) or ""):
                        out.append((m.group(1) + (m.group(3) or "")).strip())
                elif not line.strip():
                    break
    return out


def _installed_outside(name: str, target: str) -> bool:
    """Is distribution ``name`` available to this Python outside ``target``?"""
    paths = [p for p in sys.path if os.path.abspath(p) != os.path.abspath(target)]
    try:
        for _ in importlib.metadata.distributions(name=name, path=paths):
            return True
    except Exception as e:  # a broken distribution elsewhere on sys.path: install ours
        _warn("could not look for %s outside %s: %s" % (name, target, first_line(e)))
    return False


def _installed_in(name: str, target: str) -> bool:
    return any(dist == _norm(name) for dist, _ in _dists_in(target))


def pip_command(python: str, packages: Sequence[str], target: str, index_url: Optional[str] = None) -> List[str]:
    return ([python, "-m", "pip", "install", "--target", target, "--no-deps", "--upgrade",
             "--disable-pip-version-check", "--no-warn-script-location", "--no-input"]
            + (["--index-url", index_url] if index_url else []) + list(packages))


def remove_conflicting(target: str, gpu: bool, log: Callable[[str], None] = print) -> None:
    """onnxruntime and onnxruntime-gpu install the same module: keep only the chosen one."""
    other = "onnxruntime" if gpu else "onnxruntime-gpu"
    for dist, info in _dists_in(target):
        if dist == _norm(other):
            log("removing %s from %s" % (os.path.basename(info), target))
            shutil.rmtree(info, ignore_errors=True)
            shutil.rmtree(os.path.join(target, "onnxruntime"), ignore_errors=True)


def _run_pip(cmd: List[str], log: Callable[[str], None], cancel: Callable[[], bool]) -> bool:
    """Run pip, its output line by line to ``log``; False (and why, in the log) when it failed or
    ``cancel()`` became true."""
    log("$ " + " ".join(cmd))
    try:
        proc = subprocess.Popen(cmd,  # nosec B603 - pip of QGIS's Python, the user's Install button; no shell
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, **_no_window())
    except OSError as e:
        log("ERROR: cannot start pip: %s" % e)
        return False
    with proc:   # closes pip's output pipe, whatever happens
        for line in proc.stdout:
            log(line.rstrip())
            if cancel():
                proc.kill()
                proc.wait()
                log("cancelled")
                return False
        rc = proc.wait()
    if rc != 0:
        log("ERROR: pip exited with status %d" % rc)
        return False
    return True


def install(packages: Sequence[str], target: Optional[str] = None, python: Optional[str] = None,
            log: Callable[[str], None] = print, cancel: Callable[[], bool] = lambda: False,
            max_rounds: int = 5, index_url: Optional[str] = None) -> bool:
    """Install ``packages`` and whatever they need that this Python lacks into ``target``
    (``max_rounds=1``: the packages alone; ``index_url``: where the packages themselves are,
    their requirements coming from PyPI).

    Output of pip goes line by line to ``log``.  Returns True on success; False when
    pip failed or ``cancel()`` became true (the log says why).
    """
    target = target or deps_dir()
    os.makedirs(target, exist_ok=True)
    try:
        python = python or find_python()
    except RuntimeError as e:
        log("ERROR: %s" % e)
        return False
    gpu = any(_norm(p).startswith("onnxruntime-gpu") for p in packages)
    if any(_norm(p).startswith("onnxruntime") for p in packages):
        remove_conflicting(target, gpu, log)
    todo = list(packages)
    done = set()
    for rnd in range(max_rounds):
        if not todo:
            break
        if not _run_pip(pip_command(python, todo, target, index_url if rnd == 0 else None), log, cancel):
            return False
        names = [_REQ.match(p).group(1) for p in todo if _REQ.match(p)]
        done.update(_norm(n) for n in names)
        nxt = []
        for req in requires_of(target, names):
            name = _REQ.match(req).group(1)
            if _norm(name) in done or _installed_outside(name, target) or _installed_in(name, target):
                continue
            if _norm(name) == "numpy":
                req = numpy_requirement()
            nxt.append(req)
            done.add(_norm(name))
        todo = nxt
    add_to_path(target)
    importlib.invalidate_caches()
    log("installed into %s" % target)
    return True


def numpy_requirement(version=None) -> str:
    """numpy for a QGIS that has none: 1.x (QGIS's GDAL is built against it on most platforms)
    where wheels of it exist for this Python (up to 3.12), else numpy."""
    return "numpy<2" if (version or sys.version_info)[:2] <= (3, 12) else "numpy"


def pip_available(python: Optional[str] = None) -> Optional[str]:
    """None when ``python -m pip`` works, else a message saying how to get pip."""
    try:
        python = python or find_python()
    except RuntimeError as e:
        return str(e)
    try:
        r = subprocess.run([python, "-m", "pip", "--version"],  # nosec B603 - QGIS's Python asked for pip's version
                           capture_output=True, text=True, timeout=60, **_no_window())
    except (OSError, subprocess.SubprocessError) as e:
        return "cannot run %s: %s" % (python, e)
    if r.returncode == 0:
        return None
    hint = ""
    if sys.platform.startswith("linux"):
        hint = " (on Debian/Ubuntu: sudo apt install python3-pip)"
    return "pip is not available for %s%s" % (python, hint)


# What the two builds cost, measured with pip on Linux x86_64, Python 3.11, 2026-12: the onnxruntime
# 1.32.0 wheel is 28 MB (installed with flatbuffers and protobuf: 81 MB); onnxruntime-gpu 1.31.1 is
# 256 MB, and needs NVIDIA's CUDA and cuDNN libraries, which pip does not bring.
SIZE_CPU = "a download of about 30 MB, about 80 MB on disk"
SIZE_GPU = "a download of about 260 MB; needs the CUDA 12 and cuDNN 9 libraries"

MISSING_MESSAGE = ("Tailings Mapper needs the Python package onnxruntime, which this QGIS does not have. "
                   "Install it into the plugin's own folder (no administrator rights needed).")


BROKEN_MESSAGE = ("Tailings Mapper found the Python package onnxruntime, but it cannot be loaded (%s). "
                  "Install it again into the plugin's own folder (no administrator rights needed).")


def onnxruntime_missing() -> bool:
    return onnxruntime_problem() is not None


def onnxruntime_problem(missing: Optional[Sequence[Missing]] = None) -> Optional[str]:
    """What stops every run, in words (None when onnxruntime imports): not installed, or installed
    and broken (a library it loads fails; its import's reason)."""
    for m in (check() if missing is None else missing):
        if m.requirement.module == "onnxruntime":
            return MISSING_MESSAGE if m.absent else BROKEN_MESSAGE % m.error
    return None


def where_to_run(platform: Optional[str] = None) -> str:
    """Where :func:`manual_command` runs: on Windows, QGIS's Python needs the environment of the
    OSGeo4W Shell that each QGIS install brings (its libraries' folder on PATH)."""
    platform = platform or sys.platform
    if platform == "win32":
        return "the OSGeo4W Shell of this QGIS (Start menu, in the QGIS folder)"
    return "the Terminal" if platform == "darwin" else "a terminal"


def manual_command(gpu: bool = False) -> str:
    """A command the user can paste into a terminal instead of the dialog: it runs this module,
    which installs exactly as the dialog does (QGIS's Python, the plugin's folder, no numpy 2)."""
    try:
        python = find_python()
    except RuntimeError:
        python = "python3"
    cmd = '"%s" "%s" --target "%s"' % (python, os.path.abspath(__file__), deps_dir())
    return cmd + (" --gpu" if gpu else "")


def main(argv=None) -> int:
    """``python deps.py [--gpu] [--target DIR]``: install onnxruntime as the plugin's dialog does."""
    import argparse
    ap = argparse.ArgumentParser(description="Install the Python packages Tailings Mapper needs into its folder")
    ap.add_argument("--gpu", action="store_true", help="onnxruntime-gpu (NVIDIA) instead of onnxruntime")
    ap.add_argument("--target", default=None, help="the folder (default: the plugin's, %s)" % deps_dir())
    ap.add_argument("--python", default=sys.executable, help="the Python whose pip installs (default: this one)")
    a = ap.parse_args(argv)
    return 0 if install(packages_for(a.gpu), a.target, python=a.python) else 1


if __name__ == "__main__":
    sys.exit(main())
