"""The lock a run holds on the output names it writes: ``.<stem>.tm-lock`` beside them.

The lock is a small JSON file: the process (``pid``), its computer (``host``), when the run
started, the prefix of the hidden files the run writes beside its outputs (``tag``) and how far
its commit went (``phase``: ``writing``, ``committing`` with the outputs that are new to the
folder, ``committed``).  A lock whose process is gone (the same computer, no such process, or a
process started after the lock) is *stale*: the run was killed (``kill -9``, a power cut) and
the next run takes the names over, removing the hidden files of the killed run and finishing or
undoing its commit (:func:`recover`), so that a killed run never blocks a rerun.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
import zlib
from typing import Optional

from ..errors import OutputError

HOST = socket.gethostname()
HOST_ID = "%08x" % zlib.crc32(HOST.encode("utf-8", "replace"))
BACKUP = "old-"   # hidden name of an output moved aside during a commit: <tag>old-<name>


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this computer (unsure: True)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    if sys.platform == "win32":   # (os.kill would terminate it there)
        import ctypes
        k32 = ctypes.windll.kernel32
        h = k32.OpenProcess(0x1000, False, pid)   # PROCESS_QUERY_LIMITED_INFORMATION
        if not h:
            return k32.GetLastError() == 5        # access denied: it exists
        code = ctypes.c_ulong()
        ok = k32.GetExitCodeProcess(h, ctypes.byref(code))
        k32.CloseHandle(h)
        return not ok or code.value == 259        # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # (EPERM: another user's process)
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Linux: process ``pid`` has ended and waits for its parent to read its status."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _started_after(pid: int, when) -> bool:
    """Linux: whether process ``pid`` started after ``when`` (seconds since the epoch), i.e. the
    pid was given to another process since the lock was written."""
    if not isinstance(when, (int, float)):
        return False
    try:
        with open("/proc/%d/stat" % pid) as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK") > when + 2.0
    except (OSError, ValueError, IndexError, StopIteration):
        return False


def read(path: str) -> Optional[dict]:
    """A lock's record; None when it holds none (an older version's empty lock, or damaged)."""
    try:
        with open(path, encoding="utf-8") as fh:
            rec = json.load(fh)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("pid"), int) else None


def is_stale(rec: Optional[dict]) -> bool:
    """The lock's run is gone for sure (a lock of another computer, or without a record, is not)."""
    if rec is None or rec.get("host") != HOST:
        return False
    pid = rec["pid"]
    return not pid_alive(pid) or _started_after(pid, rec.get("time"))


def describe(rec: Optional[dict]) -> str:
    if rec is None:
        return "an unknown process"
    return "process %s on %s, started %s" % (rec["pid"], rec.get("host", "?"), rec.get("started", "?"))


def refusal(path: str, stem: str, rec: Optional[dict]) -> OutputError:
    """The error a live (or unknown) lock gives, naming its file."""
    folder = os.path.dirname(path)
    if rec is not None and rec.get("host") != HOST:
        return OutputError("another run (%s) may be writing %s in %s: its lock %s comes from another computer, "
                           "so whether it still runs cannot be checked here; if that run is no longer going, "
                           "delete the lock file" % (describe(rec), stem, folder, path))
    if rec is None:
        return OutputError("another run is writing %s in %s right now, or a run of an older version was stopped "
                           "and left its lock %s (which does not name its process); if no run is going, delete "
                           "the lock file" % (stem, folder, path))
    return OutputError("another run is writing %s in %s right now (%s; its lock: %s)"
                       % (stem, folder, describe(rec), path))


def record(tag: str) -> dict:
    now = time.time()
    return {"pid": os.getpid(), "host": HOST, "time": now, "tag": tag, "phase": "writing",
            "started": _dt.datetime.fromtimestamp(now).replace(microsecond=0).isoformat()}


