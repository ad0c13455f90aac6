"""Faults never cost the user a rerun or a file: killed runs (kill -9), signals (Ctrl-C, SIGTERM,
SIGHUP) at any moment, a commit that fails halfway, full disks and scratch space, options that
would write elsewhere, a broken onnxruntime.  Through the real command line where it is about what
the user sees: the exit status, one ``error:`` line, nothing left in --out or in TMPDIR."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from engine_helpers import REPO, all_files, blobs, make_raster, pixel_model, run_cli
from inference import OutputError, SegmentOptions, execute, plan
from inference.output import locks

RGB = ["B4", "B3", "B2"]


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def model(d):
    return pixel_model(str(d / "px.onnx"), [10, 0, 0], -2.0)


@pytest.fixture(scope="module")
def small(d):
    return make_raster(str(d / "small.tif"), blobs(60, 70, seed=3, n=4), descriptions=RGB)


@pytest.fixture(scope="module")
def slow(d):
    """A raster whose run (tiles of 32, one per batch) streams for a second or more."""
    return make_raster(str(d / "slow.tif"), blobs(1800, 1800, seed=4, n=30), descriptions=RGB)


SLOW = ["--device", "cpu", "--tile", "32", "--overlap", "8", "--batch", "1", "--quiet"]


def env_with(**extra):
    e = dict(os.environ, TAILINGS_MAPPER_MODELS=os.path.join(REPO, "tests", "_no_user_models_"))
    e["PYTHONPATH"] = REPO + os.pathsep + e.get("PYTHONPATH", "")
    e.update(extra)
    return e


def spawn(args, **extra):
    return subprocess.Popen([sys.executable, "-m", "inference"] + list(args), cwd=REPO, env=env_with(**extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def hidden(folder):
    return [f for f in all_files(str(folder)) if os.path.basename(f).startswith(".")]


def wait_for(cond, proc, limit=60.0):
    t = time.time()
    while not cond():
        assert proc.poll() is None, "the run ended before the moment wanted: %s" % proc.communicate()[1]
        assert time.time() - t < limit
        time.sleep(0.005)


def writing(out):
    """The run has its lock and its hidden files in ``out``: it is streaming."""
    def streaming():
        names = os.listdir(out) if os.path.exists(out) else []
        return any(f.endswith(".tm-lock") for f in names) and any(
            f.startswith(".tm-") and "lock-" not in f and "write-test" not in f for f in names)
    return streaming


def catches(proc, sig=signal.SIGTERM):
    """The process handles ``sig`` (Linux: /proc's SigCgt): the command line has started its imports."""
    def ready():
        try:
            with open("/proc/%d/status" % proc.pid) as fh:
                mask = next(int(line.split()[1], 16) for line in fh if line.startswith("SigCgt:"))
        except (OSError, StopIteration):
            return False
        return bool(mask >> (int(sig) - 1) & 1)
    return ready


def one_error(stderr):
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# --------------------------------------------------------------------------------------------------
# locks: a killed run never blocks a rerun; a live one is named
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overwrite", [False, True])
def test_a_run_killed_by_sigkill_does_not_block_the_rerun(d, model, small, slow, overwrite):
    out, tmp = d / ("killed%d" % overwrite), d / ("killed_tmp%d" % overwrite)
    tmp.mkdir()
    flags = ["--overwrite"] if overwrite else []
    if overwrite:   # a complete set there before: the killed --overwrite run must leave it as it was
        assert run_cli(["segment", small, "--model", model, "--out", str(out), "--prefix", "p", "--quiet"]).returncode == 0
        before = {f: (out / f).read_bytes() for f in all_files(str(out))}
    proc = spawn(["segment", slow, "--model", model, "--out", str(out), "--prefix", "p"] + SLOW + flags,
                 TMPDIR=str(tmp))
    wait_for(writing(out), proc)
    proc.kill()
    proc.wait()
    rec = json.loads((out / ".p.tm-lock").read_text())
    assert rec["pid"] == proc.pid and rec["host"] == socket.gethostname() and rec["tag"].startswith(".tm-")
    if overwrite:
        assert {f: (out / f).read_bytes() for f in all_files(str(out)) if not f.startswith(".")} == before
    assert [f for f in os.listdir(tmp) if f.startswith("tm-run-")]    # its scratch folder, left by kill -9
    res = run_cli(["segment", small, "--model", model, "--out", str(out), "--prefix", "p", "--device", "cpu"]
                  + flags, env={"TMPDIR": str(tmp)})
    assert res.returncode == 0, res.stderr
    notes = [ln for ln in res.stdout.splitlines() if "taken over" in ln]
    assert len(notes) == 1 and notes[0].startswith("note: ") and str(proc.pid) in notes[0]
    assert str(out / ".p.tm-lock") in notes[0]
    assert hidden(out) == []
    assert "p_classes.tif" in all_files(str(out))
    assert not [f for f in os.listdir(tmp) if f.startswith("tm-")]   # (removed by the rerun)


def test_a_live_lock_is_named_with_its_process(d, model, small):
    out = d / "live"
    out.mkdir()
    lock = out / ".small.tm-lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps(dict(locks.record(".tm-0000aaaa-"), pid=sleeper.pid)))
        res = run_cli(["segment", small, "--model", model, "--out", str(out)])
    finally:
        sleeper.kill()
        sleeper.wait()
    line = one_error(res.stderr)
    assert res.returncode == 2
    assert str(lock) in line and "process %d on %s" % (sleeper.pid, socket.gethostname()) in line
    assert all_files(str(out)) == [".small.tm-lock"]     # the other run's lock is left alone
    # the same lock, its process gone now: taken over
    res = run_cli(["segment", small, "--model", model, "--out", str(out)])
    assert res.returncode == 0 and "taken over" in res.stdout and hidden(out) == []


def test_a_lock_of_another_computer_says_delete_it_if_that_run_is_gone(d, model, small):
    out = d / "remote"
    out.mkdir()
    lock = out / ".small.tm-lock"
    lock.write_text(json.dumps(dict(locks.record(".tm-0000bbbb-"), host="cluster-node-17", pid=4242)))
    res = run_cli(["segment", small, "--model", model, "--out", str(out)])
    line = one_error(res.stderr)
    assert res.returncode == 2 and str(lock) in line and "cluster-node-17" in line and "delete the lock" in line
    assert lock.exists()


def test_a_reused_pid_does_not_keep_a_lock_alive():
    """A lock whose pid now belongs to a process started after it (here: this test's own parent,
    started long after a lock dated 1990) is stale."""
    rec = dict(locks.record(".tm-0000cccc-"), pid=os.getppid(), time=631152000.0)
    assert locks.is_stale(rec)
    assert not locks.is_stale(dict(rec, time=time.time()))                # the lock is the process's
    assert not locks.is_stale(dict(rec, host="elsewhere", pid=999999))    # another computer: unknown


# --------------------------------------------------------------------------------------------------
# signals: Ctrl-C, SIGTERM, SIGHUP at any moment
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig,when", [
    (signal.SIGINT, "imports"), (signal.SIGTERM, "imports"), (signal.SIGHUP, "imports"),
    (signal.SIGINT, 0.3), (signal.SIGTERM, 0.3),
    (signal.SIGINT, "streaming"), (signal.SIGTERM, "streaming"), (signal.SIGHUP, "streaming")])
