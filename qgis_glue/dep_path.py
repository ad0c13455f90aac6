"""Which copy of a package the plugin's code imports: the path rule, and the check that proves it.

QGIS's Python often has older copies of packages that the plugin's optional features need newer
(Debian 12: sympy 1.11.1 and mpmath "0.0.0" in ``/usr/lib/python3/dist-packages``; PyTorch 2.13
needs sympy >= 1.13.3).  The plugin installs the newer copies into a folder of its own
(``deps.deps_dir()``).  The rule, applied by :func:`apply` in QGIS, in the installer's check and in
the test that runs Debian's own Python:

1. The folder is appended to ``sys.path``: a package found nowhere else is found there.
2. Every top-level package or module *in the folder* is taken from the folder first, through a
   finder placed at the head of ``sys.meta_path`` that answers for those names only (sympy, mpmath,
   onnx, ml_dtypes, torch, networkx, ...).  Other names resolve as QGIS resolves them.
3. Never for QGIS's own modules: numpy, GDAL (``osgeo``), PyQt/sip, ``qgis``, and the packaging
   tools (setuptools, pip): their system copies always win, even if a copy sits in the folder.  The
   installer never puts them there either (numpy is pinned to the installed version while
   resolving, so no package that needs another numpy is chosen).
4. Namespace packages (``google`` of protobuf) are left to ``sys.path`` (step 1): taking them from
   the folder first would hide other portions of the namespace.
5. A name already imported from elsewhere (an older sympy another plugin loaded) is dropped from
   ``sys.modules`` so that the next import gets the folder's copy, only when it is safe: when no
   other loaded module holds a reference to it (or to one of its submodules).  Otherwise it is
   left alone and reported; the import check then names the old copy and QGIS must be restarted.

This module imports nothing from the plugin and nothing outside the standard library: it runs
as a script in a fresh interpreter (``python dep_path.py --check FOLDER MODULE...``).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
from typing import Iterable, List, Optional, Sequence, Set

# Top-level import names that the system's copy always serves (rule 3).
PROTECTED = frozenset({"numpy", "osgeo", "gdal", "ogr", "osr", "gdalconst", "PyQt5", "PyQt6", "sip", "qgis",
                       "setuptools", "pkg_resources", "_distutils_hack", "distutils", "pip", "wheel"})
# Their distribution names: never installed into the folder when the system has them.
PROTECTED_DISTS = frozenset({"numpy", "gdal", "pyqt5", "pyqt6", "pyqt5-sip", "pyqt6-sip", "sip",
                             "setuptools", "pip", "wheel"})
_SUFFIXES = tuple(importlib.machinery.all_suffixes())


def own_names(folder: str) -> Set[str]:
    """Top-level regular packages and modules in ``folder`` that it serves first (rules 2-4)."""
    out = set()
    try:
        entries = os.listdir(folder)
    except OSError:
        return out
    for e in entries:
        full = os.path.join(folder, e)
        if os.path.isdir(full):
            name = e if os.path.isfile(os.path.join(full, "__init__.py")) else None
        else:
            name = next((e[:-len(s)] for s in _SUFFIXES if e.endswith(s)), None)
            name = name.split(".")[0] if name else None   # _C.cpython-311-x86_64-linux-gnu.so
        if name and name.isidentifier() and name not in PROTECTED and not name.startswith("__"):
            out.add(name)
    return out


class FolderFirst(importlib.abc.MetaPathFinder):
    """Finds the named top-level packages in one folder before anything else on the path."""

    def __init__(self, folder: str, names: Iterable[str]):
        self.folder = os.path.abspath(folder)
        self.names = frozenset(names)

    def find_spec(self, fullname, path=None, target=None):
        if "." in fullname or fullname not in self.names:
            return None     # submodules follow their package's __path__
        return importlib.machinery.PathFinder.find_spec(fullname, [self.folder])

    def __repr__(self):
        return "FolderFirst(%r, %d names)" % (self.folder, len(self.names))


def _family(name: str) -> List[str]:
    return [m for m in list(sys.modules) if m == name or m.startswith(name + ".")]


def _held_elsewhere(name: str) -> bool:
    """Does a loaded module outside package ``name`` hold one of its modules as an attribute?"""
    family = {id(sys.modules[m]) for m in _family(name) if sys.modules.get(m) is not None}
    for mname, mod in list(sys.modules.items()):
        if mod is None or mname == name or mname.startswith(name + ".") or mname == __name__:
            continue
        try:
            values = list(vars(mod).values())
        except TypeError:
            continue
        if any(id(v) in family for v in values):
            return True
    return False


def _loaded_from(mod, folder: str) -> bool:
    f = getattr(mod, "__file__", None) or ""
    return os.path.abspath(f).startswith(folder + os.sep)


def apply(folder: str) -> List[str]:
    """Apply the rule for ``folder`` (when it exists); returns what could not be switched to the
    folder's copy (already imported from elsewhere and held by other modules), one line each."""
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        return []
    if folder not in [os.path.abspath(p) for p in sys.path if isinstance(p, str)]:
        sys.path.append(folder)
    names = own_names(folder)
    sys.meta_path[:] = [f for f in sys.meta_path if not (isinstance(f, FolderFirst) and f.folder == folder)]
    sys.meta_path.insert(0, FolderFirst(folder, names))
    importlib.invalidate_caches()
    stuck = []
    for name in sorted(names):
        mod = sys.modules.get(name)
        if mod is None or _loaded_from(mod, folder):
            continue
        if _held_elsewhere(name):
            stuck.append("%s is already loaded from %s (restart QGIS to use the plugin's copy)"
                         % (name, getattr(mod, "__file__", "?")))
            continue
        for m in _family(name):
            del sys.modules[m]
    return stuck


