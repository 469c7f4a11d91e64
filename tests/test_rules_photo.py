"""Photo rules on scripted detections (no model): no dwell, map zones by GPS, whole image otherwise."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from detect.cityzones import load_city_zones
from detect.events import EventKind
from detect.frames import Frame, GeoPoint
from detect.rules import PhotoRules

IMAGE = np.zeros((360, 640, 3), dtype=np.uint8)
DAY = datetime(2024, 6, 3, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai
EVENING = datetime(2024, 6, 3, 11, 0, tzinfo=UTC)  # 19:00
NIGHT = datetime(2024, 6, 3, 15, 0, tzinfo=UTC)  # 23:00
CAR = ("car", (100, 200, 300, 300))
STALL = [("umbrella", (400, 100, 520, 180)), ("dining table", (410, 180, 510, 240)), ("person", (500, 130, 540, 245))]


def dets(*objects) -> sv.Detections:
    return sv.Detections(
        xyxy=np.array([b for _, b in objects], dtype=float),
        confidence=np.full(len(objects), 0.8),
        class_id=np.zeros(len(objects), dtype=int),
        data={"class_name": np.array([n for n, _ in objects])},
    )


def photo(ts, geo=None) -> Frame:
    return Frame(image=IMAGE, source_id="sha256-abc", ts=ts, geo=geo)


def test_photo_without_zones_opens_every_candidate_at_once():
    events = PhotoRules().process(photo(DAY), dets(CAR, *STALL, ("person", (10, 10, 40, 90))))
    assert sorted((e.kind, e.violation_type, e.zone_id, e.object_count) for e in events) == [
        (EventKind.OPENED, "illegal_parking", "image", 1),
        (EventKind.OPENED, "street_stall", "image", 2),
    ]
    assert all(e.dwell_s == 0 and e.opened_at == DAY for e in events)
    # deterministic ids: the same photo judged twice gives the same violations
    assert [e.violation_id for e in events] == [e.violation_id for e in PhotoRules().process(photo(DAY), dets(CAR, *STALL))]


def test_low_confidence_and_tiny_boxes_are_not_evidence():
    weak = dets(CAR)
    weak.confidence = np.array([0.2])
    assert PhotoRules().process(photo(DAY), weak) == []
    assert PhotoRules().process(photo(DAY), dets(("car", (10, 10, 15, 14)))) == []


@pytest.fixture
def city_zones(tmp_path: Path):
    def ring(x1, y1, x2, y2):
        return [[[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]]

    features = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": ring(120.10, 30.20, 120.20, 30.30)},
         "properties": {"id": "wensan-road", "kind": "no_parking", "schedule": [{"start": "07:00", "end": "21:00"}]}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": ring(120.14, 30.24, 120.16, 30.26)},
         "properties": {"id": "night-market", "kind": "vending_permitted", "schedule": [{"start": "18:00", "end": "22:00"}]}},
    ]
    path = tmp_path / "zones.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "timezone": "Asia/Shanghai", "features": features}))
    return load_city_zones(path)


def test_map_zones_at_the_photo_gps_point(city_zones):
    rules = PhotoRules(city_zones=city_zones)
    on_road = GeoPoint(lat=30.21, lon=120.11)
    in_market = GeoPoint(lat=30.25, lon=120.15)
    elsewhere = GeoPoint(lat=31.0, lon=121.0)
    got = [(e.violation_type, e.zone_id) for e in rules.process(photo(DAY, on_road), dets(CAR))]
    assert got == [("illegal_parking", "wensan-road")]
    assert rules.process(photo(NIGHT, on_road), dets(CAR)) == []  # outside enforcement hours
    assert rules.process(photo(EVENING, in_market), dets(*STALL)) == []  # permitted vending hours
    got = [(e.violation_type, e.zone_id) for e in rules.process(photo(NIGHT, in_market), dets(*STALL))]
    assert got == [("street_stall", "night-market")]  # the market spot after hours
    got = [(e.violation_type, e.zone_id) for e in rules.process(photo(DAY, elsewhere), dets(CAR))]
    assert got == [("illegal_parking", "image")]  # no map zone there: the photo is judged as a whole
