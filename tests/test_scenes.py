"""Scene and city-zone files: the example loads, schedules work in local time, bad files are refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import yaml

from detect.cityzones import load_city_zones
from detect.config_io import ConfigError
from detect.frames import GeoPoint
from detect.scenes import anchor_points, load_scene

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "scene-example.yaml"


def test_documented_example_scene_loads():
    scene = load_scene(EXAMPLE)
    assert scene.camera_id == "hz-xihu-0417"
    assert [z.kind.value for z in scene.zones] == ["no_parking", "sidewalk", "vending_permitted", "frontage", "no_posting", "no_parking", "ignore"]
    assert scene.reference_snapshot == str(EXAMPLE.parent / "hz-xihu-0417-reference.jpg")
    assert scene.zones[0].thresholds["illegal_parking"].dwell_s == 180


def _local(y, mo, d, h, mi, scene):
    return scene.local_time(datetime(y, mo, d, h, mi, tzinfo=scene.tz).astimezone(UTC))


def test_schedules_by_weekday_and_over_midnight_in_camera_time():
    scene = load_scene(EXAMPLE)
    curb, bus_night = scene.zones[0], scene.zones[5]
    # 2024-06-07 is a Friday
    assert curb.active(_local(2024, 6, 7, 7, 0, scene))
    assert not curb.active(_local(2024, 6, 7, 21, 0, scene))
    assert not curb.active(_local(2024, 6, 8, 8, 30, scene))  # Saturday starts at 09:00
    assert curb.active(_local(2024, 6, 8, 17, 59, scene))
    assert bus_night.active(_local(2024, 6, 7, 23, 0, scene))
    assert bus_night.active(_local(2024, 6, 8, 5, 59, scene))
    assert not bus_night.active(_local(2024, 6, 8, 6, 0, scene))
    assert not bus_night.active(_local(2024, 6, 8, 12, 0, scene))


def test_only_friday_night_window_reaches_into_saturday(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump({"camera_id": "c", "zones": [{"id": "z", "kind": "no_parking", "polygon": [[0, 0], [1, 0], [1, 1]],
                                                      "schedule": [{"days": ["fri"], "start": "22:00", "end": "02:00"}]}]})
    )
    zone = load_scene(path).zones[0]
    scene = load_scene(path)
    assert zone.active(_local(2024, 6, 8, 1, 0, scene))  # Saturday 01:00, window started Friday
    assert not zone.active(_local(2024, 6, 9, 1, 0, scene))  # Sunday 01:00: Saturday has no window
    assert not zone.active(_local(2024, 6, 7, 1, 0, scene))  # Friday 01:00: Thursday has none


def test_unquoted_yaml_times_read_as_clock_times(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text("camera_id: c\nzones:\n- id: z\n  kind: sidewalk\n  polygon: [[0,0],[1,0],[1,1]]\n  schedule:\n  - {start: 07:30, end: 21:00}\n")
    window = load_scene(path).zones[0].schedule[0]
    assert (window.start, window.end) == (7 * 60 + 30, 21 * 60)


def test_bottom_centre_for_objects_and_centre_for_text():
    dets = sv.Detections(xyxy=np.array([[0, 0, 100, 100], [0, 0, 100, 100]], dtype=float),
                         class_id=np.array([0, 1]), data={"class_name": np.array(["car", "small_ad_text"])})
    assert anchor_points(dets, 200, 100).tolist() == [[0.25, 1.0], [0.25, 0.5]]


BASE = {"camera_id": "cam", "zones": [{"id": "z", "kind": "no_parking", "polygon": [[0, 0], [1, 0], [1, 1]]}]}


@pytest.mark.parametrize(
    ("zone_patch", "message"),
    [
        ({"polygon": [[0, 0], [1, 1]]}, r"zones.0.polygon: 多边形至少需要 3 个点，现有 2 个 — polygon needs at least 3 points, got 2"),
        ({"polygon": [[0, 0], [1, 1], [1, 0], [0, 1]]}, r"zones.0.polygon: 多边形自相交或无效（.*） — polygon is self-intersecting"),
        ({"polygon": [[0, 0], [1.2, 0], [1, 1]]}, r"zones.0.polygon: 点 1 \[1.2, 0(.0)?\] 超出 \[0, 1\] 范围（归一化图像坐标） — point 1 \[1.2, 0(.0)?\] is outside \[0, 1\]"),
        ({"kind": "no_smoking"}, r"zones.0.kind: Input should be 'no_parking', 'sidewalk'"),
        ({"schedule": [{"start": "21:00", "end": "21:00"}]}, r"zones.0.schedule.0: Value error, bad time range: start equals end"),
        ({"schedule": [{"start": "25:00", "end": "21:00"}]}, r"zones.0.schedule.0.start: Value error, bad time '25:00'"),
        ({"schedule": [{"days": ["someday"], "start": "07:00", "end": "21:00"}]}, r"zones.0.schedule.0.days.0: Input should be 'mon'"),
        ({"types": ["illegal_parkin"]}, r"zones.0.types.0: unknown violation type 'illegal_parkin'"),
        ({"thresholds": {"street_stal": {"dwell_s": 5}}}, r"zones.0.thresholds.street_stal: unknown violation type 'street_stal'"),
        ({"thresholds": {"street_stall": {"dwell_s": -5}}}, r"zones.0.thresholds.street_stall.dwell_s: Input should be greater than or equal to 0"),
    ],
)
def test_bad_scene_names_file_field_and_reason(tmp_path: Path, zone_patch, message):
    data = json.loads(json.dumps(BASE))
    data["zones"][0].update(zone_patch)
    path = tmp_path / "cam.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=rf"cam.yaml: {message}"):
        load_scene(path)


def test_bad_timezone_and_duplicate_zone_ids(tmp_path: Path):
    path = tmp_path / "cam.yaml"
    path.write_text(yaml.safe_dump({**BASE, "timezone": "Mars/Olympus"}))
    with pytest.raises(ConfigError, match=r"cam.yaml: timezone: Value error, unknown time zone 'Mars/Olympus'"):
        load_scene(path)
    path.write_text(yaml.safe_dump({**BASE, "zones": [*BASE["zones"], {**BASE["zones"][0], "name": "南门"}]}))
    with pytest.raises(ConfigError, match=r"cam.yaml: zones.1.id: 区域编号 'z' 重复：zones.0 与 zones.1（南门）.* — "
                                          r"zone id 'z' is used twice: by zones.0 and zones.1 \(南门\)"):
        load_scene(path)


def _feature(zone_id, kind, ring, **props):
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"id": zone_id, "kind": kind, **props}}


def test_city_geojson_zones_by_gps(tmp_path: Path):
    street = [[120.10, 30.20], [120.20, 30.20], [120.20, 30.30], [120.10, 30.30], [120.10, 30.20]]
    spot = [[120.14, 30.24], [120.16, 30.24], [120.16, 30.26], [120.14, 30.26], [120.14, 30.24]]
    path = tmp_path / "zones.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "timezone": "Asia/Shanghai", "features": [
        _feature("wensan-road", "no_parking", street), _feature("market", "vending_permitted", spot, schedule=[{"start": "18:00", "end": "22:00"}])]}))
    zones = load_city_zones(path)
    assert [z.id for z in zones.at(GeoPoint(lat=30.25, lon=120.15))] == ["market", "wensan-road"]
    assert [z.id for z in zones.at(GeoPoint(lat=30.21, lon=120.11))] == ["wensan-road"]
    assert zones.at(GeoPoint(lat=31.0, lon=121.0)) == []


def test_city_zones_of_one_id_are_refused_naming_both(tmp_path: Path):
    """The first zone with an id won and a second drawn with the same id was silently never used; the file is refused
    at the second's id, naming both features by position and name, as a scene's zones are."""
    ring = [[120.10, 30.20], [120.20, 30.20], [120.20, 30.30], [120.10, 30.20]]
    path = tmp_path / "zones.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        _feature("gate", "no_parking", ring, name="北门"), _feature("market", "no_vending", ring),
        _feature("gate", "sidewalk", ring, name="南门")]}), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_city_zones(path)
    assert str(err.value) == (
        f"{path}: features.2.properties.id: 区域编号 'gate' 重复：features.0.properties（北门） 与 features.2.properties（南门）；"
        "案件按编号找区域，其中一个将永远用不上，请为每个区域另起编号 — zone id 'gate' is used twice: by features.0.properties (北门) "
        "and features.2.properties (南门); cases and rules find a zone by its id, so one of the two would never be used: "
        "give each zone an id of its own")
    assert err.value.field == ("features", "2", "properties", "id")


@pytest.mark.parametrize(
    ("geometry", "props", "message"),
    [
        ({"type": "Point", "coordinates": [120, 30]}, {}, r"features.0.geometry: 几何类型应为 Polygon 或 MultiPolygon，现为 Point — geometry must be a Polygon or MultiPolygon, got Point"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]}, {}, r"features.0.geometry: 多边形自相交或无效（.*） — polygon is self-intersecting"),
        ({"type": "Polygon", "coordinates": [[[200, 0], [201, 0], [201, 1], [200, 0]]]}, {}, r"features.0.geometry: 坐标超出经度 \[-180, 180\] / 纬度 \[-90, 90\].*应先写经度后写纬度） — coordinates outside lon"),
        ({"type": "Polygon", "coordinates": []}, {}, r"features.0.geometry: 多边形面积为零（各点共线或重复） — polygon has zero area"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}, {"types": ["flyposter"]}, r"features.0.properties.types.0: unknown violation type 'flyposter'"),
    ],
)
def test_bad_city_zones_name_file_feature_and_reason(tmp_path: Path, geometry, props, message):
    path = tmp_path / "zones.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": geometry, "properties": {"id": "a", "kind": "no_parking", **props}}]}))
    with pytest.raises(ConfigError, match=rf"zones.geojson: {message}"):
        load_city_zones(path)