def test_a_signal_stops_the_run_with_one_line_and_nothing_left(d, model, slow, sig, when):
    name = "%s_%s" % (signal.Signals(sig).name, when)
    out, tmp = d / ("sig_" + name), d / ("sigtmp_" + name)
    tmp.mkdir()
    t0 = time.time()
    proc = spawn(["segment", slow, "--model", model, "--out", str(out), "--preview", str(d / (name + ".png"))]
                 + SLOW, TMPDIR=str(tmp))
    if when == "imports":   # 0.05 s, or as soon as the process can handle the signal at all
        wait_for(catches(proc), proc)
        time.sleep(max(0.0, 0.05 - (time.time() - t0)))
    elif when == "streaming":
        wait_for(writing(out), proc)
    else:
        time.sleep(when)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    line = one_error(err)
    assert proc.returncode == 128 + sig, err
    assert {signal.SIGINT: "interrupted", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}[sig] in line
    assert all_files(str(out)) == [] and not os.path.exists(d / (name + ".png"))
    assert not [f for f in os.listdir(tmp) if f.startswith("tm-")]


def test_ctrl_c_during_a_batch_on_workers(d, model, slow):
    """The terminal's Ctrl-C reaches every process of the batch: its workers ignore it (the batch
    closes them), so one line, and no job's scratch left behind."""
    pytest.importorskip("distributed")
    jobs = d / "jobs.csv"
    jobs.write_text("facility,year,raster\n" + "".join("f%d,%d,%s\n" % (i, 2015 + i, slow) for i in range(3)))
    tmp = d / "batch_tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "inference", "batch", str(jobs), "--model", model, "--out",
                             str(d / "batch"), "--workers", "1", "--cloud-mask", "off"] + SLOW[:-1], cwd=REPO,
                            env=env_with(TMPDIR=str(tmp)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    first = proc.stdout.readline()   # the dashboard's line: the workers are up
    assert first.startswith("Dask dashboard"), proc.communicate()
    scratch = d / "batch" / ".staging" / "scratch"   # (the batch's: its jobs' tm-run-* go there)
    wait_for(lambda: scratch.is_dir() and any(f.startswith("tm-run-") for f in os.listdir(scratch)), proc)
    os.killpg(proc.pid, signal.SIGINT)   # (what a terminal does)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in one_error(err)
    assert not [f for f in os.listdir(tmp) if f.startswith("tm-")]
    assert not (d / "batch" / ".staging").exists()


# --------------------------------------------------------------------------------------------------
# the set of outputs is committed as a whole
# --------------------------------------------------------------------------------------------------

def test_an_overwrite_that_fails_halfway_restores_the_old_set(d, model, small, monkeypatch):
    out = str(d / "commit")
    execute(plan(small, model, SegmentOptions(device="cpu", prefix="c"), out))
    before = {f: open(os.path.join(out, f), "rb").read() for f in all_files(out)}
    assert "c_polygons.gpkg" in before and "c_classes.tif" in before
    real = os.replace
    brought_in = []

    def replace(src, dst):   # the polygons fail to come in, after the classes did
        if os.path.basename(src).startswith(".tm-") and locks.BACKUP not in src:
            if dst.endswith("_polygons.gpkg"):
                raise OSError(5, "Input/output error", dst)
            brought_in.append(dst)
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    p = plan(small, model, SegmentOptions(device="cpu", prefix="c", overwrite=True, threshold=0.9), out)
    with pytest.raises(OutputError, match="cannot move the outputs into place .*Input/output error"):
        execute(p)
    assert any(b.endswith("_classes.tif") for b in brought_in)   # the failure came after a new file was in
    assert {f: open(os.path.join(out, f), "rb").read() for f in all_files(out)} == before
    monkeypatch.undo()
    res = execute(p)   # and the same overwrite, without the fault, replaces the whole set
    assert open(res.class_raster, "rb").read() != before["c_classes.tif"] and hidden(out) == []


def test_a_commit_cut_short_by_kill_is_undone_by_the_next_run(d, model, small):
    """A run killed after moving the old set aside and bringing part of the new one in (its lock
    says ``committing``): the next run puts the old set back before anything else."""
    out = str(d / "cutshort")
    execute(plan(small, model, SegmentOptions(device="cpu", prefix="k", confidence=False), out))
    before = {f: open(os.path.join(out, f), "rb").read() for f in all_files(out)}
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tag = ".tm-0000dddd-"
    for f in before:          # the killed run moved the old set aside...
        os.replace(os.path.join(out, f), os.path.join(out, tag + locks.BACKUP + f))
    for f in ("k_classes.tif", "k_confidence.tif"):   # ...and brought two new files in (one new to the folder)
        with open(os.path.join(out, f), "wb") as fh:
            fh.write(b"new, from the killed run")
    with open(os.path.join(out, tag + "k_polygons.gpkg"), "wb") as fh:
        fh.write(b"not yet in")
    rec = dict(locks.record(tag), pid=dead.pid, phase="committing", fresh=["k_confidence.tif"])
    with open(os.path.join(out, ".k.tm-lock"), "w") as fh:
        json.dump(rec, fh)
    res = run_cli(["segment", small, "--model", model, "--out", out, "--prefix", "k", "--no-confidence"])
    assert res.returncode == 2 and "output exists" in one_error(res.stderr)   # the old set is back: not overwritten
    assert {f: open(os.path.join(out, f), "rb").read() for f in all_files(out)} == before


# --------------------------------------------------------------------------------------------------
# full disks, unusable scratch space
# --------------------------------------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    """A 96 kB tmpfs (root only; skipped where mounting is not allowed)."""
    where = tmp_path / "tiny"
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(where)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % r.stderr.decode(errors="replace").strip())
    yield where
    subprocess.run(["umount", "-l", str(where)])