def create(path: str, rec: dict) -> bool:
    """Create the lock ``path`` holding ``rec`` when no lock is there (atomically: the record is
    written under a hidden name first, then linked to the lock's name); False when one is."""
    tmp = _beside(path, rec)
    try:   # (from the hidden file's creation on: an interrupt anywhere here leaves nothing)
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(rec, fh)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:   # a file system without hard links: create exclusively, then write
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(rec, fh)
            return True
    finally:
        try:
            os.remove(tmp)
        except OSError:
            pass


def update(path: str, rec: dict) -> None:
    """Rewrite the held lock (the commit's journal); atomic."""
    tmp = _beside(path, rec)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(rec, fh)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _beside(path: str, rec: dict) -> str:
    """A hidden name for the lock's next content, among the run's files (removed with them)."""
    return os.path.join(os.path.dirname(path), "%slock-%s" % (rec["tag"], uuid.uuid4().hex[:8]))


def take_over(path: str, rec: dict) -> bool:
    """Remove the stale lock ``path`` (whose record is ``rec``) after cleaning up after its run;
    False when the lock changed meanwhile (another run took it over first)."""
    aside = "%s.%s" % (path, uuid.uuid4().hex[:8])
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True
    if read(aside) != rec:   # not the lock judged stale: put it back
        try:
            os.link(aside, path)
        except OSError:
            pass
        os.remove(aside)
        return False
    recover(os.path.dirname(path), rec)
    os.remove(aside)
    return True


def recover(folder: str, rec: dict) -> None:
    """After a killed run: finish its commit when every new output was in place (``committed``),
    else put back the outputs it had moved aside and remove the ones it had brought in; then
    remove its hidden files."""
    tag = rec.get("tag")
    if not isinstance(tag, str) or not tag.startswith(".tm-"):
        return
    names = [n for n in os.listdir(folder) if n.startswith(tag)]
    if rec.get("phase") == "committing":
        for name in rec.get("fresh", []):   # outputs the killed run had added: not part of the old set
            if os.path.basename(name) == name:
                _remove(os.path.join(folder, name))
        for n in names:
            if n.startswith(tag + BACKUP):
                os.replace(os.path.join(folder, n), os.path.join(folder, n[len(tag + BACKUP):]))
    for n in os.listdir(folder):
        if n.startswith(tag):
            _remove(os.path.join(folder, n))


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def scratch_prefix() -> str:
    """The name a run's scratch folder starts with: ``tm-run-<computer>-<pid>-`` (:func:`sweep_scratch`)."""
    return "tm-run-%s-%d-" % (HOST_ID, os.getpid())


def sweep_scratch(base: str) -> None:
    """Remove the scratch folders in ``base`` of this computer's runs whose process is gone (killed:
    ``kill -9``, a batch worker stopped with its cluster)."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for n in names:
        m = re.match(r"tm-run-([0-9a-f]{8})-(\d+)-", n)
        if m and m.group(1) == HOST_ID and not pid_alive(int(m.group(2))):
            shutil.rmtree(os.path.join(base, n), ignore_errors=True)


def scratch_folder(base: Optional[str] = None) -> str:
    """A new scratch folder for a run (``tm-run-*``, ``scratch_prefix``) in ``base``, else in
    TMPDIR when it is set, else in the system's temporary folder; an :class:`OutputError` naming
    it when it cannot be made there.  The scratch folders of killed runs are removed first."""
    base = base or os.environ.get("TMPDIR") or None
    sweep_scratch(base or tempfile.gettempdir())   # (what killed runs left there)
    try:
        return tempfile.mkdtemp(prefix=scratch_prefix(), dir=base)
    except OSError as e:
        where = ("%s (TMPDIR)" % base if base == os.environ.get("TMPDIR") else base) if base else tempfile.gettempdir()
        raise OutputError("cannot make the run's scratch folder in %s: %s; set TMPDIR to a writable folder with "
                          "free space" % (where, e.strerror or e)) from None
