"""Checks what the README promises of its main job (``bash scripts/demo.sh``): every file it names
exists in out/demo and is what its name says (GeoTIFFs and the GeoPackage open with GDAL, the
report is JSON of a run, the preview a PNG).  Run by CI after the demo; exit 1 names what is missing."""
import json
import os
import re
import sys

from osgeo import gdal, ogr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def promised(readme: str):
    """The file names in the README's sentence "`scripts/demo.sh` writes ... ." (paths as written)."""
    m = re.search(r"`scripts/demo\.sh` writes (.+?)\.\s", readme, re.S)
    if not m:
        raise SystemExit("README: no sentence saying what `scripts/demo.sh` writes")
    names = re.findall(r"`([^`]+)`", m.group(1))
    folder = os.path.dirname(names[0])
    return [n if "/" in n else os.path.join(folder, n) for n in names]


def check(path: str) -> str:
    """'' when ``path`` is what its name says, else what is wrong."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return "missing or empty"
    gdal.UseExceptions()
    try:
        if path.endswith(".tif"):
            ds = gdal.Open(path)
            ds.GetRasterBand(1).Checksum()   # (every block decodes)
        elif path.endswith(".gpkg"):
            ds = ogr.Open(path)
            if ds.GetLayerCount() < 1:
                return "no layer"
        elif path.endswith(".json"):
            rep = json.load(open(path, encoding="utf-8"))
            if "found" not in rep or "summary" not in rep:
                return "not a run report"
        elif path.endswith(".png"):
            if open(path, "rb").read(8) != b"\x89PNG\r\n\x1a\n":
                return "not a PNG"
    except Exception as e:   # noqa: BLE001 (any failure to read it is the finding)
        return "unreadable: %s" % e
    return ""


def main() -> int:
    files = promised(open(os.path.join(ROOT, "README.md"), encoding="utf-8").read())
    bad = [(f, check(os.path.join(ROOT, f))) for f in files]
    bad = [(f, why) for f, why in bad if why]
    for f, why in bad:
        print("README promises %s: %s" % (f, why))
    print("demo outputs: %d of %d as the README promises" % (len(files) - len(bad), len(files)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
