"""The dependency folder's path rule and training's install in a stock QGIS (Debian's /usr/bin/python3).

Fast: the rule (the folder first for its own packages, never numpy), the import check's one line,
the constraints and the resolved install with a stand-in pip.  The real install of torch and a
training run with Debian's Python and no venv is scripts/check_stock_qgis.sh (about 3 minutes and
1 GB: run by .ci/run).
"""
import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

STOCK = "/usr/bin/python3"


def _stock_has(module):
    if not os.path.isfile(STOCK):
        return False
    return subprocess.run([STOCK, "-c", "import %s" % module], capture_output=True).returncode == 0


def _package(folder, name, body):
    d = folder / name
    d.mkdir(parents=True)
    (d / "__init__.py").write_text(body)


@pytest.mark.skipif(not (_stock_has("sympy") and _stock_has("numpy")), reason="needs Debian's python3-sympy, numpy")
def test_folder_first_for_its_own_packages_never_numpy(tm, tmp_path):
    """With Debian's Python: the folder's sympy wins over dist-packages' 1.11.1; a numpy in the folder
    never shadows the system's; a package only the folder has is found; the namespace stays open."""
    from tailings_mapper.qgis_glue import dep_path
    folder = tmp_path / "deps"
    _package(folder, "sympy", "__version__ = '99.0'\nfrom .core import numbers\n")
    _package(folder / "sympy", "core", "from . import numbers\n")
    (folder / "sympy" / "core" / "numbers.py").write_text("def equal_valued(a, b):\n    return a == b\n")
    _package(folder, "numpy", "raise ImportError('the folder shadowed numpy')\n")
    (folder / "tm_only_here.py").write_text("X = 1\n")
    (folder / "google").mkdir()
    assert dep_path.own_names(str(folder)) == {"sympy", "tm_only_here"}
    code = textwrap.dedent("""
        import sys, json
        sys.path.insert(0, %r)
        import dep_path
        print(dep_path.apply(%r))
        import sympy, numpy, tm_only_here
        from sympy.core.numbers import equal_valued
        print(json.dumps([sympy.__version__, sympy.__file__, numpy.__file__, tm_only_here.X]))
    """ % (os.path.dirname(dep_path.__file__), str(folder)))
    r = subprocess.run([STOCK, "-s", "-c", code], capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, r.stderr[-1500:]
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "[]"
    version, sympy_file, numpy_file, x = json.loads(lines[1])
    assert version == "99.0" and sympy_file.startswith(str(folder)) and x == 1
    assert numpy_file.startswith("/usr/lib/python3/dist-packages/")
    # without the rule (the folder appended, as before): Debian's old sympy wins
    old = subprocess.run([STOCK, "-s", "-c", "import sys; sys.path.append(%r); import sympy; print(sympy.__file__)"
                          % str(folder)], capture_output=True, text=True, timeout=60)
    assert old.stdout.startswith("/usr/lib/python3/")


def test_an_older_copy_already_loaded_is_swapped_only_when_nothing_holds_it(tm, tmp_path, monkeypatch):
    import types
    from tailings_mapper.qgis_glue import dep_path
    old, new = tmp_path / "old", tmp_path / "new"
    _package(old, "tm_swap_a", "V = 'old'\n")
    _package(old, "tm_swap_b", "V = 'old'\n")
    _package(new, "tm_swap_a", "V = 'new'\n")
    _package(new, "tm_swap_b", "V = 'new'\n")
    monkeypatch.syspath_prepend(str(old))
    import tm_swap_a   # noqa: F401
    import tm_swap_b
    holder = types.ModuleType("tm_swap_holder")
    holder.b = tm_swap_b
    monkeypatch.setitem(sys.modules, "tm_swap_holder", holder)
    meta = list(sys.meta_path)
    try:
        stuck = dep_path.apply(str(new))
        assert len(stuck) == 1 and stuck[0].startswith("tm_swap_b is already loaded from %s" % old)
        assert "tm_swap_a" not in sys.modules and sys.modules["tm_swap_b"] is tm_swap_b
        import tm_swap_a as again
        assert again.V == "new"
    finally:
        sys.meta_path[:] = meta
        sys.path.remove(str(new))
        for m in ("tm_swap_a", "tm_swap_b"):
            sys.modules.pop(m, None)


@pytest.mark.skipif(not _stock_has("sympy"), reason="needs Debian's python3-sympy")
def test_verify_names_the_first_failure_in_one_line(tm, tmp_path):
    """The dialog's check, in a fresh Debian Python: a broken package in the folder and a missing
    torch each give one line; what works gives None."""
    from tailings_mapper.qgis_glue import dep_resolve
    folder = tmp_path / "deps"
    _package(folder, "tm_broken", "import tm_no_such_module_anywhere\n")
    (folder / "tm_fine.py").write_text("")
    assert dep_resolve.verify(str(folder), ["tm_fine", "sympy"], python=STOCK) is None
    problem = dep_resolve.verify(str(folder), ["tm_fine", "tm_broken", "torch"], python=STOCK)
    assert problem == "tm_broken: ModuleNotFoundError: No module named 'tm_no_such_module_anywhere'"
    if not _stock_has("torch"):
        assert dep_resolve.verify(str(folder), ["torch"], python=STOCK) == \
            "torch: ModuleNotFoundError: No module named 'torch'"


def test_constraints_keep_the_installed_numpy(tm):
    from tailings_mapper.qgis_glue import dep_resolve
    assert dep_resolve.constraints_for({"numpy": "1.24.2"}) == ["numpy==1.24.2", "ml_dtypes<0.6"]
    assert dep_resolve.constraints_for({"numpy": "2.1.3"}) == ["numpy==2.1.3"]
    assert dep_resolve.constraints_for({}) == []


FAKE = textwrap.dedent(r'''
    #!{python}
    import json, os, sys
    args = sys.argv[1:]
    if args[:1] == ["-c"]:
        exec(args[1]); sys.exit(0)
    log = os.environ["TM_FAKE_LOG"]
    with open(log, "a") as f:
        f.write(json.dumps(args) + "\n")
        if "-c" in args:
            f.write(json.dumps(open(args[args.index("-c") + 1]).read().split()) + "\n")
    if "--dry-run" in args:
        chosen = [("torch", "2.13.0+cpu"), ("sympy", "1.14.0"), ("setuptools", "84.2.1"), ("onnx", "1.23.2")]
        json.dump({{"install": [{{"metadata": {{"name": n, "version": v}}}} for n, v in chosen]}},
                  open(args[args.index("--report") + 1], "w"))
    print("Successfully installed")
''').lstrip()


def test_training_installs_the_resolved_set_without_qgis_packages(tm, tmp_path, monkeypatch):
    """torch==2.13.0 and onnx resolved with this Python's numpy pinned; setuptools (torch asks for a
    newer one) left to the system's; the rest installed exactly, without their requirements."""
    import importlib.metadata
    from tailings_mapper.qgis_glue import dep_resolve, deps
    fake = tmp_path / "python3"
    fake.write_text(FAKE.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("TM_FAKE_LOG", str(tmp_path / "calls"))
    monkeypatch.setattr(dep_resolve, "index_reachable", lambda url, timeout=15: False)
    lines = []
    meta = list(sys.meta_path)
    try:
        assert dep_resolve.install_training(str(tmp_path / "deps"), python=str(fake), log=lines.append)
    finally:
        sys.meta_path[:] = meta
        sys.path.remove(str(tmp_path / "deps"))
    calls = [json.loads(l) for l in open(tmp_path / "calls").read().splitlines()]
    resolve, cons, inst = calls
    assert resolve[-2:] == ["torch==2.13.0", "onnx"] and "--dry-run" in resolve and "--target" not in resolve
    assert "numpy==%s" % importlib.metadata.version("numpy") in cons
    assert inst[inst.index("--target") + 1] == str(tmp_path / "deps") and "--no-deps" in inst
    assert inst[-3:] == ["torch==2.13.0+cpu", "sympy==1.14.0", "onnx==1.23.2"]
    assert any("setuptools 84.2.1 (asked for) is left to this Python's own copy" in l for l in lines)
    assert any("download.pytorch.org/whl/cpu cannot be reached" in l for l in lines)
    assert deps.TRAINING == ["torch==2.13.0", "onnx"]


def test_dialog_says_ready_only_when_the_check_passes(tm, qgis_app, monkeypatch, tmp_path):
    from tailings_mapper.qgis_glue import dep_resolve, deps
    from tailings_mapper.ui import deps_dialog
    from qgis_helpers import wait_for
    monkeypatch.setenv(deps.ENV_DIR, str(tmp_path / "deps"))
    monkeypatch.setattr(deps, "pip_available", lambda python=None: None)
    monkeypatch.setattr(deps, "optional_missing", lambda: [deps.TORCH])
    monkeypatch.setattr(dep_resolve, "install_training", lambda target, log, cancel: True)
    checked = []
    failure = "sympy: ImportError: cannot import name 'equal_valued' from 'sympy.core.numbers'"
    monkeypatch.setattr(dep_resolve, "verify", lambda target, modules: checked.append(modules) or failure)
    dlg = deps_dialog.DependencyDialog([])
    dlg.torch.setChecked(True)
    dlg.start()
    assert wait_for(lambda: dlg.worker is not None and dlg.worker.isFinished() and dlg.install_button.isEnabled(), 20)
    assert checked == [["torch", "onnx", "sympy"]]
    assert not dlg.installed and "does not work: sympy: ImportError: cannot import name" in dlg.status.text()
    assert "ready" not in dlg.status.text()
    dlg.close()
