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


def test_dialog_installs_with_log(tm, qgis_app, monkeypatch, tmp_path):
    from tailings_mapper.qgis_glue import deps
    from tailings_mapper.ui import deps_dialog
    from qgis_helpers import wait_for
    monkeypatch.setenv(deps.ENV_DIR, str(tmp_path / "deps"))
    monkeypatch.setattr(deps, "nvidia_driver_present", lambda: False)
    monkeypatch.setattr(deps, "pip_available", lambda python=None: None)
    calls = []

    def fake_install(packages, target, log, cancel):
        calls.append((list(packages), target))
        log("Successfully installed %s" % packages[0])
        return True
    monkeypatch.setattr(deps, "install", fake_install)
    missing = [deps.Missing(deps.REQUIREMENTS[-1], "No module named 'onnxruntime'")]
    dlg = deps_dialog.DependencyDialog(missing)
    assert not dlg.gpu.isEnabled() and dlg.cpu.isChecked()
    dlg.start()
    assert wait_for(lambda: dlg.worker is not None and dlg.worker.isFinished() and dlg.install_button.isEnabled()
                    or dlg.installed, 20)
    dlg.worker.wait()
    assert calls == [(["onnxruntime"], deps.deps_dir())]
    assert "Successfully installed onnxruntime" in dlg.log.toPlainText()
    assert dlg.installed  # onnxruntime is importable in the test environment
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
    """PyTorch (training from polygons in QGIS), when missing: its CPU build, from PyTorch's own
    index for torch itself, its requirements from PyPI."""
    from tailings_mapper.qgis_glue import deps
    from tailings_mapper.ui import deps_dialog
    from qgis_helpers import wait_for
    monkeypatch.setenv(deps.ENV_DIR, str(tmp_path / "deps"))
    monkeypatch.setattr(deps, "pip_available", lambda python=None: None)
    monkeypatch.setattr(deps, "optional_missing", lambda: [deps.TORCH])
    calls = []

    def fake_install(packages, target, log, cancel, max_rounds=5, index_url=None):
        calls.append((list(packages), index_url))
        return True
    monkeypatch.setattr(deps, "install", fake_install)
    dlg = deps_dialog.DependencyDialog([])
    assert not dlg.torch.isHidden() and dlg.csmask.isHidden() and "CPU build" in dlg.torch.text()
    dlg.torch.setChecked(True)
    dlg.start()
    assert wait_for(lambda: dlg.worker is not None and dlg.worker.isFinished(), 20)
    dlg.worker.wait()
    assert calls == [(["torch"], "https://download.pytorch.org/whl/cpu")]
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
