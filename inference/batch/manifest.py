"""What a batch has done: ``DIR/manifest.json``, one entry per job with its state (done, failed),
its result and the checksums it was done with -- of its raster (every file of a product folder),
its area, the model and the options.  ``--resume`` redoes a job whose checksums differ; a file is
hashed again only when its size or time changed (the hashes are kept, by path).  Written
atomically (a temporary file renamed), by the one process that runs the batch.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, Optional

MANIFEST = "manifest.json"


class Checksums:
    """sha256 of files and folders, remembered by (path, size, mtime)."""

    def __init__(self, cache: Optional[Dict[str, list]] = None):
        self.cache = dict(cache or {})

    def file(self, path: str) -> str:
        st = os.stat(path)
        hit = self.cache.get(path)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        digest = h.hexdigest()
        self.cache[path] = [st.st_size, st.st_mtime_ns, digest]
        return digest

    def of(self, path: Optional[str]) -> Optional[str]:
        """A file's checksum, a folder's (its files', in order, by relative name), or the text
        itself for what is not a local file (a /vsi path)."""
        if not path:
            return None
        if os.path.isdir(path):
            h = hashlib.sha256()
            for d, dirs, files in os.walk(path):
                dirs.sort()
                for f in sorted(files):
                    p = os.path.join(d, f)
                    h.update(os.path.relpath(p, path).encode("utf-8"))
                    h.update(self.file(p).encode("ascii"))
            return h.hexdigest()
        if os.path.isfile(path):
            return self.file(path)
        return "not a local file: %s" % path


def text_checksum(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class Manifest:
    def __init__(self, folder: str):
        self.path = os.path.join(folder, MANIFEST)
        self.jobs: Dict[str, dict] = {}
        self.hashes: Dict[str, list] = {}
        self.damaged: Optional[str] = None   # why the file on disk could not be read (it is started anew)
        if os.path.isfile(self.path):
            try:
                with open(self.path, encoding="utf-8") as fh:
                    d = json.load(fh)
                jobs, hashes = d.get("jobs", {}), d.get("file_hashes", {})
                if not (isinstance(jobs, dict) and all(isinstance(e, dict) for e in jobs.values())
                        and isinstance(hashes, dict)
                        and all(isinstance(h, list) and len(h) == 3 for h in hashes.values())):
                    raise ValueError("not the structure of a batch manifest")
            except (ValueError, AttributeError, UnicodeDecodeError, OSError) as e:
                self.damaged = "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                return
            self.jobs, self.hashes = jobs, hashes

    def damage_note(self) -> Optional[str]:
        """What a damaged manifest (cut mid-JSON by a full disk or a kill) means for the batch."""
        if not self.damaged:
            return None
        return ("the batch manifest %s is damaged (%s): it cannot say which jobs were done, so every job runs "
                "again (a job's outputs are replaced whole)" % (self.path, self.damaged))

    def done(self, key: str, inputs: str) -> bool:
        e = self.jobs.get(key)
        return bool(e) and e.get("state") == "done" and e.get("inputs") == inputs

    def record(self, key: str, entry: dict) -> None:
        self.jobs[key] = entry

    def save(self) -> None:
        tmp = self.path + ".part"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"jobs": self.jobs, "file_hashes": self.hashes}, fh, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
