"""Dependency check and installer (pip into a plugin-owned folder), with a fake pip."""
import os
import stat
import sys
import textwrap

import pytest

FAKE_PIP = textwrap.dedent(r'''
    #!{python}
    import os, sys
    args = sys.argv[1:]
    if args[:1] == ["-c"]:
        exec(args[1]); sys.exit(0)
    if args[:3] == ["-m", "pip", "--version"]:
        print("pip 99"); sys.exit(0)
    assert args[:3] == ["-m", "pip", "install"], args
    target = args[args.index("--target") + 1]
    assert "--no-deps" in args
    pkgs = [a for a in args[3:] if not a.startswith("--") and a != target]
    REQ = {{"onnxruntime": ["numpy>=1.21", "tm-fake-a", "tm-fake-b>=4", "packaging",
                           "coloredlogs; extra == 'logs'", "pywin32; sys_platform == 'win32'"],
           "onnxruntime-gpu": ["numpy>=1.21", "flatbuffers"],
           "tm-fake-a": ["tm-fake-c"], "tm-fake-b": []}}
    with open(os.path.join(target, "calls.txt"), "a") as f:
        f.write(" ".join(pkgs) + "\n")
    for p in pkgs:
        name = p.split(">")[0].split("=")[0].split("<")[0]
        if name == "fail":
            print("ERROR: no such package"); sys.exit(1)
        d = os.path.join(target, "%s-1.0.dist-info" % name.replace("-", "_"))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "METADATA"), "w") as f:
            f.write("Metadata-Version: 2.1\nName: %s\nVersion: 1.0\n" % name)
            for r in REQ.get(name, []):
                f.write("Requires-Dist: %s\n" % r)
            f.write("\nlong description\nRequires-Dist: bogus\n")
        os.makedirs(os.path.join(target, name.replace("-gpu", "").replace("-", "_")), exist_ok=True)
        print("Successfully installed %s-1.0" % name)
''').lstrip()


@pytest.fixture
def fake_python(tmp_path):
    p = tmp_path / "python3"
    p.write_text(FAKE_PIP.format(python=sys.executable))
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(p)


def test_check_reports_missing(tm, monkeypatch):
    from tailings_mapper.qgis_glue import deps
    assert deps.check() == []
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    missing = deps.check()
    assert [m.requirement.module for m in missing] == ["onnxruntime"]
    assert "onnxruntime" in deps.missing_text(missing)


def test_deps_dir_is_plugin_owned(tm, monkeypatch, tmp_path):
    from tailings_mapper.qgis_glue import deps
    monkeypatch.delenv(deps.ENV_DIR, raising=False)
    d = deps.deps_dir()
    assert "tailings_mapper" in d and d.endswith("py%d%d" % sys.version_info[:2])
    monkeypatch.setenv(deps.ENV_DIR, str(tmp_path / "x"))
    assert deps.deps_dir().startswith(str(tmp_path / "x"))


def test_find_python_prefers_this_installation(tm):
    from tailings_mapper.qgis_glue import deps
    exe = deps.find_python()
    ident = deps._python_identity(exe)
    assert ident[0] == "%d.%d" % sys.version_info[:2]
    assert os.path.realpath(ident[1]) == os.path.realpath(sys.base_prefix)


def test_install_resolves_only_what_qgis_lacks(tm, fake_python, tmp_path):
    from tailings_mapper.qgis_glue import deps
    target = str(tmp_path / "deps")
    lines = []
    ok = deps.install(["onnxruntime"], target, python=fake_python, log=lines.append)
    assert ok, lines
    calls = open(os.path.join(target, "calls.txt")).read().split("\n")
    assert calls[0] == "onnxruntime"
    # numpy and packaging are already there: never shadowed; markers for extras/windows skipped
    assert sorted(calls[1].split()) == ["tm-fake-a", "tm-fake-b>=4"]
    assert calls[2] == "tm-fake-c"
    assert target in sys.path
    sys.path.remove(target)
    assert any(line.startswith("$ ") and "--target" in line for line in lines)


def test_install_gpu_replaces_cpu_build(tm, fake_python, tmp_path):
    from tailings_mapper.qgis_glue import deps
    target = str(tmp_path / "deps")
    assert deps.install(["onnxruntime"], target, python=fake_python, log=lambda s: None)
    assert deps.install(deps.packages_for(gpu=True), target, python=fake_python, log=lambda s: None)
    infos = sorted(n for n in os.listdir(target) if n.endswith(".dist-info"))
    assert "onnxruntime_gpu-1.0.dist-info" in infos and "onnxruntime-1.0.dist-info" not in infos
    sys.path.remove(target)