# What the check runs for each module, beyond importing it: PyTorch exports a tiny network to ONNX
# exactly as training does (TorchScript exporter, opset 17), onnx reads it back and checks it.
_TORCH_EXPORT = """
import io, torch, onnx
net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.Softmax(dim=1))
buf = io.BytesIO()
torch.onnx.export(net, (torch.zeros(1, 3, 8, 8),), buf, input_names=["input"], output_names=["p"],
                  opset_version=17, dynamo=False)
onnx.checker.check_model(onnx.load_from_string(buf.getvalue()))
from sympy.core.numbers import equal_valued  # what torch's symbolic shapes need (sympy >= 1.13.3)
"""


def _check_here(folder: str, modules: Sequence[str]) -> Optional[str]:
    """In this interpreter: apply the rule, import each module (and export with torch); the first
    failure as one line, or None."""
    import warnings
    warnings.simplefilter("ignore")
    stuck = apply(folder)
    if stuck:
        return stuck[0]
    for name in modules:
        try:
            mod = importlib.import_module(name)
            where = os.path.abspath(getattr(mod, "__file__", "") or "")
            if name in own_names(folder) and not where.startswith(folder + os.sep):
                return "%s comes from %s, not from %s" % (name, where, folder)
            if name == "torch":
                exec(compile(_TORCH_EXPORT, "<torch-onnx-check>", "exec"), {})  # nosec B102 - constant text above
        except BaseException as e:  # an import can fail with anything (OSError for a DLL, SystemExit)
            text = str(e).strip().splitlines()
            return "%s: %s: %s" % (name, type(e).__name__, text[0] if text else "")
    return None


def check_command(python: str, folder: str, modules: Sequence[str]) -> List[str]:
    """The command line that runs :func:`_check_here` in a fresh ``python``."""
    return [python, os.path.abspath(__file__), "--check", folder] + list(modules)


def main(argv=None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]   # the plugin's own modules
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] != "--check":
        print("usage: dep_path.py --check FOLDER [MODULE...]", file=sys.stderr)
        return 2
    problem = _check_here(argv[1], argv[2:])
    print("FAIL " + problem if problem else "OK")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
