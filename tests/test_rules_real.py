"""The COCO model plus the rules on a real photo: the bus in bus.jpg stands in a drawn no-parking zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cv2
import pytest

from detect.config_io import validate_model
from detect.events import EventKind
from detect.frames import Frame
from detect.rules import CameraRules, PhotoRules
from detect.scenes import Scene
from detect.tracking import TrackingConfig

T0 = datetime(2024, 6, 3, 2, 0, tzinfo=UTC)  # Monday 10:00 in Asia/Shanghai


def bus_scene(polygon) -> Scene:
    zone = {"id": "bus-lane", "kind": "no_parking", "polygon": polygon, "thresholds": {"illegal_parking": {"dwell_s": 0}}}
    return validate_model(Scene, {"camera_id": "bus-cam", "zones": [zone]}, "bus-scene")


ROAD = [[0, 0.6], [1, 0.6], [1, 0.75], [0, 0.75]]  # the strip of road under the bus
SKY = [[0, 0], [1, 0], [1, 0.2], [0, 0.2]]


@pytest.fixture(scope="module")
def bus_frame_and_detections(bus_jpg, onnx_detector):
    image = cv2.imread(str(bus_jpg))
    return image, onnx_detector.detect([image])[0]


def test_camera_rules_find_the_bus_in_a_no_parking_zone_with_zero_dwell(bus_frame_and_detections):
    image, dets = bus_frame_and_detections
    rules = CameraRules(bus_scene(ROAD), tracking=TrackingConfig(frame_rate=1.0))
    events = []
    for i in range(3):
        events += rules.process(Frame(image=image, source_id="bus-cam", ts=T0 + timedelta(seconds=i)), dets)
    # the tracker confirms the bus on its second sighting; with dwell 0 it opens right then, once
    assert [(e.kind, e.violation_type, e.zone_id, e.at) for e in events] == [
        (EventKind.OPENED, "illegal_parking", "bus-lane", T0 + timedelta(seconds=1))
    ]
    ev = events[0]
    assert ev.detections.data["class_name"].tolist() == ["bus"]
    x1, y1, x2, y2 = ev.detections.xyxy[0]
    assert x2 - x1 > 0.8 * image.shape[1] and 0.6 < y2 / image.shape[0] < 0.75  # the whole bus, standing in the zone
    assert ev.score > 0.5 and ev.thresholds["dwell_s"] == 0.0


def test_photo_rules_find_the_bus_and_nothing_outside_the_zone(bus_frame_and_detections):
    image, dets = bus_frame_and_detections
    frame = Frame(image=image, source_id="bus-photo", ts=T0)
    events = PhotoRules().process(frame, dets, scene=bus_scene(ROAD))
    assert [(e.kind, e.violation_type, e.detections.data["class_name"].tolist()) for e in events] == [
        (EventKind.OPENED, "illegal_parking", ["bus"])
    ]
    assert PhotoRules().process(frame, dets, scene=bus_scene(SKY)) == []
