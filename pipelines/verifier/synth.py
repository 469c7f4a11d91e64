"""Small-ad slips (小广告) composed onto real street photos: flyposting positives that look like the target.

The street-scenes data has hardly any real postings outside one sticker gallery, and none of the
Chinese paper ads with phone numbers the city chases. So training photos (never validation ones)
get rendered slips: a short Chinese service phrase (开锁, 办证, 疏通 ...) and a mobile number in a
CJK font, on paper of a typical colour, with paper grain, a slight perspective, the photo's own
lighting, sometimes a torn corner, stuck where small ads are stuck (poles, walls, boxes, shutters:
the lower-middle band of a street photo). Several slips are often pasted side by side. The boxes of
the pasted slips come back with the photo, so tiles can be labelled from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from detect.fonts import BOLD, find_cjk_font

PHRASES = ("开锁", "专业开锁", "换锁芯", "办证", "办证刻章", "刻章", "疏通下水道", "管道疏通", "贷款", "无抵押贷款",
           "信用贷款", "招聘", "高薪招聘", "兼职", "搬家", "回收", "家电维修", "上门服务", "出租", "租房",
           "代开发票", "空调维修", "二手回收", "急用钱", "私家侦探", "打孔", "水电维修")
PAPER = ((250, 250, 245), (245, 240, 200), (250, 215, 220), (215, 230, 250), (230, 250, 215), (255, 245, 150))
INK = ((10, 10, 10), (200, 20, 20), (20, 40, 170))


def slip_font() -> Path | None:
    """The Chinese font slips are rendered in: its Bold face, the one the shipped heads' synthetic slips were rendered in
    (the finder took Bold by its file name then) and the print most small ads use; None without a Chinese font."""
    return find_cjk_font(BOLD)


@dataclass
class Slip:
    """One composed slip: its box in the photo (x1, y1, x2, y2 pixels) and what it says."""

    box: tuple[int, int, int, int]
    text: str
    phone: str


def _phone(rng: np.random.Generator) -> str:
    digits = "1" + str(rng.choice([3, 5, 7, 8, 9])) + "".join(str(d) for d in rng.integers(0, 10, 9))
    style = rng.integers(0, 3)
    if style == 0:
        return digits
    if style == 1:
        return f"{digits[:3]} {digits[3:7]} {digits[7:]}"
    return f"{digits[:3]}-{digits[3:7]}-{digits[7:]}"


def render_slip(rng: np.random.Generator, font_path: Path) -> tuple[np.ndarray, str, str]:
    """A flat slip (BGR): 1-2 phrase lines and a phone number, on coloured paper with grain."""
    phrases = [str(p) for p in rng.choice(PHRASES, size=int(rng.integers(1, 3)), replace=False)]
    phone = _phone(rng)
    size = int(rng.integers(28, 44))
    font = ImageFont.truetype(str(font_path), size)
    small = ImageFont.truetype(str(font_path), int(size * rng.uniform(0.7, 1.0)))
    lines = [(p, font) for p in phrases] + [(phone, small)]
    widths = [font.getlength(t) if f is font else small.getlength(t) for t, f in lines]
    pad = int(size * rng.uniform(0.3, 0.8))
    w = int(max(widths) + 2 * pad)
    h = int(sum(int(f.size * 1.3) for _, f in lines) + 2 * pad)
    if rng.random() < 0.35:  # tall slips: one column of text on a narrow strip is common too
        w = int(w * rng.uniform(0.9, 1.1))
    paper = tuple(int(c) for c in PAPER[rng.integers(len(PAPER))])
    img = Image.new("RGB", (w, h), paper)
    d = ImageDraw.Draw(img)
    y = pad
    ink = tuple(int(c) for c in INK[rng.integers(len(INK))])
    for text, f in lines:
        d.text((pad, y), text, font=f, fill=ink if f is font else (10, 10, 10))
        y += int(f.size * 1.3)
    if rng.random() < 0.3:
        d.rectangle((2, 2, w - 3, h - 3), outline=ink, width=2)
    arr = np.asarray(img, dtype=np.float32)
    arr += rng.normal(0, rng.uniform(3, 10), arr.shape)  # paper grain, print noise
    return cv2.cvtColor(np.clip(arr, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR), " ".join(phrases), phone


def _warp(slip: np.ndarray, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The slip scaled to `width` px, slightly rotated and in perspective, with its alpha mask."""
    h0, w0 = slip.shape[:2]
    height = max(4, int(width * h0 / w0))
    slip = cv2.resize(slip, (width, height), interpolation=cv2.INTER_AREA)
    mask = np.full((height, width), 255, np.uint8)
    if rng.random() < 0.4:  # torn: a corner or edge missing
        cx, cy = int(rng.integers(0, width)), int(rng.choice([0, height - 1]))
        r = int(min(width, height) * rng.uniform(0.2, 0.6))
        cv2.circle(mask, (cx, cy), r, 0, -1)
    src = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    jitter = rng.uniform(-0.08, 0.08, (4, 2)) * [width, height]
    angle = np.deg2rad(rng.uniform(-8, 8))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([width / 2, height / 2])
    dst = (src - centre) @ rot.T + centre + jitter
    dst -= dst.min(0)
    out_w, out_h = int(np.ceil(dst[:, 0].max())) + 1, int(np.ceil(dst[:, 1].max())) + 1
    m = cv2.getPerspectiveTransform(src, np.float32(dst))
    warped = cv2.warpPerspective(slip, m, (out_w, out_h), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpPerspective(mask, m, (out_w, out_h), flags=cv2.INTER_LINEAR)
    return warped, alpha


def compose(photo: np.ndarray, rng: np.random.Generator, font_path: Path, max_slips: int = 4,
            width: tuple[float, float] = (0.035, 0.12)) -> tuple[np.ndarray, list[Slip]]:
    """`photo` (BGR) with 1..max_slips slips pasted in one spot, lit like their surroundings;
    each slip is `width` (a range, as a fraction of the photo's width) wide."""
    out = photo.copy()
    h, w = out.shape[:2]
    n = int(rng.integers(1, max_slips + 1))
    slip_w = int(w * rng.uniform(*width))
    x0 = int(rng.uniform(0.05, 0.9) * w)
    y0 = int(rng.uniform(0.3, 0.8) * h)
    slips = []
    for i in range(n):
        flat, text, phone = render_slip(rng, font_path)
        warped, alpha = _warp(flat, max(8, int(slip_w * rng.uniform(0.8, 1.2))), rng)
        sh, sw = warped.shape[:2]
        x = int(np.clip(x0 + (i % 2) * sw * rng.uniform(0.9, 1.2), 0, w - sw))
        y = int(np.clip(y0 + (i // 2) * sh * rng.uniform(0.9, 1.2), 0, h - sh))
        if sw >= w or sh >= h:
            continue
        region = out[y : y + sh, x : x + sw].astype(np.float32)
        light = cv2.GaussianBlur(region.mean(axis=2), (0, 0), 3) / 160.0  # the wall's light on the paper
        lit = warped.astype(np.float32) * np.clip(light, 0.35, 1.15)[..., None]
        a = (alpha.astype(np.float32) / 255.0)[..., None] * rng.uniform(0.85, 1.0)
        out[y : y + sh, x : x + sw] = np.clip(region * (1 - a) + lit * a, 0, 255).astype(np.uint8)
        slips.append(Slip((x, y, x + sw, y + sh), text, phone))
    if slips and rng.random() < 0.5:  # the camera's softness over the pasted region
        x1 = min(s.box[0] for s in slips); y1 = min(s.box[1] for s in slips)
        x2 = max(s.box[2] for s in slips); y2 = max(s.box[3] for s in slips)
        out[y1:y2, x1:x2] = cv2.GaussianBlur(out[y1:y2, x1:x2], (3, 3), 0)
    return out, slips
