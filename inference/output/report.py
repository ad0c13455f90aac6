"""The run report: ``<stem>_report.json`` beside a run's outputs, what the run read, applied,
masked, found and warned of, for a person to read and a batch to collect.

    {"input": {"path", "opened", "sensor", "level", "baseline", "date", "bands"},
     "model": {"name", "path", "version"},
     "radiometry": [{"model_band", "raster_band", "scale", "offset", "why"}],
     "masked_fraction", "masked_ha", "flagged_fraction", "ood_score", "ood", "reliability",
     "for_review": {"checked", "regions", "regions_total", "area_ha", "flagged_ha"},
     "found": {class name: {"regions", "area_ha"}}, "outputs": {kind: path},
     "warnings": [...], "notes": [...], "device", "provider_reason", "seconds", "run_time",
     "summary": the run's one line (``inference.output.present.headline``)}

Fractions are of the pixels with data (masked) and of the segmented pixels (flagged); ``ood``
is true when the scene as a whole is unlike the model's training data (``inference.run.ood``), and
``ood_score`` is null when the model carries no statistics to compare with or the check was off.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Mapping, Optional

from .present import headline

REPORT_VERSION = 1


def build(p, res, outputs: Mapping[str, str], run_time: str) -> Dict[str, object]:
    """The report of a run of plan ``p`` with result ``res`` (a ``SegmentResult``)."""
    product = p.raster.product
    info = p.info
    rel = dict(res.reliability or {})
    opened = p.raster.path if not p.raster.path.lstrip().startswith("<") else None   # a VRT in memory: no file
    return {
        "report_version": REPORT_VERSION,
        "input": {"path": os.path.abspath(p.input), "opened": opened,
                  "sensor": (product.sensor or None) if product else None,
                  "level": (product.level or None) if product else None,
                  "baseline": product.baseline if product else None,
                  "date": p.date,
                  "bands": p.mapping.as_text(info.bands)},
        "model": {"name": info.name, "path": p.model.path, "version": info.version},
        "radiometry": [s.to_dict(b) for s, b in zip(p.scalings, info.bands)],
        "masked_fraction": round(res.masked_fraction, 5),
        "masked_ha": {k: round(v, 2) for k, v in res.masked_ha.items()},
        "flagged_fraction": round(res.flagged_fraction, 5),
        "ood_score": rel.get("ood_score"),
        "ood": bool(rel.get("ood", False)),
        "reliability": rel,
        "for_review": _marks(res),
        "found": {str(s["name"]): {"regions": s["count"], "area_ha": round(float(s["area_ha"]), 2)}
                  for _, s in sorted(res.stats.items())},
        "outputs": {k: v for k, v in outputs.items() if k != "report"},
        "warnings": list(res.warnings),
        "notes": list(res.notes),
        "device": res.device,
        "provider_reason": res.provider_reason,
        "seconds": round(res.seconds, 2),
        "run_time": run_time,
        "summary": headline(res),
    }


def relocated(report: Dict[str, object], outputs: Mapping[str, str]) -> Dict[str, object]:
    """The report of outputs that were moved (Processing's destinations): ``outputs`` by kind."""
    return dict(report, outputs=dict(outputs))


def write(path: Optional[str], report: Dict[str, object]) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1, ensure_ascii=False)
            fh.write("\n")


def read(path: str) -> Dict[str, object]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _marks(res) -> Dict[str, object]:
    """The regions marked for review (``likeness``): ``checked`` false when the run could not."""
    m = getattr(res, "marks", None) or {}
    return dict(checked=bool(m), **m)
