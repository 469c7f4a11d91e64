"""Text as evidence of flyposting: RapidOCR regions labelled as small-ad or new text.

RapidOCR (PP-OCRv4 ONNX models shipped inside the `rapidocr_onnxruntime` wheel, so it runs
offline) finds and reads text lines. Each line becomes a detection with `fields.TEXT`,
`fields.PHONES` (`;`-joined normalised numbers) and `fields.KEYWORDS`, then is labelled:

- `small_ad_text`: it carries a phone number or a small-ad keyword;
- `new_text` (cameras): any other text that is not in the scene's reference snapshot;
- `text`: other text in photos (not evidence by itself).

On cameras, text already present in the reference snapshot (the shop's own sign) is dropped;
in photos, text inside a detected signboard (the taxonomy's `signboard` classes: `signboard`,
`cantilever` ... from a facade model) is dropped. The rules then treat these classes like any
detector class (taxonomy `flyposting`).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import supervision as sv

from detect import fields
from detect.phones import DEFAULT_REGION, SmallAdLexicon, find_phones, load_lexicon
from detect.taxonomy import Taxonomy, default_taxonomy

TEXT_FIELDS = (fields.TEXT, fields.PHONES, fields.KEYWORDS)
TEXT_LINE = "text"
"""Class of a text line (photos: not evidence by itself)."""
SMALL_AD_TEXT = "small_ad_text"
"""Class of a text line with a phone number or a small-ad keyword."""
NEW_TEXT = "new_text"
"""Class of any other text line on a camera that its reference snapshot does not show."""
PLAIN_TEXT = (TEXT_LINE, NEW_TEXT)
"""Classes of the text lines that carry no phone number or small-ad keyword (`label_texts`): text read, not the box of
a small ad (`data from-cases` keeps them out of a flyposting case's `small_ad` box)."""


RAPIDOCR_SETTINGS: dict[str, object] = {"use_cls": False, "intra_op_num_threads": 1, "inter_op_num_threads": 1}
"""What `TextReader` changes from RapidOCR's defaults (its config.yaml), measured on real photos with
pasted small ads (docs/rules.md §7): no angle classifier (a line turned 180° is rare on a wall and the
classifier turned some upright lines over, while it cost 2 % of OCR CPU); one ONNX Runtime thread per
session, since triage's workers and a camera's streams already fill the cores (ONNX Runtime's own
pool, one thread per core, then competes with them and spins)."""


class TextReader:
    """RapidOCR behind one call: image (BGR) -> text-line detections (class `TEXT_LINE`).

    `rapidocr_kwargs` override `RAPIDOCR_SETTINGS` (RapidOCR's own names: `use_cls`, `det_limit_side_len` ...)."""

    def __init__(self, min_score: float = 0.5, **rapidocr_kwargs) -> None:
        from rapidocr_onnxruntime import RapidOCR  # onnxruntime sessions: load only when used

        self.min_score = min_score
        self._ocr = RapidOCR(**{**RAPIDOCR_SETTINGS, **rapidocr_kwargs})

    def read(self, image: np.ndarray, lexicon: SmallAdLexicon | None = None, region: str = DEFAULT_REGION) -> sv.Detections:
        """Text lines with score >= min_score, phones (of `region`'s numbering plan) and keywords filled in."""
        result, _ = self._ocr(image)
        lines = [(np.asarray(quad, dtype=float), str(text), float(score)) for quad, text, score in (result or []) if float(score) >= self.min_score]
        if not lines:
            return text_detections(np.zeros((0, 4)), [], [], lexicon, region)
        xyxy = np.array([[q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()] for q, _, _ in lines])
        return text_detections(xyxy, [t for _, t, _ in lines], [s for _, _, s in lines], lexicon, region)

    def read_regions(self, image: np.ndarray, boxes: np.ndarray, lexicon: SmallAdLexicon | None = None,
                     region: str = DEFAULT_REGION) -> sv.Detections:
        """Text lines inside pixel `boxes` of `image` only (bounded cost), in the image's pixels."""
        parts = []
        for x1, y1, x2, y2 in np.asarray(boxes, dtype=int):
            crop = image[max(0, y1):y2, max(0, x1):x2]
            if crop.shape[0] < 8 or crop.shape[1] < 8:
                continue
            lines = self.read(crop, lexicon, region)
            if len(lines):
                lines.xyxy = lines.xyxy + [max(0, x1), max(0, y1), max(0, x1), max(0, y1)]
                parts.append(lines)
        if not parts:
            return text_detections(np.zeros((0, 4)), [], [], lexicon, region)
        merged = sv.Detections.merge(parts) if len(parts) > 1 else parts[0]
        return merged.with_nms(0.5, class_agnostic=True) if len(parts) > 1 else merged


def text_detections(xyxy: np.ndarray, texts: list[str], scores: list[float], lexicon: SmallAdLexicon | None = None,
                    region: str = DEFAULT_REGION) -> sv.Detections:
    """Detections for text lines with their phones and keywords filled in (class `TEXT_LINE`)."""
    lexicon = lexicon or _default_lexicon()
    n = len(texts)
    return sv.Detections(
        xyxy=np.asarray(xyxy, dtype=float).reshape(n, 4),
        confidence=np.asarray(scores, dtype=float),
        class_id=np.full(n, -1, dtype=int),
        data={
            fields.CLASS_NAME: np.array([TEXT_LINE] * n, dtype=object),
            fields.TEXT: np.array(texts, dtype=object),
            fields.PHONES: np.array([fields.join([p.number for p in find_phones(t, region)]) for t in texts], dtype=object),
            fields.KEYWORDS: np.array([fields.join(lexicon.match(t)) for t in texts], dtype=object),
        },
    )


_LEXICON: SmallAdLexicon | None = None


def _default_lexicon() -> SmallAdLexicon:
    global _LEXICON
    _LEXICON = _LEXICON or load_lexicon()
    return _LEXICON


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).lower()


