"""The evidence images: the boxes, the zone, a label a class and a caption, lettered for those who read them.

City staff and the 数字城管 platform's operators read the annotated frames a case carries. They met the detector's
class ids there (`verified:street_stall 0.52`) and a time zone named `CST` (China's, or US Central time?). With a
Chinese font (Debian fonts-noto-cjk: `detect.fonts.find_cjk_font`, its simplified-Chinese face) each label is the
class's Chinese name (`Taxonomy.class_names_zh`, as the review pages label boxes) and the caption names the type in
Chinese beside its id. Without one, the ids are drawn with OpenCV's font, which has no Chinese glyphs. Either way the
time carries its UTC offset (`UTC+08:00`). The report's thumbnails (pipelines.triage.analyse) take their labels from
here too (`label_boxes`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from detect import fields

if TYPE_CHECKING:
    import supervision as sv
    from PIL import ImageDraw

ZONE_COLOR = "#ffd400"
CAPTION_PADDING = 6  # pixels of black around an annotated frame's caption


@functools.cache
def chinese_font() -> tuple[Path, int] | None:
    """The Chinese font file and face the images are lettered with; None when this machine has none (found once)."""
    from detect.fonts import find_cjk_font, simplified_face

    path = find_cjk_font()
    return (path, simplified_face(path)) if path is not None else None


def stamp(ts: datetime) -> str:
    """A local time as the caption writes it: `2026-12-07 21:15:33 UTC+08:00` (a zone's abbreviation is ambiguous)."""
    offset = ts.strftime("%z")
    return f"{ts:%Y-%m-%d %H:%M:%S} UTC{offset[:3]}:{offset[3:5]}"


def annotate(image: np.ndarray, detections: sv.Detections, polygon: np.ndarray | None, caption: str | None,
             names_zh: dict[str, str]) -> np.ndarray:
    """A copy of `image` (BGR) with the zone `polygon`, the detections' boxes coloured by class, one label a class above
    all its boxes (`class_labels`; its Chinese name in `names_zh` where a Chinese font letters it) and the `caption`
    across the top (none: no caption)."""
    import supervision as sv

    out = image.copy()
    h, w = out.shape[:2]
    thickness = max(2, round(min(h, w) / 300))
    if polygon is not None:
        out = sv.draw_polygon(out, polygon, color=sv.Color.from_hex(ZONE_COLOR), thickness=thickness)
    if len(detections):
        names = [str(n) for n in detections.data.get(fields.CLASS_NAME, ["object"] * len(detections))]
        classes = list(dict.fromkeys(names))  # in their order; a colour each
        coloured = sv.Detections(xyxy=detections.xyxy, class_id=np.array([classes.index(n) for n in names]))
        out = sv.BoxAnnotator(thickness=thickness).annotate(out, coloured)
        around, labels = class_labels(detections, names_zh if chinese_font() is not None else {})
        out = label_boxes(out, around.xyxy, labels, list(range(len(labels))), round(24 * max(0.5, thickness / 4)))
    return _captioned(out, caption, max(0.5, min(h, w) / 1200)) if caption else out


def label_boxes(image: np.ndarray, boxes: np.ndarray, labels: list[str], colours: list[int], text_px: int,
                padding: int | None = None) -> np.ndarray:
    """`labels` above their `boxes` (pixels), on the palette colour of each box's index in `colours` (as
    `sv.BoxAnnotator` colours its boxes): in the Chinese font where there is one, else OpenCV's (ASCII labels), where
    supervision keeps them inside the frame and apart. `padding` around the text: a fifth of it, and supervision's 10
    pixels with OpenCV, unless given (a thumbnail's 2)."""
    import supervision as sv

    if not len(labels):
        return image
    font = chinese_font()
    if font is None:
        return sv.LabelAnnotator(text_scale=text_px / 24, text_padding=10 if padding is None else padding,
                                 smart_position=True).annotate(
            image, sv.Detections(xyxy=np.asarray(boxes, dtype=float), class_id=np.asarray(colours)), labels=labels)
    colour_rgb = [sv.ColorPalette.DEFAULT.by_idx(c).as_rgb() for c in colours]
    return _pil(image, lambda draw: _labels(draw, font, boxes, labels, colour_rgb, text_px, padding))


def _captioned(image: np.ndarray, caption: str, scale: float) -> np.ndarray:
    """The caption centred across the top on black, made smaller where it would not fit the frame's width: in the
    Chinese font where there is one (PIL), else OpenCV's."""
    import supervision as sv

    font = chinese_font()
    if font is None:
        scale = _fitted_scale(caption, scale, image.shape[1])
        return sv.draw_text(image, caption, sv.Point(x=image.shape[1] // 2, y=int(24 * scale) + CAPTION_PADDING),
                            text_color=sv.Color.WHITE, text_scale=scale, text_thickness=max(1, round(scale * 2)),
                            text_padding=CAPTION_PADDING, background_color=sv.Color.BLACK)
    return _pil(image, lambda draw: _caption(draw, font, caption, round(28 * scale)))


def class_labels(detections: sv.Detections, names_zh: dict[str, str]) -> tuple[sv.Detections, list[str]]:
    """One label a class, above the box around all its boxes: its name (in `names_zh` when there), its best confidence
    and how many boxes (`small_ad_text 1.00 x3`, 小广告文字 1.00 x3). A label above each box covered the box above it:
    a small ad's three lines, their words hidden by their own labels, in the frame sent to the dispatch platform. The
    manifest and the crops keep every box's class and confidence."""
    import supervision as sv

    names = np.array([str(n) for n in detections.data.get(fields.CLASS_NAME, ["object"] * len(detections))])
    conf = detections.confidence if detections.confidence is not None else np.zeros(len(detections))
    around, labels = [], []
    for name in dict.fromkeys(names):
        mine = names == name
        around.append([*detections.xyxy[mine, :2].min(0), *detections.xyxy[mine, 2:].max(0)])
        labels.append(f"{names_zh.get(name, name)} {conf[mine].max():.2f}" + (f" x{int(mine.sum())}" if mine.sum() > 1 else ""))
    return sv.Detections(xyxy=np.array(around, dtype=float).reshape(-1, 4), class_id=np.arange(len(labels))), labels


def _fitted_scale(caption: str, scale: float, width: int) -> float:
    """OpenCV's text scale for the caption: `scale`, made smaller where the caption would not fit the frame's width.
    Drawn centred at 1/1200 of the short side whatever its length, it ran past both edges of a portrait phone photo
    (3024 x 4032, or 810 x 1080: the case id and the time cut off), and of a 1920 x 1080 frame with a long camera id."""
    import cv2

    room = width - 2 * CAPTION_PADDING - 8  # a few pixels of the photo at each end
    for _ in range(5):  # the width is not quite proportional to the scale (whole-pixel glyphs and strokes)
        (text_width, _), _ = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, round(scale * 2)))
        if text_width <= room:
            break
        scale *= 0.98 * room / text_width
    return scale


