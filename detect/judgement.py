"""One image's detector output and verifier verdicts -> the detections the rules read.

Photos and cameras share this step (DESIGN §4): the verifier's object verdicts ride on the
detector's boxes (`fields.VERIFIED`, `fields.VERIFIED_PASS`), and its tile or zone verdicts become
`verified:<type>` boxes, refined by the detector boxes and text lines that support them. Photos
without a scene are judged over the whole image's tiles; a camera (or a photo of a fixed spot with
a scene) judges each zone's own crop, and only zones whose kind judges a `tiles` type pay for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import supervision as sv

from detect import fields
from detect.scenes import Scene
from detect.taxonomy import Taxonomy, ZoneKind
from detect.verifier import Verdicts, Verifier, evidence
from detect.verifier.pooling import FeatureMap
from detect.verifier.verifier import _rows_to_detections

log = logging.getLogger(__name__)


@dataclass
class Judgement:
    """The verifier (None: detector classes alone, as before) and the taxonomy it serves."""

    verifier: Verifier | None
    taxonomy: Taxonomy
    group_gap: float = 0.5
    chosen: bool = False  # named by the user or the settings (not the promoted default): it must fit the detector

    @property
    def active(self) -> bool:
        return self.verifier is not None

    @property
    def verified_types(self) -> frozenset[str]:
        """Types the verifier judges (the rules fall back to detector classes for the others)."""
        return frozenset(self.verifier.types) if self.verifier is not None else frozenset()

    @property
    def ocr_gate(self) -> float | None:
        """Flyposting tiles at or above this probability are worth reading (None: no such head)."""
        if self.verifier is None:
            return None
        head = self.verifier.heads.heads.get("flyposting")
        return head.spec.ocr_gate if head is not None else None

    @property
    def needs_features(self) -> bool:
        return self.verifier is not None and self.verifier.needs_detector_features

    def check(self, detector) -> None:
        """Refuse a detector the verifier cannot read features from (another model's neck, another input
        size, no neck output); warn of an INT8 export, whose neck changes verdicts (`Verifier.int8_caveat`).

        A verifier somebody chose (`--verifier ID`, the settings) must fit. The promoted one, used by
        default, steps aside with a warning when the detector is another model or runs at another input
        size (a newly promoted detector or a city's `--imgsz` must not stop every command): the
        judgement falls back to detector classes until a verifier trained for that detector is promoted.
        """
        if self.verifier is None:
            return
        reason = self.verifier.misfit(detector.model_id, detector.imgsz)
        if not self.chosen and reason:
            log.warning("the promoted verifier steps aside: %s. Judging by detector classes alone until a verifier trained for "
                        "this detector is promoted", reason)
            self.verifier = None
            return
        self.verifier.check_detector(detector.model_id, detector.has_features, detector.imgsz)
        caveat = self.verifier.int8_caveat(detector.model_id)
        if caveat:
            log.warning(caveat)

    def tile_types(self) -> list[str]:
        """Types the verifier judges by tiles (its heads that the taxonomy says `verify: tiles`)."""
        if self.verifier is None:
            return []
        return [t for t in self.verifier.types if t in self.taxonomy.types and self.taxonomy.types[t].verify == "tiles"]

    def objects(self, image: np.ndarray, detections: sv.Detections, fmap: FeatureMap | None) -> tuple[sv.Detections, Verdicts | None]:
        """The detections with the verifier's object verdicts, and all verdicts of the image."""
        if self.verifier is None:
            return detections, None
        verdicts = self.verifier.judge(image, detections, fmap)
        return with_object_verdicts(detections, verdicts), verdicts

    def photo(self, verdicts: Verdicts | None, detections: sv.Detections, width: int, height: int) -> sv.Detections:
        """`detections` plus the verified regions of a photo judged without scene zones."""
        if verdicts is None:
            return detections
        regions = evidence(verdicts, detections, width, height, self._support(), self._counted(),
                           types=self.tile_types(), group_gap=self.group_gap)
        return fields.merge([detections, regions])

    def zones(self, fmap: FeatureMap | None, image: np.ndarray, scene: Scene, detections: sv.Detections, ts: datetime) -> sv.Detections:
        """`detections` plus a `verified:<type>` box for each zone whose crop shows its type.

        Only zones whose kind judges a `tiles` type are verified; the box is the zone's extent,
        refined to the supporting detections inside it, and it belongs to that zone alone."""
        if self.verifier is None:
            return detections
        wanted = self.zone_types(scene)
        if not wanted:
            return detections
        fmap = self.verifier.feature_map(image, fmap)
        h, w = image.shape[:2]
        rows = []
        names = fields.names(detections) if len(detections) else np.array([])
        centres = detections.get_anchors_coordinates(sv.Position.CENTER) / [w, h] if len(detections) else np.zeros((0, 2))
        support = self._support()
        for zone in scene.zones:
            types = wanted.get(zone.id)
            if not types:
                continue
            probs = self.verifier.zone_probs(fmap, np.asarray(zone.polygon, dtype=float), types, detections, (w, h))
            for type_id, p in probs.items():
                if p < self.verifier.heads.heads[type_id].spec.threshold:
                    continue
                poly = np.asarray(zone.polygon, dtype=float)
                box = np.array([poly[:, 0].min(), poly[:, 1].min(), poly[:, 0].max(), poly[:, 1].max()])
                inside = zone.contains(centres) & np.isin(names, support.get(type_id, [])) if len(detections) else np.zeros(0, bool)
                if inside.any():
                    sel = detections.xyxy[inside]
                    pix = np.array([sel[:, 0].min(), sel[:, 1].min(), sel[:, 2].max(), sel[:, 3].max()])
                else:
                    pix = box * [w, h, w, h]
                rows.append(_rows_to_detections([(pix, p, type_id, 1)], zone.id))
        return fields.merge([detections, *rows])

    def zone_types(self, scene: Scene) -> dict[str, list[str]]:
        """Zone id -> the `tiles` types verified on its crop (zones of other kinds cost nothing)."""
        if self.verifier is None:
            return {}
        wanted = {z.id: self._zone_types(z) for z in scene.zones}
        return {k: v for k, v in wanted.items() if v}

    def _zone_types(self, zone) -> list[str]:
        if zone.kind == ZoneKind.IGNORE:
            return []
        kind = ZoneKind.NO_VENDING if zone.kind == ZoneKind.VENDING_PERMITTED else zone.kind
        out = []
        for t in self.tile_types():
            vtype = self.taxonomy.types[t]
            if kind in vtype.zone_kinds and (zone.types is None or t in zone.types):
                out.append(t)
        return out

    def _support(self) -> dict[str, list[str]]:
        return {t: self.taxonomy.types[t].support_classes for t in self.tile_types()}

    def _counted(self) -> dict[str, list[str]]:
        return {t: self.taxonomy.types[t].counted_classes for t in self.tile_types()}


def with_object_verdicts(detections: sv.Detections, verdicts: Verdicts) -> sv.Detections:
    """Detections carrying each box's best object-head probability and whether it passed."""
    if not len(detections) or not verdicts.object_probs:
        return detections
    out = detections[:]
    prob = fields.column(fields.VERIFIED, len(out))
    passed = fields.column(fields.VERIFIED_PASS, len(out))
    for type_id, p in verdicts.object_probs.items():
        judged = ~np.isnan(p)
        prob[judged] = np.fmax(prob[judged], p[judged])
        passed[judged] = p[judged] >= verdicts.thresholds[type_id]
    out.data[fields.VERIFIED] = prob
    out.data[fields.VERIFIED_PASS] = passed
    return out


def load_judgement(verifier: str | None, taxonomy: Taxonomy, group_gap: float = 0.5) -> Judgement:
    """The judgement with a verifier id/card (None: the promoted one; 'none': detector classes alone)."""
    from detect.verifier import load_verifier

    return Judgement(load_verifier(verifier, set(taxonomy.types)), taxonomy, group_gap, chosen=verifier is not None)
