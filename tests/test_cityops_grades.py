"""Road grades: the same parked bus opens at once in a main-road zone and later in a lane zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml

from detect.config_io import ConfigError
from detect.frames import Frame
from detect.imageio import read_image
from detect.rules import PhotoRules
from detect.scenes import load_scene
from pipelines.cctv.service import Watcher
from benchmarks.media import PARKING_ZONE
from tests.cctv_helpers import cameras_file, make_intake, parked_clip, scene_for


def _zone(grade: str | None, **extra) -> dict:
    zone = {"id": "curb", "kind": "no_parking", "polygon": PARKING_ZONE, **extra}
    if grade:
        zone["grade"] = grade
    return zone


@pytest.mark.slow  # 13 s: a clip judged on two roads; the default suite's ~15-minute budget
def test_same_bus_opens_at_once_on_the_main_road_and_later_in_the_lane(tmp_path, bus_jpg, real_sample_dir, onnx_detector):
    grades = {"grades": {"main": {"name_zh": "主要道路（严禁）", "name_en": "Main road",
                                  "thresholds": {"illegal_parking": {"dwell_s": 0, "clear_s": 10, "severity": "serious"}}},
                         "lane": {"name_zh": "支路街巷（规范）", "name_en": "Lane", "types": ["illegal_parking"],
                                  "thresholds": {"illegal_parking": {"dwell_s": 20, "clear_s": 10}}}}}
    (tmp_path / "grades.yaml").write_text(yaml.safe_dump(grades, allow_unicode=True), encoding="utf-8")
    clip = parked_clip(tmp_path / "bus.mp4", bus_jpg, real_sample_dir, duration_s=40, arrive_s=4, leave_s=40)
    scene_for(tmp_path, "cam-main", real_sample_dir, zones=[_zone("main")])
    scene_for(tmp_path, "cam-lane", real_sample_dir, zones=[_zone("lane")])
    intake = make_intake(tmp_path / "data")
    cams = [{"id": cid, "url": "bus.mp4", "scene": f"{cid}.yaml"} for cid in ("cam-main", "cam-lane")]
    Watcher(cameras_file(tmp_path / "cameras.yaml", cams, grades="grades.yaml"), onnx_detector, intake, replay=True).run(poll_s=0.1)

    cases = {c.source_id: c for c in intake.store.list()}
    assert set(cases) == {"cam-main", "cam-lane"}
    main, lane = cases["cam-main"], cases["cam-lane"]
    assert timedelta(seconds=4) <= main.opened_at - clip.start <= timedelta(seconds=6)  # at first sight
    assert timedelta(seconds=24) <= lane.opened_at - clip.start <= timedelta(seconds=27)  # after the lane's 20 s
    assert main.first_seen_at == lane.first_seen_at
    assert (main.details["severity"], lane.details["severity"]) == ("serious", "general")  # the grade's, the type's


def test_shipped_grades_fold_into_zones_and_the_zone_own_thresholds_win(tmp_path):
    scene = {"camera_id": "cam-g", "zones": [
        _zone("lane", thresholds={"street_stall": {"dwell_s": 600}}) | {"kind": "no_vending", "id": "alley"},
        _zone("main") | {"id": "avenue", "kind": "no_vending"}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(scene), encoding="utf-8")
    alley, avenue = load_scene(tmp_path / "s.yaml").zones
    assert alley.thresholds["street_stall"].dwell_s == 600 and alley.thresholds["street_stall"].min_count == 3
    assert "nonmotor_parking" not in alley.types and "street_stall" in alley.types
    assert avenue.thresholds["street_stall"].dwell_s == 0 and avenue.types is None

    scene["zones"][1]["grade"] = "motorway"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(scene), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"s\.yaml: zones\.1\.grade: unknown grade 'motorway' \(known: lane, main, secondary\)"):
        load_scene(tmp_path / "s.yaml")


def test_minimum_count_of_a_grade_holds_back_a_lone_object(tmp_path, bus_jpg, onnx_detector):
    """bus.jpg (real photo): one bus in a zone that needs two vehicles is not a case; with one it is."""
    image = read_image(bus_jpg)
    frame = Frame(image=image, source_id="bus", ts=datetime(2025, 3, 14, 2, 0, tzinfo=UTC))
    detections = onnx_detector.detect([image])[0]
    whole = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    grades = {"grades": {"strict": {"name_zh": "严", "name_en": "strict", "thresholds": {"illegal_parking": {"min_count": 1}}},
                         "lax": {"name_zh": "宽", "name_en": "lax", "thresholds": {"illegal_parking": {"min_count": 2}}}}}
    (tmp_path / "grades.yaml").write_text(yaml.safe_dump(grades, allow_unicode=True), encoding="utf-8")
    from detect.grades import load_grades

    found = {}
    for grade in ("strict", "lax"):
        (tmp_path / f"{grade}.yaml").write_text(yaml.safe_dump(
            {"camera_id": "bus", "zones": [{"id": "road", "kind": "no_parking", "polygon": whole, "grade": grade}]}), encoding="utf-8")
        scene = load_scene(tmp_path / f"{grade}.yaml", grades=load_grades(tmp_path / "grades.yaml"))
        found[grade] = [e.violation_type for e in PhotoRules().process(frame, detections, scene=scene)]
    assert found == {"strict": ["illegal_parking"], "lax": []}


def test_a_photo_in_a_graded_grid_cell_is_judged_by_the_cell_grade(tmp_path, bus_jpg):
    """Photos judged as a whole get the grade of their 单元网格 cell: in a pedestrian-street cell whose grade
    enforces stalls only, the bus photo is no parking case; in an ungraded cell it is. A cell naming an
    unknown grade is refused with file and field."""
    import json

    from pipelines.grid import load_grid
    from pipelines.triage import TriageSettings, run_triage
    from tests.triage_helpers import phone_photo

    def ring(x1, y1, x2, y2):
        return [[[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]]

    grades = {"grades": {"pedestrian": {"name_zh": "步行街", "name_en": "Pedestrian street", "types": ["street_stall"]}}}
    (tmp_path / "grades.yaml").write_text(yaml.safe_dump(grades, allow_unicode=True), encoding="utf-8")
    cells = {"type": "FeatureCollection", "grades": "grades.yaml", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": ring(120.150, 30.270, 120.160, 30.280)},
         "properties": {"id": "330102001001", "grade": "pedestrian"}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": ring(120.160, 30.270, 120.170, 30.280)},
         "properties": {"id": "330102001002"}}]}
    grid = tmp_path / "grid.geojson"
    grid.write_text(json.dumps(cells), encoding="utf-8")
    (tmp_path / "in").mkdir()
    taken = datetime(2026, 11, 20, 10, 0)
    phone_photo(bus_jpg, tmp_path / "in" / "walk.jpg", taken=taken, gps=(30.275, 120.155))
    phone_photo(bus_jpg, tmp_path / "in" / "road.jpg", taken=taken, gps=(30.275, 120.165))
    settings = TriageSettings(out=tmp_path / "out", grid=grid, cases=False, ocr="off", verifier="none")
    run_triage([tmp_path / "in"], settings, show_progress=False)
    records = {r["source"].rsplit("/", 1)[-1]: r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    assert records["walk.jpg"]["grid_cell"] == "330102001001" and records["walk.jpg"]["findings"] == []
    assert records["road.jpg"]["grid_cell"] == "330102001002"
    assert [f["type"] for f in records["road.jpg"]["findings"]] == ["illegal_parking"]

    cells["features"][1]["properties"]["grade"] = "motorway"
    grid.write_text(json.dumps(cells), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"grid.geojson: features\.1\.properties\.grade: unknown grade 'motorway' \(known: pedestrian\)"):
        load_grid(grid)


def test_a_grade_sets_the_severity_of_what_opens_in_its_zones_and_a_zone_may_set_its_own(tmp_path, bus_jpg, onnx_detector):
    """bus.jpg (real photo): the parked bus opens as general in an ungraded zone, as major on a main road (shipped
    grades) and as serious in a main-road zone that sets its own severity; a severity that is no level is refused."""
    image = read_image(bus_jpg)
    frame = Frame(image=image, source_id="bus", ts=datetime(2025, 3, 14, 2, 0, tzinfo=UTC))
    detections = onnx_detector.detect([image])[0]
    whole = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    zones = {"none": {}, "main": {"grade": "main"},
             "main-own": {"grade": "main", "thresholds": {"illegal_parking": {"severity": "serious"}}}}
    found = {}
    for name, extra in zones.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(
            {"camera_id": "bus", "zones": [{"id": "road", "kind": "no_parking", "polygon": whole, **extra}]}), encoding="utf-8")
        events = PhotoRules().process(frame, detections, scene=load_scene(tmp_path / f"{name}.yaml"))
        found[name] = {e.violation_type: e.severity for e in events}
    assert found == {"none": {"illegal_parking": "general"}, "main": {"illegal_parking": "major"},
                     "main-own": {"illegal_parking": "serious"}}

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"camera_id": "bus", "zones": [
        {"id": "road", "kind": "no_parking", "polygon": whole, "thresholds": {"illegal_parking": {"severity": "awful"}}}]}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*severity"):
        load_scene(tmp_path / "bad.yaml")
