"""The shipped verifier on real photos: one judgement for photos and cameras, posters, parked cars, bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from detect.frames import Frame
from detect.imageio import read_image
from detect.judgement import load_judgement
from detect.rules import PhotoRules
from detect.taxonomy import load_taxonomy
from detect.verifier import VerifierError, load_verifier
from pipelines.triage import TriageSettings, run_triage
from tests.conftest import SHARED

STREET = SHARED / "datasets" / "street-scenes" / "images"
CARS_IN_BAY = STREET / "mmj" / "IMG_5969.jpg"  # "ferry terminal road and car park, car in marked bay, no violations"
STALL = STREET / "mmj" / "IMG_0017.jpg"  # two tent stalls with tables (boxes.csv)
BICYCLE_ON_PAVEMENT = STREET / "mmj" / "IMG_0014.jpg"  # labelled non-motor parking; one bicycle detected
WHEN = datetime(2026, 11, 3, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def judgement():
    return load_judgement(None, load_taxonomy())


def _photo_types(path: Path, detector, judgement) -> set[str]:
    image = read_image(path)
    dets, fmap = detector.detect_with_features([image])[0]
    dets, verdicts = judgement.objects(image, dets, fmap)
    dets = judgement.photo(verdicts, dets, image.shape[1], image.shape[0])
    events = PhotoRules(taxonomy=judgement.taxonomy).process(Frame(image, path.name, WHEN), dets, verified=judgement.verified_types)
    return {e.violation_type for e in events}


def test_the_promoted_verifier_reads_this_detectors_neck(judgement, onnx_detector):
    assert judgement.active and judgement.needs_features
    judgement.check(onnx_detector)
    assert {"street_stall", "shopfront_spillover", "illegal_parking", "nonmotor_parking"} <= judgement.verified_types


def test_a_car_in_a_marked_bay_is_not_illegal_parking(judgement, onnx_detector):
    """Today's rules call any car in a photo without zones illegal parking; the verifier judges the ground."""
    image = read_image(CARS_IN_BAY)
    plain = onnx_detector.detect([image])[0]
    assert "car" in set(plain.data["class_name"])
    assert "illegal_parking" in {e.violation_type for e in PhotoRules().process(Frame(image, "bay", WHEN), plain)}
    assert not _photo_types(CARS_IN_BAY, onnx_detector, judgement) & {"illegal_parking", "nonmotor_parking"}


def test_a_vehicle_too_small_or_unsure_for_the_parking_head_is_not_a_finding(judgement, onnx_detector):
    """Inference judges the vehicles training judged (`VEHICLE_MIN_CONF`, `VEHICLE_MIN_AREA`): a bicycle the
    head passes gets probability 0 when it is less certain or smaller than any vehicle the head was trained
    on; the small one would still pass the taxonomy's own floor (non-motor parking: 0.05 % of the image)."""
    from detect.verifier.verifier import VEHICLE_MIN_AREA, VEHICLE_MIN_CONF

    image = read_image(BICYCLE_ON_PAVEMENT)
    h, w = image.shape[:2]
    dets, fmap = onnx_detector.detect_with_features([image])[0]
    [bike] = np.flatnonzero(dets.data["class_name"] == "bicycle")
    judged = judgement.verifier.judge(image, dets, fmap)
    assert judged.object_probs["nonmotor_parking"][bike] >= judged.thresholds["nonmotor_parking"]
    assert "nonmotor_parking" in _photo_types(BICYCLE_ON_PAVEMENT, onnx_detector, judgement)

    unsure = dets[bike:bike + 1]
    unsure.confidence = np.array([VEHICLE_MIN_CONF - 0.01])
    small = dets[bike:bike + 1]
    x1, y1, x2, y2 = small.xyxy[0]
    side = np.sqrt(VEHICLE_MIN_AREA / 2 * w * h)  # half the smallest area judged, standing where the bicycle stands
    small.xyxy = np.array([[(x1 + x2 - side) / 2, y2 - side, (x1 + x2 + side) / 2, y2]])
    for shown in (unsure, small):
        verdicts = judgement.verifier.judge(image, shown, fmap)
        assert verdicts.object_probs["nonmotor_parking"][0] == 0.0
        marked, _ = judgement.objects(image, shown, fmap)
        assert not marked.data["verified_pass"][0]
        events = PhotoRules(taxonomy=judgement.taxonomy).process(Frame(image, "bike", WHEN), marked, verified=judgement.verified_types)
        assert "nonmotor_parking" not in {e.violation_type for e in events}