def test_install_failure_is_reported(tm, fake_python, tmp_path):
    from tailings_mapper.qgis_glue import deps
    lines = []
    assert not deps.install(["fail"], str(tmp_path / "d"), python=fake_python, log=lines.append)
    assert any("pip exited with status 1" in line for line in lines)


def _dialog_install(monkeypatch, tmp_path, write):
    """The dependency dialog's Install with pip replaced by ``write(target)``; the dialog when done."""
    from tailings_mapper.qgis_glue import deps
    from tailings_mapper.ui import deps_dialog
    from qgis_helpers import wait_for
    monkeypatch.setenv(deps.ENV_DIR, str(tmp_path / "deps"))
    monkeypatch.setattr(deps, "nvidia_driver_present", lambda: False)
    monkeypatch.setattr(deps, "pip_available", lambda python=None: None)
    calls = []

    def fake_install(packages, target, log, cancel):
        calls.append((list(packages), target))
        os.makedirs(target, exist_ok=True)
        write(target)
        log("Successfully installed %s" % packages[0])
        return True
    monkeypatch.setattr(deps, "install", fake_install)
    missing = [deps.Missing(deps.REQUIREMENTS[-1], "No module named 'onnxruntime'")]
    dlg = deps_dialog.DependencyDialog(missing)
    assert not dlg.gpu.isEnabled() and dlg.cpu.isChecked()
    dlg.start()
    assert wait_for(lambda: dlg.worker is not None and dlg.worker.isFinished() and dlg.progress.maximum() == 1, 60)
    dlg.worker.wait()
    assert calls == [(["onnxruntime"], deps.deps_dir())]
    assert "Successfully installed onnxruntime" in dlg.log.toPlainText()
    return dlg


def test_dialog_installs_with_log(tm, qgis_app, monkeypatch, tmp_path):
    """An install whose package imports in a fresh Python: the dialog says ready, Install is done."""
    dlg = _dialog_install(monkeypatch, tmp_path, lambda target: None)   # (the test's own onnxruntime imports)
    assert "check: all import" in dlg.log.toPlainText()
    assert dlg.installed and "Tailings Mapper is ready" in dlg.status.text()
    assert not dlg.install_button.isEnabled()
    dlg.close()


def test_dialog_says_when_the_installed_package_does_not_import(tm, qgis_app, monkeypatch, tmp_path):
    """pip says it installed onnxruntime, but the copy in the plugin's folder fails to import (a
    wrong build): the dialog must not say ready; it names the failure and offers Install again."""
    def broken(target):
        os.makedirs(os.path.join(target, "onnxruntime"))
        with open(os.path.join(target, "onnxruntime", "__init__.py"), "w") as f:
            f.write("raise ImportError('libonnxruntime.so.1: cannot open shared object file')\n")
    dlg = _dialog_install(monkeypatch, tmp_path, broken)
    assert not dlg.installed
    assert "does not work" in dlg.status.text() and "cannot open shared object file" in dlg.status.text()
    assert "Tailings Mapper is ready" not in dlg.status.text()
    assert dlg.install_button.isEnabled()
    dlg.close()


def test_dialog_offers_gpu_with_nvidia_driver(tm, qgis_app, monkeypatch):
    from tailings_mapper.qgis_glue import deps
    from tailings_mapper.ui import deps_dialog
    monkeypatch.setattr(deps, "nvidia_driver_present", lambda: True)
    dlg = deps_dialog.DependencyDialog([])
    assert dlg.gpu.isEnabled()
    dlg.gpu.setChecked(True)
    assert dlg.packages() == ["onnxruntime-gpu"]
    dlg.close()


