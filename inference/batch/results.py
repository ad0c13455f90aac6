"""A batch's results together: ``timeseries.csv`` (facility, year, class, area, flagged and masked
fractions, the job's report), ``summary.json``, a chart of the area per facility and year, and the
change products of every facility between consecutive years (``inference.change``)."""
from __future__ import annotations

import csv
import json
import os
from typing import Dict, List, Optional, Sequence

from .jobs import safe


def _done(records: Sequence[dict]) -> List[dict]:
    return sorted((r for r in records if r.get("state") == "done"), key=lambda r: (r["facility"], r["year"]))


def timeseries(path: str, records: Sequence[dict]) -> str:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["facility", "year", "date", "class", "area_ha", "flagged_fraction", "masked_fraction", "ood_score",
                    "report"])
        for r in _done(records):
            for cls, ha in sorted(r["areas"].items()):
                w.writerow([r["facility"], r["year"], r.get("date") or "", cls, "%.4f" % ha,
                            "%.6f" % r["flagged_fraction"], "%.6f" % r["masked_fraction"],
                            "" if r.get("ood_score") is None else r["ood_score"], r.get("report") or ""])
    return path


def summary(path: str, records: Sequence[dict], model: str, seconds: float, workers: str,
            changes: Dict[str, List[str]]) -> Dict:
    done = _done(records)
    failed = [r for r in records if r.get("state") == "failed"]
    by_fac: Dict[str, Dict[str, Dict[str, float]]] = {}
    for r in done:
        by_fac.setdefault(r["facility"], {})[r["year"]] = r["areas"]
    d = {"model": model, "jobs": len(records), "done": len(done), "failed": len(failed), "seconds": round(seconds, 1),
         "workers": workers, "area_ha": by_fac,
         "failures": [{"facility": r["facility"], "year": r["year"], "raster": r["raster"], "error": r.get("error")}
                      for r in failed],
         "changes": changes}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(d, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    return d


def chart(path: str, records: Sequence[dict], cls: Optional[str] = None) -> Optional[str]:
    """Area of the (first non-background) class per facility and year; None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:   # not there: the CSV has the figures
        return None
    done = _done(records)
    if not done:
        return None
    names = sorted({c for r in done for c in r["areas"]})
    cls = cls or next((c for c in names if c.lower() not in ("background", "other", "none", "no data")), names[0])
    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    facs = sorted({r["facility"] for r in done})
    for f in facs[:40]:
        pts = sorted((int(r["year"]), r["areas"].get(cls, 0.0)) for r in done if r["facility"] == f)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f)
    ax.set_xlabel("year")
    ax.set_ylabel("%s, hectares" % cls)
    ax.set_title("%s area per facility" % cls)
    if len(facs) <= 15:
        ax.legend(fontsize=7)
    years = sorted({int(r["year"]) for r in done})
    ax.set_xticks(years)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def changes(out_root: str, records: Sequence[dict], progress=None) -> Dict[str, List[str]]:
    """The change products of every facility between consecutive years it has; per facility, their
    folders (``<facility>/change_<y0>_<y1>/``); a pair that cannot be compared is noted, not fatal."""
    from ..change import ChangeOptions, change
    from ..errors import TailingsError
    out: Dict[str, List[str]] = {}
    done = _done(records)
    facs = sorted({r["facility"] for r in done})
    for i, f in enumerate(facs):
        rs = [r for r in done if r["facility"] == f and r.get("class_raster")]
        for a, b in zip(rs, rs[1:]):
            folder = os.path.join(out_root, safe(f), "change_%s_%s" % (a["year"], b["year"]))
            try:
                change([a["class_raster"], b["class_raster"]], folder,
                       ChangeOptions(years=(a["year"], b["year"]), overwrite=True))
                out.setdefault(f, []).append(folder)
            except TailingsError as e:
                out.setdefault(f, []).append("not compared %s -> %s: %s" % (a["year"], b["year"], e))
        if progress:
            progress(i + 1, len(facs))
    return out