def _pil(image: np.ndarray, drawing: Callable[[ImageDraw.ImageDraw], None]) -> np.ndarray:
    """`image` (BGR) drawn on with PIL."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(np.ascontiguousarray(image[:, :, ::-1]))
    drawing(ImageDraw.Draw(picture))
    return np.ascontiguousarray(np.asarray(picture)[:, :, ::-1])


def _labels(draw: ImageDraw.ImageDraw, font: tuple[Path, int], boxes: np.ndarray, labels: list[str], colours: list[tuple],
            text_px: int, padding: int | None) -> None:
    """Labels above their boxes (inside at the top edge when there is no room above; one under another rather than
    over it)."""
    from PIL import ImageFont

    w = draw.im.size[0]
    face = ImageFont.truetype(str(font[0]), text_px, index=font[1])
    pad = max(2, text_px // 5) if padding is None else padding
    placed: list[tuple[int, int, int, int]] = []
    for (x1, y1, _, _), text, colour in zip(boxes, labels, colours, strict=True):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
        lw, lh = right - left + 2 * pad, bottom - top + 2 * pad
        x, y = int(max(0, min(x1, w - lw))), max(0, int(y1) - lh)
        while any(x < px2 and px1 < x + lw and y < py2 and py1 < y + lh for px1, py1, px2, py2 in placed):
            y += lh  # under the label it would cover (two classes whose boxes start together)
        placed.append((x, y, x + lw, y + lh))
        draw.rectangle((x, y, x + lw, y + lh), fill=colour)
        draw.text((x + pad - left, y + pad - top), text, font=face, fill=(255, 255, 255))


def _caption(draw: ImageDraw.ImageDraw, font: tuple[Path, int], caption: str, text_px: int) -> None:
    """The caption centred at the top on black, smaller where it would not fit."""
    from PIL import ImageFont

    w = draw.im.size[0]
    face = ImageFont.truetype(str(font[0]), text_px, index=font[1])
    width = draw.textlength(caption, font=face)
    room = w - 2 * CAPTION_PADDING - 8  # a few pixels of the photo at each end, as _fitted_scale leaves
    if width > room:  # a long caption on a narrow frame (a portrait phone photo): smaller, never cut
        face = ImageFont.truetype(str(font[0]), max(8, int(text_px * room / width)), index=font[1])
    left, top, right, bottom = draw.textbbox((0, 0), caption, font=face)
    pad = CAPTION_PADDING
    x = max(0, (w - (right - left)) // 2 - pad)
    draw.rectangle((x, 0, x + right - left + 2 * pad, bottom - top + 2 * pad + 6), fill=(0, 0, 0))
    draw.text((x + pad - left, pad + 6 - top), caption, font=face, fill=(255, 255, 255))