@dataclass
class TextReference:
    """Text visible in a camera's reference snapshot: legal signs that are never flyposting.

    A text line is known when it overlaps a reference line (IoU >= `iou`) and reads alike
    (similarity >= `similarity`), or sits almost exactly on one (IoU >= `same_place_iou`,
    whatever OCR read this time).
    """

    xyxy: np.ndarray
    texts: list[str]
    iou: float = 0.3
    similarity: float = 0.6
    same_place_iou: float = 0.7

    @classmethod
    def from_detections(cls, detections: sv.Detections) -> TextReference:
        return cls(detections.xyxy.copy(), [str(t) for t in detections.data.get(fields.TEXT, [])])

    def known(self, detections: sv.Detections) -> np.ndarray:
        if len(detections) == 0 or len(self.xyxy) == 0:
            return np.zeros(len(detections), dtype=bool)
        ious = sv.box_iou_batch(detections.xyxy, self.xyxy)
        out = np.zeros(len(detections), dtype=bool)
        for i, text in enumerate(detections.data[fields.TEXT]):
            for j in np.flatnonzero(ious[i] >= self.iou):
                alike = difflib.SequenceMatcher(None, _norm(str(text)), _norm(self.texts[j])).ratio() >= self.similarity
                if alike or ious[i, j] >= self.same_place_iou:
                    out[i] = True
                    break
        return out


def label_texts(
    texts: sv.Detections,
    reference: TextReference | None = None,
    signboards: sv.Detections | None = None,
    taxonomy: Taxonomy | None = None,
) -> sv.Detections:
    """Drop known text (reference snapshot, signboards: the `taxonomy`'s signboard classes, default the
    shipped taxonomy's) and set each line's class (module doc)."""
    if len(texts) == 0:
        return texts
    keep = np.ones(len(texts), dtype=bool)
    if reference is not None:
        keep &= ~reference.known(texts)
    if signboards is not None and len(signboards):
        board_classes = (taxonomy or default_taxonomy()).signboard_classes
        boards = signboards.xyxy[np.isin(fields.names(signboards), list(board_classes))]
        if len(boards):
            centres = texts.get_anchors_coordinates(sv.Position.CENTER)
            inside = (centres[:, None, 0] >= boards[None, :, 0]) & (centres[:, None, 0] <= boards[None, :, 2])
            inside &= (centres[:, None, 1] >= boards[None, :, 1]) & (centres[:, None, 1] <= boards[None, :, 3])
            keep &= ~inside.any(axis=1)
    out = texts[keep]
    ad = np.array([bool(p) or bool(k) for p, k in zip(out.data[fields.PHONES], out.data[fields.KEYWORDS])], dtype=bool)
    plain = NEW_TEXT if reference is not None else TEXT_LINE
    out.data[fields.CLASS_NAME] = np.where(ad, SMALL_AD_TEXT, plain).astype(object)
    return out


def merge_with_texts(detections: sv.Detections, texts: sv.Detections) -> sv.Detections:
    """Detector boxes plus text lines in one Detections (empty text fields for detector boxes)."""
    if not len(texts):
        return detections
    if not len(detections):
        return fields.merge([texts])
    merged = fields.merge([detections, texts])
    for name in TEXT_FIELDS:  # every box has its text fields, even when no part set them
        if name not in merged.data:
            merged.data[name] = fields.column(name, len(merged))
    return merged


@dataclass
class TextEvidence:
    """OCR + labelling for one source: `reference` for a camera, none for photos; `taxonomy` names the
    signboard classes (default: the shipped taxonomy)."""

    reader: TextReader
    reference: TextReference | None = None
    lexicon: SmallAdLexicon = field(default_factory=_default_lexicon)
    region: str = DEFAULT_REGION  # phone numbering plan read without a country code
    taxonomy: Taxonomy | None = None

    @classmethod
    def for_camera(cls, reader: TextReader, reference_snapshot: str | Path | None, region: str = DEFAULT_REGION) -> TextEvidence:
        """Read the scene's reference snapshot once; its text is ignored from then on."""
        if reference_snapshot is None:
            return cls(reader, TextReference(np.zeros((0, 4)), []), region=region)
        import cv2

        image = cv2.imread(str(reference_snapshot))
        if image is None:
            raise FileNotFoundError(f"{reference_snapshot}: reference snapshot cannot be read")
        return cls(reader, TextReference.from_detections(reader.read(image, region=region)), region=region)

    def detect(self, image: np.ndarray, signboards: sv.Detections | None = None, boxes: np.ndarray | None = None) -> sv.Detections:
        """Labelled text lines of the image, or only of pixel `boxes` in it (the verifier's posting-like tiles)."""
        lines = self.reader.read(image, self.lexicon, self.region) if boxes is None else \
            self.reader.read_regions(image, boxes, self.lexicon, self.region)
        return label_texts(lines, self.reference, signboards, self.taxonomy)
