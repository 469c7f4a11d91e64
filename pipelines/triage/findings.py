"""Per-photo findings: the photo rules' violation events folded to one finding per violation type.

The rules judge each object (every parked car is its own violation), which is right for a camera
that follows each car over time. An inspector's photo is one report of one scene: three cars on
the pavement in one picture are one illegal-parking case with three boxes. So events of the same
type in one photo are merged here (boxes combined, best score, all texts and phone numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import supervision as sv

from detect.events import ViolationEvent
from detect.taxonomy import Taxonomy


@dataclass
class Finding:
    """One violation type seen in one photo."""

    event: ViolationEvent  # the merged event (boxes of all its objects, in decoded-image pixels)
    objects: int = 1
    zones: list[str] = field(default_factory=list)

    @property
    def type(self) -> str:
        return self.event.violation_type

    @property
    def score(self) -> float:
        return float(self.event.score)


def merge_events(events: list[ViolationEvent]) -> list[Finding]:
    """One finding per violation type, best-scoring first; the best event gives zone and id."""
    by_type: dict[str, list[ViolationEvent]] = {}
    for e in events:
        by_type.setdefault(e.violation_type, []).append(e)
    out = []
    for group in by_type.values():
        group.sort(key=lambda e: -e.score)
        best = group[0]
        dets = sv.Detections.merge([_plain(e.detections) for e in group]) if len(group) > 1 else best.detections
        merged = replace(
            best,
            detections=dets,
            texts=[t for e in group for t in e.texts],
            phones=sorted({p for e in group for p in e.phones}),
            object_count=sum(e.object_count for e in group),
        )
        out.append(Finding(merged, objects=len(group), zones=sorted({e.zone_id or "" for e in group})))
    return sorted(out, key=lambda f: -f.score)


def _plain(dets: sv.Detections) -> sv.Detections:
    """Detections reduced to the fields every event has, so different events merge."""
    keep = {k: v for k, v in dets.data.items() if k in ("class_name", "text", "phones")}
    out = sv.Detections(xyxy=dets.xyxy, confidence=dets.confidence, class_id=dets.class_id, data=keep)
    for name in ("text", "phones"):
        if name not in out.data:
            out.data[name] = np.array([""] * len(out), dtype=object)
    return out


def boxes_json(dets: sv.Detections, scale: float) -> list[dict[str, Any]]:
    """Boxes in full-resolution pixels (`scale` = full / decoded) for the JSONL and the report."""
    names = dets.data.get("class_name", np.array([""] * len(dets)))
    conf = dets.confidence if dets.confidence is not None else np.ones(len(dets))
    texts = dets.data.get("text")
    out = []
    for i in range(len(dets)):
        box = {"class_name": str(names[i]), "conf": round(float(conf[i]), 4),
               "xyxy": [round(float(v) * scale, 1) for v in dets.xyxy[i]]}
        if texts is not None and str(texts[i]):
            box["text"] = str(texts[i])
        out.append(box)
    return out


def finding_json(finding: Finding, taxonomy: Taxonomy, scale: float) -> dict[str, Any]:
    e = finding.event
    vt = taxonomy.get(e.violation_type)
    return {
        "type": e.violation_type,
        "name_zh": vt.name_zh,
        "name_en": vt.name_en,
        "score": round(finding.score, 4),
        "zone_id": e.zone_id,
        "zone_kind": e.zone_kind,
        "object_count": e.object_count,
        "boxes": boxes_json(e.detections, scale),
        "texts": e.texts,
        "phones": e.phones,
        "thresholds": e.thresholds,
    }
