"""Flyposting through text: RapidOCR on rendered Chinese small ads, then the photo and camera rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv
from PIL import Image, ImageDraw, ImageFont

from detect.config_io import validate_model
from detect.events import EventKind
from detect.frames import Frame
from detect.ocr import TextEvidence, TextReader, label_texts, merge_with_texts, text_detections
from detect.rules import CameraRules, PhotoRules
from detect.scenes import Scene
from detect.tracking import TrackingConfig


def _cjk_font() -> str:
    """A font with Chinese glyphs (the demo's lookup: fontconfig's :lang=zh list, then the usual folders)."""
    from streetwatch.demo.media import find_cjk_font

    font = find_cjk_font()
    if font is not None:
        return str(font)
    pytest.fail("no CJK font installed: run `bash scripts/install-system-deps.sh` (installs fonts-noto-cjk)")


@pytest.fixture(scope="module")
def font_path() -> str:
    return _cjk_font()


@pytest.fixture(scope="module")
def reader() -> TextReader:
    return TextReader()


def render(font_path: str, with_ad: bool, size=(800, 500)) -> np.ndarray:
    """A shop wall with its sign; optionally a small ad pasted on it (BGR)."""
    img = Image.new("RGB", size, (120, 120, 115))
    d = ImageDraw.Draw(img)
    d.rectangle((60, 40, 740, 120), fill=(180, 30, 30))
    d.text((250, 55), "王记面馆", font=ImageFont.truetype(font_path, 48), fill=(255, 230, 0))
    if with_ad:
        f = ImageFont.truetype(font_path, 34)
        d.rectangle((120, 200, 460, 460), fill=(250, 250, 245))
        d.text((140, 220), "专业开锁 疏通下水道", font=f, fill=(10, 10, 10))
        d.text((140, 290), "办证 刻章", font=f, fill=(200, 0, 0))
        d.text((140, 370), "138 0013 8000", font=f, fill=(10, 10, 10))
    return cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR)


def test_ocr_reads_phone_number_and_small_ad_words(font_path, reader):
    texts = reader.read(render(font_path, with_ad=True))
    phones = {p for joined in texts.data["phones"] for p in joined.split(";") if p}
    keywords = {k for joined in texts.data["keywords"] for k in joined.split(";") if k}
    assert "13800138000" in phones
    assert {"开锁", "疏通", "办证", "刻章"} <= keywords
    assert any("王记面馆" in t for t in texts.data["text"])


def test_photo_small_ad_is_flyposting_with_its_phone_and_the_shop_sign_is_not(font_path, reader):
    image = render(font_path, with_ad=True)
    texts = label_texts(reader.read(image))
    assert sorted(set(texts.data["class_name"])) == ["small_ad_text", "text"]
    frame = Frame(image=image, source_id="photo-1", ts=datetime(2024, 6, 3, 2, 0, tzinfo=UTC))
    events = PhotoRules().process(frame, merge_with_texts(sv.Detections.empty(), texts))
    assert [(e.kind, e.violation_type) for e in events] == [(EventKind.OPENED, "flyposting")]
    ev = events[0]
    assert ev.phones == ["13800138000"]
    assert not any("王记" in t for t in ev.texts)
    x1, y1, x2, y2 = ev.detections.xyxy.min(0)[0], ev.detections.xyxy.min(0)[1], ev.detections.xyxy.max(0)[2], ev.detections.xyxy.max(0)[3]
    assert 100 <= x1 and y1 >= 190 and x2 <= 480 and y2 <= 470  # the pasted paper, not the sign


def test_text_inside_a_signboard_is_not_a_candidate():
    texts = text_detections(np.array([[100, 50, 300, 100], [100, 300, 300, 340]]), ["王记面馆 电话 0571-87654321", "开锁 13800138000"], [0.9, 0.9])
    boards = sv.Detections(xyxy=np.array([[60, 40, 740, 120]], dtype=float), class_id=np.array([3]), data={"class_name": np.array(["signboard"])})
    labelled = label_texts(texts, signboards=boards)
    assert labelled.data["text"].tolist() == ["开锁 13800138000"]
    assert labelled.data["class_name"].tolist() == ["small_ad_text"]


def test_camera_new_persisting_text_in_no_posting_zone_is_flyposting(tmp_path: Path, font_path, reader):
    reference_path = tmp_path / "ref.png"
    cv2.imwrite(str(reference_path), render(font_path, with_ad=False))
    scene = validate_model(
        Scene,
        {"camera_id": "cam-wall", "reference_snapshot": str(reference_path),
         "zones": [{"id": "wall", "kind": "no_posting", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]]}]},
        "test-scene",
    )
    evidence = TextEvidence.for_camera(reader, scene.reference_snapshot)
    before, after = render(font_path, with_ad=False), render(font_path, with_ad=True)
    texts_before, texts_after = evidence.detect(before), evidence.detect(after)
    assert len(texts_before) == 0  # the shop sign is in the reference snapshot
    assert set(texts_after.data["class_name"]) == {"small_ad_text"}

    rules = CameraRules(scene, tracking=TrackingConfig(frame_rate=0.1))
    t0 = datetime(2024, 6, 3, 2, 0, tzinfo=UTC)
    events = []
    for i in range(100):  # one OCR'd frame every 10 s; the ad is pasted at 100 s and removed at 300 s
        image, texts = (after, texts_after) if 100 <= i * 10 < 300 else (before, texts_before)
        frame = Frame(image=image, source_id="cam-wall", ts=t0 + timedelta(seconds=i * 10))
        events += [(e.kind, i * 10, e) for e in rules.process(frame, merge_with_texts(sv.Detections.empty(), texts))]
    # first seen at 100 s, confirmed at 110 s, persists the 120 s dwell -> opened at 230 s;
    # last seen at 290 s -> cleared 600 s (flyposting's clear time) later
    assert [(k, t) for k, t, _ in events] == [(EventKind.OPENED, 230), (EventKind.CLEARED, 890)]
    opened = events[0][2]
    assert opened.violation_type == "flyposting" and opened.zone_id == "wall"
    assert opened.phones == ["13800138000"]
    assert any("开锁" in t for t in opened.texts) and not any("王记" in t for t in opened.texts)


def test_a_taxi_companys_sign_in_a_real_shanghai_street_is_not_a_small_ad(reader):
    """OCR of a real Shanghai street photo (`street-scenes`, no posting in it) reads 上海市出租汽车暨汽车租赁:
    出租 is a small-ad word, 出租汽车 a taxi (the lexicon's `not_ads`)."""
    from tests.test_verifier_parts import STREET_SCENES

    image = cv2.imread(str(STREET_SCENES / "images" / "cn2" / "rida__20210523-the-masses-of-shanghai-ep03_20.jpg"))
    texts = label_texts(reader.read(image))
    assert any("出租汽车" in t for t in texts.data["text"])
    assert "small_ad_text" not in set(texts.data["class_name"])


def test_a_12_mp_photo_is_read_at_the_ocr_resolution_not_the_jpeg_decodes(tmp_path: Path, font_path, real_sample_dir):
    """`ocr_max_side` (1600) is the long side OCR reads: the JPEG decode of a 4000x3000 photo keeps 2000 px,
    which cost text detection half as much again and read no more; the ad's phone and box still come back
    in the detector's pixels."""
    from detect.imageio import decode_image
    from pipelines.triage.text import OcrMode, PhotoText

    wall = Image.open(sorted((real_sample_dir / "facades-ads" / "images").glob("*.jpg"))[4]).convert("RGB").resize((4000, 3000))
    draw, font = ImageDraw.Draw(wall), ImageFont.truetype(font_path, 90)
    draw.rectangle((1500, 1200, 2600, 1800), fill=(248, 248, 240))
    draw.text((1550, 1250), "专业开锁 疏通", font=font, fill=(10, 10, 10))
    draw.text((1550, 1550), "139 1234 5678", font=font, fill=(10, 10, 10))
    wall.save(tmp_path / "ad.jpg", quality=92)
    data = (tmp_path / "ad.jpg").read_bytes()
    assert max(decode_image(data, max_side=1600).image.shape) == 2000  # what OCR was given before

    seen = []

    class Spy(TextReader):
        def read(self, image, lexicon=None, region="CN"):
            seen.append(image.shape[:2])
            return super().read(image, lexicon, region)

    text = PhotoText(OcrMode.ALL, max_side=1600)
    text._evidence = TextEvidence(Spy(), region="CN")
    small = decode_image(data, max_side=640).image  # the detector's decode (1000x750)
    out = text.add(data, small, sv.Detections.empty(), "ad.jpg")
    assert seen == [(1200, 1600)]
    [i] = [i for i, p in enumerate(out.data["phones"]) if p == "13912345678"]
    k = small.shape[1] / 4000
    x1, y1, x2, y2 = out.xyxy[i] / k
    assert 1500 <= x1 and 1500 <= y1 and x2 <= 2600 and y2 <= 1800


def test_text_is_read_without_the_angle_classifier(font_path):
    """RapidOCR's angle classifier is off (`RAPIDOCR_SETTINGS`): the ad still reads whole, and no line goes through it."""
    reader = TextReader()
    calls = []
    classify = reader._ocr.text_cls
    reader._ocr.text_cls = lambda crops: calls.append(len(crops)) or classify(crops)
    texts = reader.read(render(font_path, with_ad=True))
    assert "13800138000" in set(texts.data["phones"])
    assert {"开锁", "疏通", "办证", "刻章"} <= {k for joined in texts.data["keywords"] for k in joined.split(";") if k}
    assert calls == []


def test_ocr_sessions_run_on_one_thread(reader):
    """Triage's workers (and the camera streams) fill the cores; RapidOCR's ONNX sessions take one thread each."""
    for session in (reader._ocr.text_det.infer.session, reader._ocr.text_rec.session.session):
        options = session.get_session_options()
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
