"""Agreement between two detectors' outputs on the same images.

Used by the backend parity test, the INT8 export report and the benchmark's accuracy check: a
fast variant is only useful if it finds the same objects as the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import supervision as sv


@dataclass
class Agreement:
    """Class-aware greedy matching of test boxes to reference boxes at an IoU threshold."""

    matched: int = 0
    ref_total: int = 0
    test_total: int = 0
    ious: list[float] = field(default_factory=list)
    conf_diffs: list[float] = field(default_factory=list)

    @property
    def recall(self) -> float:
        """Share of reference boxes the test variant found (1.0 when the reference found none)."""
        return self.matched / self.ref_total if self.ref_total else 1.0

    @property
    def precision(self) -> float:
        return self.matched / self.test_total if self.test_total else 1.0

    @property
    def min_iou(self) -> float:
        return min(self.ious) if self.ious else 1.0

    @property
    def max_conf_diff(self) -> float:
        return max(self.conf_diffs) if self.conf_diffs else 0.0

    def add(self, other: Agreement) -> None:
        self.matched += other.matched
        self.ref_total += other.ref_total
        self.test_total += other.test_total
        self.ious += other.ious
        self.conf_diffs += other.conf_diffs

    def as_dict(self) -> dict:
        return {
            "ref_boxes": self.ref_total,
            "test_boxes": self.test_total,
            "matched": self.matched,
            "recall": round(self.recall, 4),
            "precision": round(self.precision, 4),
            "min_iou": round(self.min_iou, 4),
            "max_conf_diff": round(self.max_conf_diff, 4),
        }


def match(ref: sv.Detections, test: sv.Detections, iou_threshold: float = 0.5) -> Agreement:
    """Match boxes of the same class, highest IoU first; each box is used at most once."""
    result = Agreement(ref_total=len(ref), test_total=len(test))
    if not len(ref) or not len(test):
        return result
    ious = sv.box_iou_batch(ref.xyxy, test.xyxy)
    ious[ref.class_id[:, None] != test.class_id[None, :]] = 0.0
    pairs = np.argwhere(ious >= iou_threshold)
    order = np.argsort(-ious[pairs[:, 0], pairs[:, 1]], kind="stable")
    used_ref, used_test = set(), set()
    for r, t in pairs[order]:
        if r in used_ref or t in used_test:
            continue
        used_ref.add(r)
        used_test.add(t)
        result.matched += 1
        result.ious.append(float(ious[r, t]))
        result.conf_diffs.append(abs(float(ref.confidence[r]) - float(test.confidence[t])))
    return result


def match_all(refs: list[sv.Detections], tests: list[sv.Detections], iou_threshold: float = 0.5) -> Agreement:
    total = Agreement()
    for r, t in zip(refs, tests, strict=True):
        total.add(match(r, t, iou_threshold))
    return total