def test_a_full_output_disk_is_one_clear_error(d, model, tiny_disk):
    big = make_raster(str(d / "noisy.tif"), np.random.default_rng(1).integers(0, 4000, (3, 700, 700)),
                      descriptions=RGB)
    out, tmp = tiny_disk / "out", d / "fulltmp"
    tmp.mkdir()
    res = run_cli(["segment", big, "--model", model, "--out", str(out), "--device", "cpu"], env={"TMPDIR": str(tmp)})
    line = one_error(res.stderr)
    assert res.returncode == 2 and "the disk holding %s is full: 0 MB free" % out in line
    assert all_files(str(out)) == [] and not [f for f in os.listdir(tmp) if f.startswith("tm-")]


def test_a_full_scratch_space_names_tmpdir(d, model, tiny_disk):
    big = make_raster(str(d / "noisy2.tif"), np.random.default_rng(2).integers(0, 4000, (3, 700, 700)),
                      descriptions=RGB)
    out = d / "fullscratch"
    res = run_cli(["segment", big, "--model", model, "--out", str(out), "--device", "cpu", "--no-confidence"],
                  env={"TMPDIR": str(tiny_disk)})
    line = one_error(res.stderr)
    assert res.returncode == 2 and "the disk holding %s (TMPDIR" % tiny_disk in line and "is full" in line
    assert all_files(str(out)) == [] and not [f for f in os.listdir(tiny_disk) if f.startswith("tm-")]


