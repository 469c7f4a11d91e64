"""OCR for photo triage: small-ad text and phone numbers, through the shared `detect.ocr` code.

RapidOCR costs 0.5-1.5 s per photo on a CPU core, ten to thirty times the detector, so triage
does not read every photo by default. `auto` reads a photo when the detector saw something that
carries text (a poster, sticker, small ad, banner or shop sign: models trained for flyposting
have such classes; COCO has none); `all` reads every photo, which finds small ads even with a
COCO-only model at about one photo per second per core; `off` never reads. Text is read from a
sharper decode than the detector's (long side up to `max_side`), since ad text is small.
"""

from __future__ import annotations

import threading
from enum import StrEnum

import numpy as np
import supervision as sv

from detect.imageio import decode_image
from detect.ocr import SIGNBOARD_CLASSES, TextEvidence, TextReader, merge_with_texts
from detect.scenes import TEXT_CLASSES

TRIGGER_CLASSES = frozenset(TEXT_CLASSES | SIGNBOARD_CLASSES)


class OcrMode(StrEnum):
    OFF = "off"
    AUTO = "auto"
    ALL = "all"


class PhotoText:
    """Adds text-line detections (with phones and keywords) to a photo's detector output."""

    def __init__(self, mode: OcrMode, max_side: int = 1600) -> None:
        self.mode = OcrMode(mode)
        self.max_side = max_side
        self._evidence: TextEvidence | None = None
        self._lock = threading.Lock()  # one RapidOCR instance; its pipeline is not documented as thread-safe

    def wanted(self, detections: sv.Detections) -> bool:
        if self.mode == OcrMode.ALL:
            return True
        if self.mode == OcrMode.OFF or not len(detections):
            return False
        names = detections.data.get("class_name", np.array([]))
        return bool(np.isin(names, list(TRIGGER_CLASSES)).any())

    def add(self, data: bytes, image: np.ndarray, detections: sv.Detections, source: str) -> sv.Detections:
        """Detector boxes plus text lines, all in the pixels of `image` (the detector's decode)."""
        sharp = decode_image(data, source, max_side=self.max_side).image
        k = sharp.shape[1] / image.shape[1]
        boards = sv.Detections(xyxy=detections.xyxy * k, data={"class_name": detections.data.get("class_name", np.array([]))}) \
            if len(detections) else None
        with self._lock:
            if self._evidence is None:
                self._evidence = TextEvidence(TextReader())
            texts = self._evidence.detect(sharp, signboards=boards)
        if len(texts):
            texts.xyxy = texts.xyxy / k
        return merge_with_texts(detections, texts)
