"""The plugin zip: layout, contents, and that it runs once unzipped into a fresh profile."""
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import package_plugin  # noqa: E402


def test_zip_layout(tmp_path):
    z = package_plugin.build(str(tmp_path))
    meta = package_plugin.read_metadata()
    assert os.path.basename(z) == "tailings_mapper-%s.zip" % meta["version"]
    names = zipfile.ZipFile(z).namelist()
    assert all(n.startswith("tailings_mapper/") for n in names)
    for must in ("metadata.txt", "__init__.py", "plugin.py", "qgis_glue/deps.py", "qgis_glue/task.py",
                 "qgis_glue/results.py", "qgis_glue/layer_plan.py", "help/index.html", "docs/screenshot.png",
                 "icons/run.svg", "icons/panel.svg", "models/tailings.md",
                 "LICENSE", "icons/icon.png", "icons/icon.svg", "ui/dock.py",
                 "processing_provider/segment_algorithm.py", "inference/__init__.py", "inference/run/execute.py",
                 "processing_provider/fit_algorithm.py", "training/fit.py", "training/veto.py", "ui/fit_dialog.py"):
        assert "tailings_mapper/" + must in names, must
    for n in names:
        parts = n.split("/")
        assert not {"tests", ".venv", "bench", ".ci", "__pycache__", "scripts", "dist"} & set(parts), n
        assert not n.endswith((".pyc", "_rc.py", ".qrc", ".sh", ".exe", ".so", ".dll")), n
        assert not any(p.startswith(".") for p in parts), n
    for info in zipfile.ZipFile(z).infolist():
        assert not (info.external_attr >> 16) & 0o111, info.filename   # nothing executable
    shipped = sorted(f for f in os.listdir(os.path.join(ROOT, "models")) if f.endswith(".onnx")) \
        if os.path.isdir(os.path.join(ROOT, "models")) else []
    for f in shipped:
        assert "tailings_mapper/models/" + f in names


def _metadata(tmp_path, **change):
    import re
    text = open(os.path.join(ROOT, "metadata.txt"), encoding="utf-8").read()
    for key, value in change.items():
        text = re.sub(r"(?m)^%s=.*$" % key, "" if value is None else "%s=%s" % (key, value), text)
    (tmp_path / "metadata.txt").write_text(text, encoding="utf-8")
    (tmp_path / "icons").mkdir(exist_ok=True)
    (tmp_path / "icons" / "icon.png").write_bytes(b"")
    return str(tmp_path)


def test_metadata_the_repository_requires(tmp_path):
    """The build stops on metadata plugins.qgis.org refuses, or that QGIS 4 would hide."""
    meta = package_plugin.read_metadata(_metadata(tmp_path, qgisMaximumVersion="4.99"))
    assert meta["qgisMaximumVersion"] == "4.99"
    for change, said in (({"qgisMaximumVersion": "3.99"}, "QGIS 4 hides"), ({"qgisMaximumVersion": None}, "lacks"),
                         ({"tracker": None}, "lacks tracker"), ({"author": "a/b", "qgisMaximumVersion": "4.99"},
                                                                "slash"),
                         ({"qgisMinimumVersion": "4.2", "qgisMaximumVersion": "4.0"}, "above")):
        with pytest.raises(SystemExit, match=said):
            package_plugin.read_metadata(_metadata(tmp_path, **change))


def test_files_the_repository_rejects_stay_out(tmp_path):
    """Compiled resources, compiled Python, executables and hidden files are left out even when
    they are in the checkout (git-ignored or not)."""
    for rel in ("resources_rc.py", "resources.qrc", "ui/x_rc.py", "inference/lib.so", "inference/a.pyc",
                "run.sh", "tool.exe", ".secrets.baseline", ".bandit", "ui/.hidden.py", ".venv-scan/lib/x.py",
                "__MACOSX/x", "inference/__pycache__/m.cpython-311.pyc"):
        assert package_plugin._excluded(rel), rel
    for rel in ("plugin.py", "LICENSE", "models/tailings.onnx", "icons/icon.png", "ui/deps_dialog.py"):
        assert not package_plugin._excluded(rel), rel


def test_check_publish_finds_what_the_repository_blocks(tmp_path):
    """The zip checks of scripts/check_publish.py see each thing plugins.qgis.org refuses."""
    import check_publish
    z = str(tmp_path / "bad.zip")
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("tailings_mapper/__init__.py", "")
        zf.writestr("tailings_mapper/metadata.txt", "[general]\nname=x\n")
        zf.writestr("tailings_mapper/a.pyc", "")
        zf.writestr("tailings_mapper/__pycache__/b.py", "")
        zf.writestr("tailings_mapper/lib.so", "")
        zf.writestr("tailings_mapper/.env", "")
        info = zipfile.ZipInfo("tailings_mapper/run.py")
        info.external_attr = 0o100755 << 16
        zf.writestr(info, "")
    rules = {r for _, r, _ in check_publish.zip_findings(z)}
    assert {"MISSING", "PYC", "FOLDER", "FILE_SUSPICIOUS", "FILE_HIDDEN", "FILE_EXECUTABLE", "METADATA"} <= rules


def _qgis_process():
    return shutil.which("qgis_process.bin") or shutil.which("qgis_process")


@pytest.mark.skipif(_qgis_process() is None, reason="qgis_process not installed")
def test_zip_installs_into_fresh_profile_and_runs(tm, tmp_path):
    """Unzip into a new profile's plugins folder (what "Install from ZIP" does) and run it."""
    pytest.importorskip("onnx")
    from qgis_helpers import s2_raster, tiny_model
    z = package_plugin.build(str(tmp_path / "dist"), models=False)
    prof = tmp_path / "config"
    plugins = prof / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    zipfile.ZipFile(z).extractall(plugins)
    ini = prof / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\ntailings_mapper=true\n")
    model = tiny_model(str(tmp_path / "tiny.onnx"))
    raster = s2_raster(str(tmp_path / "scene.tif"))
    env = dict(os.environ)
    site = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(os.path.join(p, "onnxruntime"))]
    env.update({"QT_QPA_PLATFORM": "offscreen", "QGIS_CUSTOM_CONFIG_PATH": str(prof),
                "PYTHONPATH": os.pathsep.join(site)})
    env.pop("QGIS_OPTIONS_PATH", None)
    cmd = [_qgis_process(), "--json", "run", "tailings_mapper:segment", "--", "INPUT=%s" % raster,
           "MODEL_FILE=%s" % model, "OUTPUT_CLASSES=%s" % (tmp_path / "c.tif"),
           "OUTPUT_POLYGONS=%s" % (tmp_path / "p.gpkg")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(r.stdout[r.stdout.index("{"):])["results"]
    assert res["POLYGON_COUNT"] == 1
    # the code that ran is the unzipped copy, not the checkout
    assert os.path.isfile(plugins / "tailings_mapper" / "inference" / "run" / "execute.py")