def test_an_unusable_tmpdir_is_named(d, model, small):
    afile = d / "a_file"
    afile.write_text("x")
    out = d / "badtmp"
    res = run_cli(["segment", small, "--model", model, "--out", str(out), "--device", "cpu"],
                  env={"TMPDIR": str(afile / "tmp")})
    line = one_error(res.stderr)
    assert res.returncode == 2 and "%s (TMPDIR)" % (afile / "tmp") in line
    assert not out.exists()


def test_a_file_size_limit_is_one_clear_error(d, model):
    """RLIMIT_FSIZE (ulimit -f): writes fail with EFBIG (SIGXFSZ ignored)."""
    big = make_raster(str(d / "noisy3.tif"), np.random.default_rng(3).integers(0, 4000, (3, 300, 300)),
                      descriptions=RGB)
    out = d / "fsize"
    import resource

    def limit():   # (Python ignores SIGXFSZ: the write fails with EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60000, 60000))
    res = subprocess.run([sys.executable, "-m", "inference", "segment", big, "--model", model, "--out", str(out),
                          "--device", "cpu"], cwd=REPO, env=env_with(), capture_output=True, text=True, timeout=120,
                         preexec_fn=limit)
    line = one_error(res.stderr)
    assert res.returncode == 2 and "over the size this process may write (ulimit -f: 0.1 MB)" in line
    assert str(out) in line
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# options that would write elsewhere or fail after the run; a broken onnxruntime
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["../x", "sub/x", ".."])
def test_a_prefix_holding_a_folder_is_refused(d, model, small, prefix):
    out = d / "pfx" / "out"
    res = run_cli(["segment", small, "--model", model, "--out", str(out), "--prefix", prefix])
    line = one_error(res.stderr)
    assert res.returncode == 2 and line.startswith("error: --prefix: ")
    assert all_files(str(d / "pfx")) == []


@pytest.mark.parametrize("preview,why", [("a_file/sub/p.png", "is a file, not a folder"), ("p.jpg", "must end in .png"),
                                         ("a_file/p.png", "is not a folder"), (".", "must end in .png")])
def test_a_bad_preview_path_is_refused_before_the_run(d, model, small, preview, why):
    (d / "a_file").write_text("x")
    out = d / ("prev_" + why.replace(" ", "_"))
    res = run_cli(["segment", small, "--model", model, "--out", str(out), "--preview", str(d / preview)])
    line = one_error(res.stderr)
    assert res.returncode == 2 and why in line and not out.exists()


def test_a_preview_in_a_folder_yet_to_be_made_is_written(d, model, small):
    """As the README's demo asks: the preview inside the output folder of a first run."""
    out = d / "prev_new" / "out"
    res = run_cli(["segment", small, "--model", model, "--out", str(out), "--preview", str(out / "p.png")])
    assert res.returncode == 0, res.stderr
    assert open(str(out / "p.png"), "rb").read(4) == b"\x89PNG"


def fake_onnxruntime(folder, body):
    pkg = folder / "onnxruntime"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(body)
    return str(folder) + os.pathsep + REPO


def test_a_broken_onnxruntime_is_not_reported_as_missing(d, model, small):
    path = fake_onnxruntime(d / "ort_broken", "raise ImportError('libonnxruntime.so.1.32.0: cannot open shared "
                            "object file: No such file or directory')\n")
    res = run_cli(["segment", small, "--model", model, "--out", str(d / "ortb")], env={"PYTHONPATH": path})
    line = one_error(res.stderr)
    assert res.returncode == 2 and "installed but cannot be loaded" in line and "not installed" not in line
    assert "libonnxruntime.so.1.32.0: cannot open shared object file" in line


def test_ctrl_c_while_onnxruntime_loads(d, model, small):
    path = fake_onnxruntime(d / "ort_slow", "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\n"
                            "time.sleep(5)\n")
    out = d / "orti"
    res = run_cli(["segment", small, "--model", model, "--out", str(out)], env={"PYTHONPATH": path})
    line = one_error(res.stderr)
    assert res.returncode == 130 and "interrupted" in line and "onnxruntime" not in line
    assert not out.exists()


def test_a_missing_onnxruntime_is_said_so(monkeypatch):
    from inference.errors import ModelError
    from inference.model.runtime import ort_module
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModelError, match="onnxruntime is not installed"):
        ort_module()
