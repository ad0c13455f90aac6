"""A run's outputs staged: their final names reserved (the lock), the files written under hidden
names beside them, renamed into place as a whole when complete or removed when the run fails."""
from __future__ import annotations

import contextlib
import os
import uuid
from typing import Dict, Optional

from . import locks
from ..errors import OutputError
from .output_names import OutputNames, make_output_folder, stems
from .writing import disk_error


SIDECARS = (".aux.xml", "-journal", "-wal", "-shm")


def remove(path: str) -> None:
    """A file and the sidecars GDAL or SQLite may have left beside it."""
    for p in (path,) + tuple(path + s for s in SIDECARS):
        try:
            os.remove(p)
        except OSError:
            pass


class StagedOutputs:
    """The outputs of a run: their final names reserved for the run, the files written under hidden
    temporary names beside them, renamed to the final names when all are complete (:meth:`commit`)
    or removed (:meth:`discard`), so that a cancelled or failed run leaves nothing that looks
    finished and two runs never write the same files.

    A run holds ``.<stem>.tm-lock`` (``locks``: its process, computer and hidden files) in the folder
    while it writes the outputs named ``<stem>``; a lock left by a killed run is taken over (a note
    says so: :attr:`notes`).  With ``unique``, names taken (by files, or by a live run's lock) are
    skipped for ``<stem>-2``, ``<stem>-3``...; without, a taken name is an error unless ``overwrite``."""

    def __init__(self, names: OutputNames):
        out_dir, overwrite, unique = names.folder, names.overwrite, names.unique
        make_output_folder(out_dir)
        self.overwrite = overwrite
        self.lock: Optional[str] = None
        self.notes = []
        tag = ".tm-%s-" % uuid.uuid4().hex[:8]
        self._rec = locks.record(tag)
        tried = []
        try:
            for candidate in stems(names.stem):
                final = names.renamed(candidate)
                lock = final.lock
                tried.append(lock)
                self._clear_stale(lock)
                if unique and final.taken():
                    continue
                try:
                    created = locks.create(lock, self._rec)
                except OSError as e:
                    raise OutputError("cannot write to output folder %s: %s" % (out_dir, e.strerror or e)) from None
                if not created:
                    if unique:
                        continue
                    raise locks.refusal(lock, candidate, locks.read(lock))
                self.lock = lock
                break
            if not overwrite:
                taken = [p for p in final.files.values() if os.path.exists(p)]
                if taken:   # (the handler below removes the lock just taken)
                    raise OutputError("output exists: %s (choose another folder or prefix, or allow overwriting)"
                                      % ", ".join(os.path.basename(p) for p in taken))
        except BaseException:   # (an interrupt too): a lock this run made is not kept, whenever it came
            for lock in tried:
                if locks.read(lock) == self._rec:
                    with contextlib.suppress(OSError):
                        os.remove(lock)
            raise
        self.tag = tag
        self.names = final
        self.final: Dict[str, str] = dict(final.files)
        self.tmp: Dict[str, str] = {k: os.path.join(out_dir, tag + os.path.basename(v)) for k, v in final.files.items()}

    def _clear_stale(self, lock: str) -> None:
        """Take over ``lock`` when the run that holds it is gone (its hidden files removed)."""
        for _ in range(3):
            rec = locks.read(lock) if os.path.exists(lock) else None
            if not locks.is_stale(rec):
                return
            if locks.take_over(lock, rec):
                self.notes.append("a run that was stopped (%s) had left its lock %s and its unfinished files: "
                                  "taken over and removed" % (locks.describe(rec), lock))
                return

    @property
    def layer_name(self) -> Optional[str]:
        """The polygon layer's name inside its GeoPackage: the file's name."""
        return self.names.layer

    def get(self, kind: str) -> Optional[str]:
        return self.tmp.get(kind)

    def commit(self) -> None:
        """Rename the complete set into place, as a whole: with ``overwrite``, the outputs there are
        moved aside first (hidden names) and put back when anything fails, removed once the new
        set is in place; the lock records how far the commit went (``locks.recover``)."""
        out_dir = os.path.dirname(self.lock)
        moved, placed = [], []
        try:
            if not self.overwrite:
                taken = [p for p in self.final.values() if os.path.exists(p)]
                if taken:   # written meanwhile by something that takes no lock
                    raise OutputError("output exists: %s (written by another program during the run)" % taken[0])
            fresh = [os.path.basename(p) for p in self.final.values() if not os.path.exists(p)]
            locks.update(self.lock, dict(self._rec, phase="committing", fresh=fresh))
            for final in self.final.values():
                for old in (final,) + tuple(final + s for s in SIDECARS):
                    if os.path.lexists(old):
                        backup = os.path.join(out_dir, self.tag + locks.BACKUP + os.path.basename(old))
                        os.replace(old, backup)
                        moved.append((old, backup))
            for kind, final in self.final.items():
                tmp = self.tmp[kind]
                os.replace(tmp, final)
                placed.append(final)
                if os.path.exists(tmp + ".aux.xml"):
                    os.replace(tmp + ".aux.xml", final + ".aux.xml")
            locks.update(self.lock, dict(self._rec, phase="committed"))
        except BaseException as e:
            try:
                for final in placed:
                    remove(final)
                for old, backup in reversed(moved):
                    os.replace(backup, old)
            except OSError as e2:   # the lock stays: the next run here puts the old set back (locks.recover)
                self.lock = None
                raise OutputError("could not put the previous outputs back in %s (%s): they are kept under hidden "
                                  "names, and the next run there puts them back" % (out_dir, e2.strerror or e2)) from None
            if isinstance(e, OSError):
                raise disk_error(e, [(out_dir, "")]) or OutputError(
                    "cannot move the outputs into place in %s: %s" % (out_dir, e.strerror or e)) from None
            raise
        else:
            for _, backup in moved:
                remove(backup)
        finally:
            self._unlock()

    def discard(self) -> None:
        for path in self.tmp.values():
            remove(path)
        self._unlock()

    def _unlock(self) -> None:
        if self.lock is None:
            return
        try:
            os.remove(self.lock)
        except OSError:
            pass
        self.lock = None