def test_bad_verifier_input_is_refused_with_the_reason(tmp_path):
    with pytest.raises(VerifierError, match="verifier 'nope' not found in"):
        load_verifier("nope")
    assert load_verifier("none") is None


def test_the_same_photo_gives_the_same_verdict_in_triage_and_in_a_camera_replay(tmp_path, judgement, onnx_detector):
    """Triage judges the whole photo's tiles; a camera judges its zone's crop: for a zone that covers the
    view they are the same judgement, so the stall found in the photo opens a case on the camera."""
    from pipelines.cctv.service import Watcher
    from benchmarks.media import write_clip, write_scene
    from tests.cctv_helpers import cameras_file, make_intake

    image = read_image(STALL)
    photo_types = _photo_types(STALL, onnx_detector, judgement)
    assert "street_stall" in photo_types

    view = cv2.resize(image, (image.shape[1] // 2 * 2, image.shape[0] // 2 * 2))
    write_clip(tmp_path / "cam-s.mp4", view, [], 6.0, fps=1.0, noise=0.0, osd=False)
    whole = [[0, 0], [1, 0], [1, 1], [0, 1]]
    write_scene(tmp_path / "cam-s.yaml", "cam-s", zones=[{"id": "square", "kind": "no_vending", "polygon": whole,
                                                          "thresholds": {"street_stall": {"dwell_s": 2, "clear_s": 30}}}])
    intake = make_intake(tmp_path / "data")
    watcher = Watcher(cameras_file(tmp_path / "cameras.yaml", [{"id": "cam-s", "url": "cam-s.mp4", "scene": "cam-s.yaml"}]),
                      onnx_detector, intake, replay=True, judgement=judgement)
    watcher.run(poll_s=0.1)
    camera_types = {c.violation_type for c in intake.store.list()}
    assert camera_types == {"street_stall"}  # a no_vending zone judges stalls only
    [case] = intake.store.list()
    assert case.zone_id == "square"


def test_a_zone_reads_the_objects_centred_in_it(judgement, onnx_detector):
    """The stall head's object part on a camera: a zone over the whole view scores as the photo does, and
    the stalls' own tables and umbrellas (the objects in the zone) make it more stall-like than none."""
    image = read_image(STALL)
    h, w = image.shape[:2]
    dets, fmap = onnx_detector.detect_with_features([image])[0]
    verifier = judgement.verifier
    assert verifier.heads.heads["street_stall"].has_object_part
    photo = verifier.judge(image, dets, fmap).image["street_stall"]
    whole = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
    zone = verifier.zone_probs(fmap, whole, ["street_stall"], dets, (w, h))["street_stall"]
    assert zone == pytest.approx(photo, abs=1e-6)
    corner = np.array([[0, 0], [0.01, 0], [0.01, 0.01], [0, 0.01]], dtype=float)  # no object is centred here
    alone = verifier.zone_probs(fmap, whole, ["street_stall"], dets[:0], (w, h))["street_stall"]
    assert verifier.zone_probs(fmap, corner, ["street_stall"], dets, (w, h)) == verifier.zone_probs(fmap, corner, ["street_stall"], None, (w, h))
    assert zone > alone


def test_a_small_ad_with_a_phone_number_is_flyposting_with_its_number(tmp_path):
    """Default triage settings: the verifier gates OCR to the most posting-like tiles, whose phone number
    makes the finding and goes to the case. The photo is a close-up of a rendered slip on a real Hong Kong
    street (a slip filling about half the width): the shipped OCR gate reads only the ~3 % most
    posting-like street photos, so a slip that is small in a wide street view is not read by default
    (docs/verifier.md says so)."""
    from pipelines.verifier.synth import compose, slip_font

    font = slip_font()
    assert font is not None, "fonts-noto-cjk missing: run scripts/install-system-deps.sh"
    base = read_image(STREET / "cn2" / "lindsay__IMG_1842.jpg")
    poster, slips = compose(base, np.random.default_rng(2), font, max_slips=2, width=(0.45, 0.6))
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "small-ad.jpg"), poster, [cv2.IMWRITE_JPEG_QUALITY, 92])
    run_triage([tmp_path / "in"], TriageSettings(out=tmp_path / "out", cases=False), show_progress=False)
    [record] = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    posting = [f for f in record["findings"] if f["type"] == "flyposting"]
    assert posting, record["findings"]
    assert "".join(c for c in slips[0].phone if c.isdigit()) in posting[0]["phones"]
    assert record["verifier"]["flyposting"]["p"] >= 0