def test_manual_command_installs_as_the_dialog_does(tm, fake_python, tmp_path, monkeypatch):
    """The terminal command the dialog shows runs the same installer: the same pip calls (no numpy,
    nothing QGIS has), into the folder it names; with no ResourceWarning left behind."""
    import shlex
    import subprocess
    import warnings
    from tailings_mapper.qgis_glue import deps
    monkeypatch.setenv(deps.ENV_DIR, str(tmp_path / "deps"))
    cmd = deps.manual_command()
    argv = shlex.split(cmd)
    assert argv[1].endswith(os.path.join("qgis_glue", "deps.py")) and argv[-1] == deps.deps_dir()
    r = subprocess.run([sys.executable, argv[1], "--target", argv[-1], "--python", fake_python],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = open(os.path.join(deps.deps_dir(), "calls.txt")).read().split("\n")
    assert calls[0] == "onnxruntime" and "numpy" not in " ".join(calls)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert deps.install(["onnxruntime"], str(tmp_path / "again"), python=fake_python, log=lambda s: None)
        import gc
        gc.collect()
    assert not [w for w in seen if issubclass(w.category, ResourceWarning)], [str(w.message) for w in seen]
    sys.path.remove(str(tmp_path / "again"))


def test_dialog_offers_the_optional_cloud_masks(tm, qgis_app, monkeypatch, tmp_path):
    """ukis-csmask, when missing, can be installed from the same dialog: alone (the engine uses its
    networks, not its code), and without reinstalling onnxruntime when that is there."""
    from tailings_mapper.qgis_glue import deps
    from tailings_mapper.ui import deps_dialog
    from qgis_helpers import wait_for
    monkeypatch.setenv(deps.ENV_DIR, str(tmp_path / "deps"))
    monkeypatch.setattr(deps, "pip_available", lambda python=None: None)
    monkeypatch.setattr(deps, "optional_missing", lambda: [deps.CSMASK])
    calls = []

    def fake_install(packages, target, log, cancel, max_rounds=5):
        calls.append((list(packages), max_rounds))
        return True
    monkeypatch.setattr(deps, "install", fake_install)
    dlg = deps_dialog.DependencyDialog([])
    assert not dlg.csmask.isHidden() and "145 MB" in dlg.csmask.text()
    dlg.csmask.setChecked(True)
    dlg.start()
    assert wait_for(lambda: dlg.worker is not None and dlg.worker.isFinished(), 20)
    dlg.worker.wait()
    assert calls == [(["ukis-csmask"], 1)]
    dlg.close()


def test_dialog_offers_torch_for_training_from_its_cpu_index(tm, qgis_app, monkeypatch, tmp_path):
    """PyTorch (training from polygons in QGIS), when missing: exactly torch 2.13.0 and onnx, resolved
    together (dep_resolve, PyTorch's CPU index as an extra index), then checked."""
    from tailings_mapper.qgis_glue import dep_resolve, deps
    from tailings_mapper.ui import deps_dialog
    from qgis_helpers import wait_for
    monkeypatch.setenv(deps.ENV_DIR, str(tmp_path / "deps"))
    monkeypatch.setattr(deps, "pip_available", lambda python=None: None)
    monkeypatch.setattr(deps, "optional_missing", lambda: [deps.TORCH])
    calls = []
    monkeypatch.setattr(deps, "install", lambda *a, **k: calls.append(("rounds", a)) or True)
    monkeypatch.setattr(dep_resolve, "install_training",
                        lambda target, log, cancel: calls.append(("training", target)) or True)
    monkeypatch.setattr(dep_resolve, "verify", lambda target, modules: None)
    dlg = deps_dialog.DependencyDialog([])
    assert not dlg.torch.isHidden() and dlg.csmask.isHidden() and "CPU build" in dlg.torch.text()
    dlg.torch.setChecked(True)
    dlg.start()
    assert wait_for(lambda: dlg.worker is not None and dlg.worker.isFinished(), 20)
    dlg.worker.wait()
    assert calls == [("training", deps.deps_dir())]
    assert deps.TORCH.index_url == "https://download.pytorch.org/whl/cpu" and deps.TRAINING == ["torch==2.13.0", "onnx"]
    dlg.close()


def test_index_url_only_for_the_packages_themselves(tm, fake_python, tmp_path):
    from tailings_mapper.qgis_glue import deps
    log = []
    ok = deps.install(["tm-fake-a"], str(tmp_path / "t"), python=fake_python, log=log.append,
                      index_url="https://example.invalid/whl/cpu")
    assert ok
    cmds = [l for l in log if l.startswith("$ ")]
    assert "--index-url https://example.invalid/whl/cpu tm-fake-a" in cmds[0]
    assert len(cmds) == 2 and "--index-url" not in cmds[1] and "tm-fake-c" in cmds[1]


def test_deps_dir_is_in_the_profile_qgis_names(tm, qgis_app, monkeypatch):
    """The folder comes from QGIS's own API (the profile folder on 3.x and 4.x: QGIS3/profiles or
    QGIS4/profiles), and no plugin module hard-codes a QGIS3 path."""
    import glob
    from qgis.core import QgsApplication
    from tailings_mapper.qgis_glue import deps
    monkeypatch.delenv(deps.ENV_DIR, raising=False)
    profile = QgsApplication.qgisSettingsDirPath()
    assert profile
    assert deps.deps_dir() == os.path.join(profile, "python", "dependencies", "tailings_mapper",
                                           "py%d%d" % sys.version_info[:2])
    root = os.path.dirname(os.path.dirname(os.path.abspath(deps.__file__)))
    for sub in ("", "qgis_glue", "ui", "processing_provider", "inference", "training"):
        for path in glob.glob(os.path.join(root, sub, "*.py")):
            with open(path, encoding="utf-8") as f:
                assert "QGIS3" not in f.read(), path


def _fake_interpreter(path, version, prefix):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("#!/bin/sh\necho %s\necho '%s'\n" % (version, prefix))
    os.chmod(path, 0o755)


@pytest.mark.parametrize("prefix_is_apps", [True, False])
def test_find_python_in_a_qgis4_windows_layout(tm, monkeypatch, tmp_path, prefix_is_apps):
    """QGIS on Windows runs as bin/qgis-bin.exe (sys.executable), its Python in apps/Python312
    (QGIS 4): that python.exe is found, whether sys.prefix points there or not, and never
    qgis-bin.exe or another Python of the same version on PATH."""
    from tailings_mapper.qgis_glue import deps
    want = "%d.%d" % sys.version_info[:2]
    install = tmp_path / "QGIS 4.2"
    apps = install / "apps" / ("Python%d%d" % sys.version_info[:2])
    qgis_bin = install / "bin" / "qgis-bin.exe"
    qgis_bin.parent.mkdir(parents=True)
    qgis_bin.write_text("")
    _fake_interpreter(str(apps / "python.exe"), want, apps)
    _fake_interpreter(str(install / "apps" / "Python39" / "python.exe"), "3.9", install / "apps" / "Python39")
    other = tmp_path / "elsewhere" / "bin"
    _fake_interpreter(str(other / ("python%s" % want)), want, tmp_path / "elsewhere")
    monkeypatch.setenv("PATH", str(other))
    prefix = str(apps) if prefix_is_apps else str(install)
    for attr in ("prefix", "exec_prefix", "base_prefix", "base_exec_prefix"):
        monkeypatch.setattr(sys, attr, prefix)
    monkeypatch.setattr(sys, "executable", str(qgis_bin))
    monkeypatch.setattr(sys, "_base_executable", str(qgis_bin), raising=False)
    found = deps.find_python()   # (without the prefix: the install's own before one on PATH)
    assert found == str(apps / "python.exe")
    assert deps.manual_command().startswith('"%s" ' % found)


def test_numpy_pin_has_wheels_for_the_python(tm):
    """numpy 1.x for QGIS's GDAL where wheels of it exist (up to Python 3.12: QGIS 4 on Windows),
    plain numpy beyond."""
    from tailings_mapper.qgis_glue import deps
    assert deps.numpy_requirement((3, 9)) == deps.numpy_requirement((3, 12)) == "numpy<2"
    assert deps.numpy_requirement((3, 13)) == "numpy"


def test_manual_command_says_where_it_runs(tm, qgis_app, monkeypatch):
    """On Windows the command runs in the OSGeo4W Shell (QGIS's Python needs its environment);
    the dialog says where, with the same command."""
    from tailings_mapper.qgis_glue import deps
    from tailings_mapper.ui import deps_dialog
    assert "OSGeo4W Shell" in deps.where_to_run("win32")
    assert deps.where_to_run("linux") == "a terminal" and "Terminal" in deps.where_to_run("darwin")
    dlg = deps_dialog.DependencyDialog([])
    text = dlg.manual.text()
    assert deps.where_to_run() in text and deps.manual_command() in text
    monkeypatch.setattr(deps, "where_to_run", lambda platform=None: "the OSGeo4W Shell of this QGIS")
    dlg.gpu.setEnabled(True)
    dlg.gpu.setChecked(True)
    assert "OSGeo4W Shell" in dlg.manual.text() and "--gpu</code>" in dlg.manual.text()
    dlg.close()
