"""Class roles live in the taxonomy (`classes:`): which classes are text, trigger OCR, are signboards, are
blurred for privacy, share a tracker, and which point of their box places them in a zone. A new model's
classes plug in by editing the file, with no code change (docs/rules.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import supervision as sv
import yaml

from detect.config_io import ConfigError
from detect.evidence.privacy import privacy_regions
from detect.ocr import label_texts, text_detections
from detect.scenes import anchor_points
from detect.taxonomy import DEFAULT_TAXONOMY_PATH, Taxonomy, load_taxonomy
from detect.tracking import Tracker, TrackingConfig
from pipelines.triage.text import WHOLE, OcrMode, PhotoText
from streetwatch.commands.config import file_schemas

T0 = datetime(2024, 6, 3, 2, 0, tzinfo=UTC)
TEXT = {"text", "new_text", "small_ad_text", "small_ad", "poster", "sticker", "banner"}
SIGNBOARDS = {"signboard", "cantilever", "shop_sign"}


def _taxonomy(tmp_path: Path, classes: dict) -> Taxonomy:
    data = yaml.safe_load(DEFAULT_TAXONOMY_PATH.read_text(encoding="utf-8"))
    data["classes"].update(classes)
    path = tmp_path / "taxonomy.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return load_taxonomy(path)


def _boxes(*named: tuple[str, tuple[float, float, float, float]]) -> sv.Detections:
    return sv.Detections(xyxy=np.array([box for _, box in named], dtype=float), confidence=np.full(len(named), 0.8),
                         class_id=np.arange(len(named)), data={"class_name": np.array([name for name, _ in named], dtype=object)})


def test_the_shipped_taxonomy_gives_the_roles_the_code_had():
    tax = load_taxonomy()
    assert tax.text_classes == TEXT and tax.centre_anchored == TEXT
    assert tax.signboard_classes == SIGNBOARDS and tax.ocr_trigger_classes == TEXT | SIGNBOARDS
    assert tax.families == {"car": "motor_vehicle", "truck": "motor_vehicle", "bus": "motor_vehicle", "van": "motor_vehicle",
                            "text": "text", "new_text": "text", "small_ad_text": "text"}
    assert {name: str(r) for name, r in tax.privacy_regions.items()} == {
        "person": "head", **dict.fromkeys(["car", "bus", "truck", "motorcycle", "motorbike", "van", "tricycle"], "plate")}
    assert tax.roles("umbrella").zone_anchor == "bottom_center" and not tax.roles("umbrella").triggers_ocr


def test_every_evidence_class_has_a_chinese_name_for_the_box_labels():
    """The evidence's box labels were the detector's English class names (bus 0.94) on pages city staff read in
    Chinese: every class a type weighs as evidence has one (`classes:` name_zh; a verifier's `verified:<type>` is its
    type's), so none is labelled in English alone."""
    tax = load_taxonomy()
    names = tax.class_names_zh
    evidence = {name for t in tax.types.values() for name in t.evidence}
    assert sorted(evidence - names.keys()) == []
    assert (names["bus"], names["verified:illegal_parking"]) == ("客车", "机动车乱停放")


def test_a_new_models_classes_plug_in_through_the_taxonomy_file(tmp_path):
    tax = _taxonomy(tmp_path, {
        "wall_ad": {"text": True},  # a flyposting model's class: on a wall, worth reading
        "facade_sign": {"signboard": True},  # a facade model's shop sign
        "rickshaw": {"family": "motor_vehicle", "privacy": "plate"},
        "person": {},  # no longer blurred
    })
    shipped = load_taxonomy()
    dets = _boxes(("wall_ad", (0, 0, 100, 100)), ("facade_sign", (60, 40, 740, 120)), ("rickshaw", (100, 200, 300, 300)),
                  ("person", (400, 100, 460, 300)))

    # zone anchor: the wall ad by its centre, as text is; the shipped taxonomy does not know it (bottom-centre)
    assert anchor_points(dets[:1], 200, 100, tax).tolist() == [[0.25, 0.5]]
    assert anchor_points(dets[:1], 200, 100, shipped).tolist() == [[0.25, 1.0]]

    # OCR: a photo with a wall ad, or a shop sign, is read whole
    assert PhotoText(OcrMode.AUTO, taxonomy=tax).regions(dets[:1]) is WHOLE
    assert PhotoText(OcrMode.AUTO, taxonomy=tax).regions(dets[1:2]) is WHOLE
    assert PhotoText(OcrMode.AUTO, taxonomy=shipped).regions(dets[:2]) is None

    # signboard: the text inside it is the shop's own
    texts = text_detections(np.array([[100, 50, 300, 100], [100, 300, 300, 340]]),
                            ["王记面馆 电话 0571-87654321", "开锁 13800138000"], [0.9, 0.9])
    assert label_texts(texts, signboards=dets[1:2], taxonomy=tax).data["text"].tolist() == ["开锁 13800138000"]
    assert len(label_texts(texts, signboards=dets[1:2], taxonomy=shipped)) == 2

    # privacy: the rickshaw's plate band is blurred, the person no longer
    regions = privacy_regions(dets, tax)
    assert regions.round().tolist() == [[140.0, 260.0, 260.0, 298.0]]
    assert len(privacy_regions(dets, shipped)) == 1  # the shipped taxonomy blurs the person's head only

    # tracking: a rickshaw re-detected as a car keeps its id (one family)
    tracker = Tracker(TrackingConfig(frame_rate=1.0), tax.families)
    ids = [tracker.update(_boxes((name, (100 + i, 200, 300 + i, 300))), T0 + timedelta(seconds=i)).tracker_id[0]
           for i, name in enumerate(["rickshaw", "rickshaw", "car", "car"])]
    assert ids[0] == -1 and len(set(ids[1:])) == 1 and ids[1] > 0
    alone = Tracker(TrackingConfig(frame_rate=1.0), shipped.families)
    ids = [alone.update(_boxes((name, (100 + i, 200, 300 + i, 300))), T0 + timedelta(seconds=i)).tracker_id[0]
           for i, name in enumerate(["rickshaw", "rickshaw", "car", "car"])]
    assert ids[1] != ids[3]  # a family of its own: the car is a new track


def test_settings_families_add_to_the_taxonomys():
    tracker = Tracker(TrackingConfig(frame_rate=1.0, families={"rickshaw": "motor_vehicle"}))
    seen = [tracker.update(_boxes((name, (100 + i, 200, 300 + i, 300))), T0 + timedelta(seconds=i)).tracker_id[0]
            for i, name in enumerate(["rickshaw", "rickshaw", "truck", "car"])]  # truck/car: the shipped family
    assert seen[0] == -1 and len(set(seen[1:])) == 1


@pytest.mark.parametrize(("classes", "message", "where"), [
    ({"person": {"privacy": "face"}}, r"classes.person.privacy: Input should be 'head' or 'plate'", "classes.person.privacy"),
    ({"poster": {"anchor": "top"}}, r"classes.poster.anchor: Input should be 'bottom_center' or 'center'", "classes.poster.anchor"),
    ({"poster": {"colour": "red"}}, r"classes.poster.colour: Extra inputs are not permitted", "classes.poster"),
    ({"car": {"family": ""}}, r"classes.car.family: String should have at least 1 character", "classes.car.family"),
])
def test_bad_roles_are_refused_by_the_loader_and_the_schema(tmp_path, classes, message, where):
    with pytest.raises(ConfigError, match=rf"taxonomy.yaml: {message}"):
        _taxonomy(tmp_path, classes)
    data = yaml.safe_load(DEFAULT_TAXONOMY_PATH.read_text(encoding="utf-8"))
    data["classes"].update(classes)
    schema = jsonschema.Draft202012Validator(file_schemas()["taxonomy"])
    assert [".".join(map(str, e.absolute_path)) for e in schema.iter_errors(data)] == [where]
