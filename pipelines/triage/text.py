"""OCR for photo triage: small-ad text and phone numbers, through the shared `detect.ocr` code.

RapidOCR costs 0.5-1.5 s per photo on a CPU core, ten to thirty times the detector, so triage
does not read every photo by default. `auto` reads the tiles the verifier finds posting-like (when
the photo or a tile passes its flyposting head's OCR gate, its `max_tiles` best tiles, so the cost
is bounded), and the whole photo when the detector saw a class the taxonomy makes an OCR trigger
(`classes:`: a poster, sticker, small ad, banner or shop sign from a model trained for them);
`all` reads every photo whole; `off` never reads. Text
is read from a sharper decode than the detector's, since ad text is small: its long side is
`max_side` (the JPEG decode keeps up to twice that, 2000 px of a 12 MP photo, and text detection's
cost grows with the pixels: reading 2000 px inputs at 1600 took about half the CPU and read the same
phone numbers and small-ad words on the photos docs/triage.md names). Phone numbers follow the
numbering plan of `region` (CN by default).
"""

from __future__ import annotations

import threading
from enum import StrEnum

import numpy as np
import supervision as sv

from detect import fields
from detect.imageio import decode_image, shrink_to
from detect.ocr import TextEvidence, TextReader, merge_with_texts
from detect.phones import DEFAULT_REGION, check_region
from detect.taxonomy import Taxonomy, default_taxonomy
from detect.verifier import Verdicts

POSTING = "flyposting"
TILE_MARGIN = 0.15
"""OCR tiles grow by this fraction of their size per side, so a slip on a tile's edge is read whole."""


class OcrMode(StrEnum):
    OFF = "off"
    AUTO = "auto"
    ALL = "all"


WHOLE = np.array([[0.0, 0.0, 1.0, 1.0]])


class PhotoText:
    """Adds text-line detections (with phones and keywords) to a photo's detector output.

    `taxonomy` says which classes trigger OCR and which are signboards (default: the shipped one)."""

    def __init__(self, mode: OcrMode, max_side: int = 1600, region: str = DEFAULT_REGION, max_tiles: int = 2,
                 gate: float | None = None, taxonomy: Taxonomy | None = None) -> None:
        self.mode = OcrMode(mode)
        self.max_side = max_side
        self.region = check_region(region)
        self.max_tiles = max_tiles
        self.gate = gate  # the verifier's flyposting OCR gate (None: no verifier)
        self.taxonomy = taxonomy or default_taxonomy()
        self.triggers = list(self.taxonomy.ocr_trigger_classes)
        self._evidence: TextEvidence | None = None
        self._lock = threading.Lock()  # one RapidOCR instance; its pipeline is not documented as thread-safe

    def regions(self, detections: sv.Detections, verdicts: Verdicts | None = None) -> np.ndarray | None:
        """Normalised boxes to read (the whole photo, or posting-like tiles), or None: nothing to read."""
        if self.mode == OcrMode.OFF:
            return None
        if self.mode == OcrMode.ALL:
            return WHOLE
        if len(detections) and np.isin(fields.names(detections), self.triggers).any():
            return WHOLE
        if verdicts is None or self.gate is None or POSTING not in verdicts.tile_probs:
            return None
        probs = verdicts.tile_probs[POSTING]
        if probs.max() < self.gate:  # neither a tile nor the whole photo looks posting-like
            return None
        order = np.argsort(-probs[:-1])[: self.max_tiles]  # the most posting-like tiles, even when only the whole passed
        tiles = verdicts.tiles[order]
        # one region around them all: a posting larger than a tile spans the best tiles, and reading
        # them apart cuts its phone number at the tile edge ("188 79" | "18 0522")
        box = np.concatenate([tiles[:, :2].min(axis=0), tiles[:, 2:].max(axis=0)])
        grow = (box[2:] - box[:2]) * TILE_MARGIN
        return np.clip(np.concatenate([box[:2] - grow, box[2:] + grow])[None, :], 0.0, 1.0)

    def wanted(self, detections: sv.Detections, verdicts: Verdicts | None = None) -> bool:
        return self.regions(detections, verdicts) is not None

    def add(self, data: bytes, image: np.ndarray, detections: sv.Detections, source: str,
            regions: np.ndarray | None = None) -> sv.Detections:
        """Detector boxes plus text lines (of `regions`, normalised; default the whole photo), all in
        the pixels of `image` (the detector's decode)."""
        sharp = shrink_to(decode_image(data, source, max_side=self.max_side).image, self.max_side)
        k = sharp.shape[1] / image.shape[1]
        boards = sv.Detections(xyxy=detections.xyxy * k, data={fields.CLASS_NAME: fields.names(detections)}) \
            if len(detections) else None
        h, w = sharp.shape[:2]
        whole = regions is None or (len(regions) == 1 and np.allclose(regions[0], WHOLE[0]))
        boxes = None if whole else np.round(np.asarray(regions) * [w, h, w, h]).astype(int)
        with self._lock:
            if self._evidence is None:
                self._evidence = TextEvidence(TextReader(), region=self.region, taxonomy=self.taxonomy)
            texts = self._evidence.detect(sharp, signboards=boards, boxes=boxes)
        if len(texts):
            texts.xyxy = texts.xyxy / k
        return merge_with_texts(detections, texts)
