"""Cameras and scenes through the API, ops endpoints, tokens from the CLI, closed CORS."""

from __future__ import annotations

import io
from contextlib import contextmanager
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from pipelines.cctv.service import Watcher
from streetwatch.cli import app as cli
from tests.cctv_helpers import make_intake, parked_clip
from tests.api_helpers import auth, make_app, service, settings_for, users_cli, write_cameras  # noqa: F401  (fixture)


def test_cameras_list_health_from_the_watchers_events(service):
    app, client, tokens, cams = service
    records = [
        {"event": "camera_status", "camera_id": "cam-01", "status": "running", "detail": "", "at": "2025-03-14T02:00:00+00:00"},
        {"event": "camera_health", "camera_id": "cam-01", "kind": "frozen", "active": True, "at": "2025-03-14T02:05:00+00:00", "detail": "same picture 60 s"},
        {"event": "camera_health", "camera_id": "cam-01", "kind": "covered", "active": True, "at": "2025-03-14T02:06:00+00:00", "detail": ""},
        {"event": "camera_status", "camera_id": "cam-02", "status": "offline", "detail": "connection refused", "at": "2025-03-14T02:01:00+00:00"},
    ]
    cams["events"].write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    h = auth(tokens["inspector"])
    listed = {c["id"]: c for c in client.get("/api/v1/cameras", headers=h).json()}
    assert listed["cam-01"]["health"]["status"] == "running"
    assert [c["kind"] for c in listed["cam-01"]["health"]["conditions"]] == ["covered", "frozen"]
    assert listed["cam-01"]["zones"] == 7 and listed["cam-01"]["has_snapshot"] is True
    assert listed["cam-02"]["health"] == {"status": "offline", "detail": "connection refused", "since": "2025-03-14T02:01:00+00:00",
                                          "conditions": []}
    with cams["events"].open("a", encoding="utf-8") as fh:  # appended later: read from where the last read stopped
        fh.write(json.dumps({"event": "camera_health", "camera_id": "cam-01", "kind": "frozen", "active": False,
                             "at": "2025-03-14T02:09:00+00:00", "detail": "back to normal"}) + "\n")
        fh.write('{"event": "camera_status", "camera_id": "cam-01", "sta')  # a line still being written
    listed = {c["id"]: c for c in client.get("/api/v1/cameras", headers=h).json()}
    assert [c["kind"] for c in listed["cam-01"]["health"]["conditions"]] == ["covered"]


@contextmanager
def watching(cams: dict, detector, data: Path):
    """A watcher of the fixture's cameras file running in a thread, writing its records to the events file as
    `watch --events` does (what the service's camera pages read); stopped and joined on leaving."""
    with cams["events"].open("a", encoding="utf-8") as sink:
        def write(record: dict) -> None:
            sink.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            sink.flush()

        watcher = Watcher(cams["file"], detector, make_intake(data), on_record=write)
        runner = threading.Thread(target=lambda: watcher.run(poll_s=0.1))
        runner.start()
        try:
            yield watcher
        finally:
            watcher.stop()
            runner.join(60)
    assert not runner.is_alive()


def test_a_cameras_health_is_that_of_the_watcher_running_it(service, tmp_path, bus_jpg, real_sample_dir, onnx_detector):
    """A reader's health conditions stayed active in GET /cameras after it stopped and through the next run: a camera
    offline in one run showed 在线 online · 离线 offline while the next run's frames flowed. A watcher records `starting`
    for each camera it starts, and a status that starts or ends a reader ends the camera's conditions."""
    app, client, tokens, cams = service
    h = auth(tokens["inspector"])

    def health() -> dict[str, dict]:
        return {c["id"]: c["health"] for c in client.get("/api/v1/cameras", headers=h).json()}

    def watch(until) -> dict[str, dict]:
        """Run a watcher writing its records to the events file, as `watch --events` does, until `until(records)`;
        the health GET /cameras gives then."""
        with watching(cams, onnx_detector, tmp_path / "data") as watcher:
            deadline = time.monotonic() + 60
            while not until(list(watcher.records)):
                assert time.monotonic() < deadline, "the watcher's records never got there"
                time.sleep(0.05)
            return health()

    def offline(records: list[dict], camera_id: str) -> bool:
        return any(r.get("kind") == "offline" and r["camera_id"] == camera_id for r in records)

    cameras = yaml.safe_load(cams["file"].read_text(encoding="utf-8"))  # both cameras' RTSP servers are down
    for cam in cameras["cameras"]:
        cam["backoff"] = {"initial_s": 0.05, "max_s": 0.1, "offline_after": 2}
    cams["file"].write_text(yaml.safe_dump(cameras), encoding="utf-8")
    seen = watch(lambda records: offline(records, "cam-01") and offline(records, "cam-02"))
    assert {c["kind"] for c in seen["cam-01"]["conditions"]} == {"reconnecting", "offline"}
    stopped = health()["cam-01"]
    assert stopped["status"] == "stopped" and stopped["conditions"] == []
    lines = cams["events"].read_text(encoding="utf-8").splitlines(keepends=True)  # a watcher killed (-9, a power cut)
    cams["events"].write_text("".join(line for line in lines if '"stopped"' not in line), encoding="utf-8")  # says nothing
    assert {c["kind"] for c in health()["cam-01"]["conditions"]} == {"reconnecting", "offline"}

    cameras["cameras"][0]["url"] = str(parked_clip(tmp_path / "cam-01.mp4", bus_jpg, real_sample_dir, duration_s=20).path)
    cams["file"].write_text(yaml.safe_dump(cameras), encoding="utf-8")  # cam-01's stream is back, cam-02's is not
    seen = watch(lambda records: offline(records, "cam-02") and any(
        r["camera_id"] == "cam-01" and r.get("status") == "online" for r in records))
    # the reader's own conditions only: the fixture's reference snapshot is bus.jpg, not the clip's street (view_lost)
    assert seen["cam-01"]["status"] == "online" and {c["kind"] for c in seen["cam-01"]["conditions"]} <= {"view_lost"}
    assert {c["kind"] for c in seen["cam-02"]["conditions"]} == {"reconnecting", "offline"}


def test_a_replaced_readers_last_words_are_not_the_cameras(service, tmp_path, onnx_detector):
    """A reload that reconfigures a camera starts a new reader and stops the old one, whose `stopped` (and an `offline`
    its blocked read ends in) is written from its own thread, often after the new reader went online: recorded, the
    camera showed 已停止 stopped, its conditions cleared, while its frames flowed. Only the camera's current reader
    speaks for it; a camera removed from the file is still recorded stopped."""
    from datetime import UTC, datetime

    from pipelines.cctv.health import HealthEvent, HealthKind
    from pipelines.cctv.reader import Status

    _, _, _, cams = service
    watcher = Watcher(cams["file"], onnx_detector, make_intake(tmp_path / "data"))
    watcher._apply(watcher._load(), start=False)
    old = watcher.runtimes["cam-01"]
    watcher.runtimes["cam-01"] = new = watcher._runtime(old.camera)  # as a reload that reconfigures it does
    before = len(watcher.records)
    old.reader.hooks.health(HealthEvent("cam-01", HealthKind.OFFLINE, True, datetime.now(UTC), "read timed out"))
    old.reader.hooks.status("cam-01", Status.STOPPED, "")
    new.reader.hooks.status("cam-01", Status.ONLINE, "")
    assert [(r.get("status"), r.get("kind")) for r in list(watcher.records)[before:]] == [("online", None)]
    watcher.runtimes.pop("cam-01")  # removed from the cameras file: its reader's last words are the camera's
    new.reader.hooks.status("cam-01", Status.STOPPED, "")
    assert list(watcher.records)[-1]["status"] == "stopped"


def test_a_scene_broken_mid_run_keeps_the_camera_on_its_last_valid_scene(service, tmp_path, bus_jpg, real_sample_dir,
                                                                         onnx_detector):
    """A hand-edited scene file that turned invalid stopped its running camera at the reload, while a broken cameras file's
    reload is refused with every camera kept. The camera keeps its last valid scene now, the refusal (file, field, reason)
    is its config_refused health condition in GET /cameras, and the scene is taken once it is fixed."""
    app, client, tokens, cams = service
    h = auth(tokens["inspector"])
    clip = parked_clip(tmp_path / "cam-01.mp4", bus_jpg, real_sample_dir, duration_s=60)
    cameras = yaml.safe_load(cams["file"].read_text(encoding="utf-8"))
    cameras["cameras"][0]["url"] = str(clip.path)  # a file played at its own pace, as a live camera
    cameras["cameras"][1]["enabled"] = False
    cams["file"].write_text(yaml.safe_dump(cameras), encoding="utf-8")
    valid = cams["scene"].read_text(encoding="utf-8")
    assert "grade: main" in valid

    def until(condition) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, "not reached in time"
            time.sleep(0.05)

    def analysed() -> float:
        return watcher.metrics.value("streetwatch_cctv_frames_analysed_total", camera="cam-01")

    def refusals(active: bool) -> list[dict]:
        return [r for r in watcher.records if r.get("kind") == "config_refused" and r["active"] is active]

    def health() -> dict:
        return {c["id"]: c["health"] for c in client.get("/api/v1/cameras", headers=h).json()}["cam-01"]

    with watching(cams, onnx_detector, tmp_path / "data") as watcher:
        until(lambda: analysed() > 0)
        before = watcher.runtimes["cam-01"]
        cams["scene"].write_text(valid.replace("grade: main", "grade: mian"), encoding="utf-8")
        until(lambda: refusals(True))
        assert watcher.runtimes["cam-01"] is before and before.reader.is_alive()
        seen = analysed()
        until(lambda: analysed() > seen)  # still judged, on the scene it had
        [condition] = [c for c in health()["conditions"] if c["kind"] != "view_lost"]  # its reference is bus.jpg, not the clip
        assert condition["kind"] == "config_refused" and health()["status"] == "online"
        assert f"{cams['file']}: cameras.0.scene: scene refused: {cams['scene']}: zones.1.grade: unknown grade 'mian'" \
            in condition["detail"]
        assert watcher.summary()["cameras"]["cam-01"]["config_refused"] == condition["detail"]

        cams["scene"].write_text(valid.replace("grade: main", "grade: secondary"), encoding="utf-8")  # fixed
        until(lambda: refusals(False) and watcher.runtimes["cam-01"] is not before)
        assert watcher.runtimes["cam-01"].camera.scene.zones[1].grade == "secondary" and not watcher.kept
        assert [c["kind"] for c in health()["conditions"] if c["kind"] != "view_lost"] == []


def test_scene_get_put_validates_like_a_scene_file(service):
    app, client, tokens, cams = service
    admin, reviewer = auth(tokens["admin"]), auth(tokens["reviewer"])
    scene = client.get("/api/v1/cameras/cam-01/scene", headers=reviewer).json()
    assert scene["camera_id"] == "cam-01" and scene["zones"][0]["schedule"][0]["start"] == "07:00"

    scene["zones"][0]["polygon"] = [[0.0, 0.6], [0.5, 0.55], [0.6, 1.0], [0.0, 1.0]]
    scene["zones"].append({"id": "new-stall-zone", "kind": "no_vending", "polygon": [[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]]})
    saved = client.put("/api/v1/cameras/cam-01/scene", headers=admin, json=scene)
    assert saved.status_code == 200, saved.text
    on_disk = yaml.safe_load(cams["scene"].read_text(encoding="utf-8"))
    assert on_disk["zones"][-1]["id"] == "new-stall-zone" and on_disk["zones"][0]["schedule"][0]["start"] == "07:00"

    before = cams["scene"].read_bytes()
    bad_cases = [
        ({**scene, "zones": [{**scene["zones"][0], "polygon": [[0, 0], [1, 1]]}]},  # why, in Chinese first, on the cameras page
         "zones.0.polygon: 多边形至少需要 3 个点，现有 2 个 — polygon needs at least 3 points, got 2"),
        ({**scene, "zones": [{**scene["zones"][0], "polygon": [[0, 0], [1, 1], [1, 0], [0, 1]]}]},
         "zones.0.polygon: 多边形自相交或无效（自相交，位于 0.5 0.5） — polygon is self-intersecting or invalid (Self-intersection[0.5 0.5])"),
        ({**scene, "zones": [{**scene["zones"][0], "polygon": [[0, 0], [1.5, 0], [1, 1]]}]},
         "zones.0.polygon: 点 1 [1.5, 0.0] 超出 [0, 1] 范围（归一化图像坐标） — point 1 [1.5, 0.0] is outside [0, 1]"),
        ({**scene, "zones": [{**scene["zones"][0], "types": ["ufo_landing"]}]}, "unknown violation type"),
        ({**scene, "camera_id": "cam-02"}, "camera_id"),
        ({**scene, "reference_snapshot": "/etc/passwd"}, "reference_snapshot"),
        ({**scene, "surprise": 1}, "surprise"),
    ]
    for body, words in bad_cases:
        refused = client.put("/api/v1/cameras/cam-01/scene", headers=admin, json=body)
        assert refused.status_code == 422 and words in refused.json()["detail"], refused.text
    assert cams["scene"].read_bytes() == before  # a refused scene never touches the file
    assert client.put("/api/v1/cameras/cam-01/scene", headers=reviewer, json=scene).status_code == 403
    assert client.put("/api/v1/cameras/../../x/scene", headers=admin, json=scene).status_code == 404
    assert client.get("/api/v1/cameras/scene-schema", headers=reviewer).json()["title"] == "Scene"


def test_a_scene_check_the_model_cannot_make_names_its_field_as_the_model_does(service):
    """What the scene model checks (a polygon) was refused 422 `validation-error` with `errors[].loc` naming the field,
    what it cannot (a violation type the taxonomy does not know, a road grade, the camera's id, the reference image)
    422 `invalid-config` with the detail alone (`scene of camera cam-01: zones.7: unknown violation type ...`), so a
    client found the field only by reading the words. Each is refused as the model's refusals are."""
    app, client, tokens, cams = service
    admin = auth(tokens["admin"])
    scene = client.get("/api/v1/cameras/cam-01/scene", headers=admin).json()
    added, n = {"id": "stalls", "kind": "no_vending", "polygon": [[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]]}, str(len(scene["zones"]))
    cases = [
        ({**scene, "zones": [*scene["zones"], {**added, "types": ["street_stall", "ufo_landing"]}]},
         ["body", "zones", n, "types", "1"], "unknown violation type 'ufo_landing' (known: "),
        ({**scene, "zones": [*scene["zones"], {**added, "thresholds": {"ufo_landing": {"dwell_s": 5}}}]},
         ["body", "zones", n, "thresholds", "ufo_landing"], "unknown violation type 'ufo_landing' (known: "),
        ({**scene, "zones": [scene["zones"][0], {**scene["zones"][1], "grade": "mian"}]},
         ["body", "zones", "1", "grade"], "unknown grade 'mian' (known: lane, main, secondary)"),
        ({**scene, "camera_id": "cam-02"}, ["body", "camera_id"], "is 'cam-02', must be 'cam-01'"),
        ({**scene, "reference_snapshot": "/etc/passwd"}, ["body", "reference_snapshot"], "cannot be changed through the API"),
        ({**scene, "zones": [{**scene["zones"][0], "polygon": [[0, 0], [1, 1]]}]}, ["body", "zones", "0", "polygon"], "多边形"),
        ({**scene, "zones": [*scene["zones"], added, {**added, "name": "东侧"}]},  # the second of one id was never used
         ["body", "zones", str(len(scene["zones"]) + 1), "id"], f"区域编号 'stalls' 重复：zones.{n} 与 zones.{int(n) + 1}（东侧）"),
    ]
    before = cams["scene"].read_bytes()
    for body, loc, msg in cases:
        refused = client.put("/api/v1/cameras/cam-01/scene", headers=admin, json=body)
        problem = refused.json()
        assert refused.status_code == 422 and problem["type"].endswith(":validation-error"), refused.text
        [error] = problem["errors"]
        assert error["loc"] == loc and error["msg"].startswith(msg), error
        assert problem["detail"].startswith(f"{'.'.join(loc)}: {msg}"), problem["detail"]
    assert cams["scene"].read_bytes() == before


def test_a_refused_scene_file_can_be_loaded_to_be_fixed(service):
    """GET .../scene refuses an invalid scene file (422), so the camera page could not load a hand-edited file gone
    wrong to fix it. GET .../scene-file answers it as written with why it is refused."""
    app, client, tokens, cams = service
    h = auth(tokens["inspector"])
    valid = client.get("/api/v1/cameras/cam-01/scene-file", headers=h).json()
    assert valid["error"] is None and valid["text"] == cams["scene"].read_text(encoding="utf-8")
    assert valid["scene"] == yaml.safe_load(valid["text"])

    broken = valid["text"].replace("grade: main", "grade: mian")
    cams["scene"].write_text(broken, encoding="utf-8")
    refused = client.get("/api/v1/cameras/cam-01/scene", headers=h)
    assert refused.status_code == 422 and refused.json()["detail"].startswith("scene file of camera cam-01: zones.1.grade")
    answer = client.get("/api/v1/cameras/cam-01/scene-file", headers=h).json()
    assert answer["text"] == broken and answer["scene"]["zones"][1]["grade"] == "mian"
    assert answer["error"].startswith("scene file of camera cam-01: zones.1.grade: unknown grade 'mian'")
    listed = {c["id"]: c for c in client.get("/api/v1/cameras", headers=h).json()}
    assert answer["error"] == listed["cam-01"]["scene_error"]
    answer["scene"]["zones"][1]["grade"] = "main"  # fixed, and saved back
    assert client.put("/api/v1/cameras/cam-01/scene", headers=auth(tokens["admin"]), json=answer["scene"]).status_code == 200
    assert client.get("/api/v1/cameras/cam-01/scene-file", headers=h).json()["error"] is None

    cams["scene"].write_text("camera_id: cam-01\nzones: [\n", encoding="utf-8")  # not YAML: the text alone
    answer = client.get("/api/v1/cameras/cam-01/scene-file", headers=h).json()
    assert answer["text"] == "camera_id: cam-01\nzones: [\n" and answer["scene"] is None and "not valid YAML" in answer["error"]
    cams["scene"].unlink()
    assert client.get("/api/v1/cameras/cam-01/scene-file", headers=h).json() == {
        "text": None, "scene": None, "error": "scene file of camera cam-01: file not found"}
    assert client.get("/api/v1/cameras/cam-09/scene-file", headers=h).status_code == 404


def test_a_config_file_s_error_names_it_by_its_setting_not_its_server_path(service):
    """GET /cameras, a scene file's error and the cameras file's 503 quoted the config error as the loader wrote it,
    with the server's path of the file (/srv/.../cameras/cam-01.yaml: ...), on the cameras page. Each file is named by
    what names it: `service.cameras_file`, the scene file of its camera, the cameras file's grades file."""
    app, client, tokens, cams = service
    h = auth(tokens["inspector"])
    folder = str(cams["file"].parent)
    (cams["file"].parent / "grades.yaml").write_text("grades: [", encoding="utf-8")
    cameras = yaml.safe_load(cams["file"].read_text(encoding="utf-8"))
    cams["file"].write_text(yaml.safe_dump({**cameras, "grades": "grades.yaml"}), encoding="utf-8")
    listed = {c["id"]: c for c in client.get("/api/v1/cameras", headers=h).json()}
    assert listed["cam-01"]["scene_error"].startswith("grades file of service.cameras_file: not valid YAML")
    assert folder not in listed["cam-01"]["scene_error"]
    cams["file"].write_text(yaml.safe_dump(cameras), encoding="utf-8")

    cams["scene"].write_text("camera_id: cam-01\nzones: [\n", encoding="utf-8")
    listed = {c["id"]: c for c in client.get("/api/v1/cameras", headers=h).json()}
    assert listed["cam-01"]["scene_error"].startswith("scene file of camera cam-01: not valid YAML")
    assert folder not in listed["cam-01"]["scene_error"]
    refused = client.get("/api/v1/cameras/cam-01/scene", headers=h)
    assert refused.status_code == 422 and refused.json()["detail"].startswith("scene file of camera cam-01: not valid YAML")

    cams["file"].write_text("cameras: [", encoding="utf-8")
    unusable = client.get("/api/v1/cameras", headers=h)
    assert unusable.status_code == 503, unusable.text
    assert unusable.json()["detail"].startswith("cameras file unusable: service.cameras_file: not valid YAML")
    assert folder not in unusable.json()["detail"]


def test_a_scenes_road_grades_are_checked_as_the_watcher_checks_them(service):
    """PUT took a zone's `grade` unchecked: a typo ('mian') was saved with 200 and GET /cameras saw no scene error, then
    the watcher's reload refused the scene and stopped the camera. It is refused now naming the field and the grades
    there are, and a city's own grade, from the grades file the cameras file names, is taken as the watcher takes it."""
    from pipelines.cctv.config import load_cameras

    app, client, tokens, cams = service
    admin = auth(tokens["admin"])
    scene = client.get("/api/v1/cameras/cam-01/scene", headers=admin).json()
    assert scene["zones"][1]["grade"] == "main"
    before = cams["scene"].read_bytes()
    scene["zones"][1]["grade"] = "mian"
    refused = client.put("/api/v1/cameras/cam-01/scene", headers=admin, json=scene)
    assert refused.status_code == 422, refused.text
    assert "zones.1.grade: unknown grade 'mian' (known: lane, main, secondary)" in refused.json()["detail"]
    assert cams["scene"].read_bytes() == before

    (cams["file"].parent / "grades.yaml").write_text(yaml.safe_dump({"grades": {"pedestrian_street": {
        "name_zh": "步行街", "name_en": "Pedestrian street", "thresholds": {"street_stall": {"dwell_s": 0}}}}},
        allow_unicode=True), encoding="utf-8")
    cameras = yaml.safe_load(cams["file"].read_text(encoding="utf-8"))
    cams["file"].write_text(yaml.safe_dump({**cameras, "grades": "grades.yaml"}), encoding="utf-8")
    scene["zones"][1]["grade"] = "pedestrian_street"
    saved = client.put("/api/v1/cameras/cam-01/scene", headers=admin, json=scene)
    assert saved.status_code == 200, saved.text
    assert [c.id for c in load_cameras(cams["file"]).cameras] == ["cam-01", "cam-02"]  # what the watcher's reload reads

    cams["scene"].write_text(cams["scene"].read_text(encoding="utf-8").replace("pedestrian_street", "mian"), encoding="utf-8")
    listed = {c["id"]: c for c in client.get("/api/v1/cameras", headers=admin).json()}
    assert "zones.1.grade: unknown grade 'mian' (known: pedestrian_street)" in listed["cam-01"]["scene_error"]


def test_the_camera_list_reads_the_cameras_file_as_often_for_200_cameras_as_for_2(service, monkeypatch):
    """GET /cameras read the cameras file three times more for each camera (its road grades for the scene, then the
    camera and its scene again for the snapshot): a district's 200 cameras took 90 s, the page blank meanwhile. The
    list reads the file and its grades once, however many cameras it names, each still with its scene and snapshot."""
    import api.cameras
    from pipelines.cctv.config import CamerasFile

    app, client, tokens, cams = service
    reads = []
    load = api.cameras.load_model
    monkeypatch.setattr(api.cameras, "load_model", lambda model, path: (reads.append(model), load(model, path))[1])

    def reads_listing() -> tuple[int, list[dict]]:
        reads.clear()
        listed = client.get("/api/v1/cameras", headers=auth(tokens["inspector"]))
        assert listed.status_code == 200, listed.text
        return reads.count(CamerasFile), listed.json()

    cams["file"].write_text(cams["file"].read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")  # read afresh
    two, _ = reads_listing()
    cameras = yaml.safe_load(cams["file"].read_text(encoding="utf-8"))
    more = [{**cameras["cameras"][0], "id": f"cam-{i:03d}", "url": f"rtsp://127.0.0.1:9/cam-{i:03d}"} for i in range(3, 201)]
    cams["file"].write_text(yaml.safe_dump({**cameras, "cameras": cameras["cameras"] + more}), encoding="utf-8")
    many, listed = reads_listing()
    assert len(listed) == 200 and many == two <= 3
    assert {(c["zones"], c["has_snapshot"], c["scene_error"]) for c in listed if c["id"] != "cam-02"} == {(7, True, None)}


def test_the_cameras_file_and_each_scene_are_read_and_checked_once_per_change(service, monkeypatch):
    """GET /cameras read and checked every scene on each request (20-40 ms a camera), and a camera's snapshot and scene
    file read the cameras file again each call; each is read once per change of its file, an edited scene (or cameras
    file) taken at the next request."""
    import api.cameras
    from detect.scenes import Scene
    from pipelines.cctv.config import CamerasFile

    app, client, tokens, cams = service
    h = auth(tokens["inspector"])
    reads = []
    load = api.cameras.load_model
    monkeypatch.setattr(api.cameras, "load_model", lambda model, path: (reads.append((model, Path(path).name)), load(model, path))[1])

    def read(*paths: str) -> list[tuple[type, str]]:
        reads.clear()
        for path in paths:
            assert client.get(path, headers=h).status_code in (200, 404), path  # cam-02 has no snapshot
        return sorted(reads, key=str)

    listed = client.get("/api/v1/cameras", headers=h).json()
    assert read("/api/v1/cameras", "/api/v1/cameras/cam-01/snapshot", "/api/v1/cameras/cam-02/snapshot",
                "/api/v1/cameras/cam-01/scene-file", "/api/v1/cameras/cam-01/scene") == []
    scene = yaml.safe_load(cams["scene"].read_text(encoding="utf-8"))
    cams["scene"].write_text(yaml.safe_dump({**scene, "name": "文三路口（改）"}, allow_unicode=True), encoding="utf-8")
    assert read("/api/v1/cameras", "/api/v1/cameras") == [(Scene, "cam-01.yaml")]  # the edited scene, once
    assert client.get("/api/v1/cameras", headers=h).json()[0]["name"] == "文三路口（改）" != listed[0]["name"]
    cams["file"].write_text(cams["file"].read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    assert read("/api/v1/cameras", "/api/v1/cameras/cam-01/snapshot").count((CamerasFile, "cameras.yaml")) == 2  # its cameras, its grades


def test_snapshot_is_the_latest_frame_or_the_reference(service, bus_jpg, zidane_jpg):
    app, client, tokens, cams = service
    h = auth(tokens["inspector"])
    reference = client.get("/api/v1/cameras/cam-01/snapshot", headers=h)
    assert reference.status_code == 200 and reference.content == bus_jpg.read_bytes()
    assert client.get("/api/v1/cameras/cam-02/snapshot", headers=h).status_code == 404  # no reference, no frame
    cams["snapshots"].mkdir()
    shutil.copyfile(zidane_jpg, cams["snapshots"] / "cam-02.jpg")
    latest = client.get("/api/v1/cameras/cam-02/snapshot", headers=h)
    assert latest.status_code == 200
    with Image.open(io.BytesIO(latest.content)) as im:
        assert im.size == Image.open(zidane_jpg).size


def test_ops_endpoints_and_metrics(service, bus_event):
    app, client, tokens, _ = service
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"case_store": "ok", "jobs_dir": "ok"}
    client.get("/api/v1/cases", headers=auth(tokens["reviewer"]))
    metrics = client.get("/metrics", headers=auth(tokens["integration"]))
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert 'streetwatch_api_requests_total{handler="list_cases",method="GET",status="200"} 1.0' in metrics.text
    spec = client.get("/openapi.json").json()
    assert "/api/v1/triage/jobs" in spec["paths"] and "ProblemDoc" in spec["components"]["schemas"]
    assert "multipart/form-data" in spec["paths"]["/api/v1/triage/jobs"]["post"]["requestBody"]["content"]


def test_cors_is_closed_unless_origins_are_configured(tmp_path, monkeypatch):
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    preflight = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "Authorization"}
    app, _ = make_app(settings_for(tmp_path / "a"))
    with TestClient(app) as client:
        assert "access-control-allow-origin" not in client.options("/api/v1/cases", headers=preflight).headers
    app, _ = make_app(settings_for(tmp_path / "b", cors_origins=["https://elsewhere.example"]))
    with TestClient(app) as client:
        answer = client.options("/api/v1/cases", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://elsewhere.example"
        # every method a route has: DELETE /api/v1/shops/{id} was refused at the preflight
        methods = {m.upper() for operations in app.openapi()["paths"].values() for m in operations}
        assert "DELETE" in methods
        for method in methods:
            answer = client.options("/api/v1/shops/s1", headers={**preflight, "Access-Control-Request-Method": method})
            assert answer.status_code == 200, (method, answer.text)


def test_a_cors_origin_is_written_as_browsers_send_it(tmp_path, monkeypatch):
    """`cors_origins: ['https://review.example/']` (a URL pasted from the address bar) loaded, and never equalled
    the browser's `Origin: https://review.example`, so CORS stayed closed to that site without a word: its lone '/'
    is dropped now; an entry with a path or without a scheme is refused, naming the origin to write."""
    from api.config import load_service
    from detect.config_io import ConfigError

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    config = tmp_path / "settings.yaml"
    for entry, example in (("https://review.example/ui/queue", "https://review.example"),
                           ("review.example", "https://review.example.gov.cn")):
        config.write_text(f"service:\n  cors_origins: ['https://ok.example', '{entry}']\n", encoding="utf-8")
        with pytest.raises(ConfigError) as refused:
            load_service(config)
        assert f"{config}: service.cors_origins.1: Value error, {entry!r} is not an origin" in str(refused.value)
        assert f"(e.g. {example!r})" in str(refused.value)
    config.write_text("service:\n  cors_origins: ['https://Review.Example:8443', '*', 'https://review.example/']\n", encoding="utf-8")
    assert load_service(config)[1].cors_origins == ["https://review.example:8443", "*", "https://review.example"]
    app, _ = make_app(settings_for(tmp_path, cors_origins=["HTTPS://Review.Example:8443"]))
    with TestClient(app) as client:
        answer = client.options("/api/v1/cases", headers={"Origin": "https://review.example:8443", "Access-Control-Request-Method": "GET"})
        assert answer.headers["access-control-allow-origin"] == "https://review.example:8443"


def test_users_commands_issue_list_and_revoke_hashed_tokens(tmp_path, monkeypatch):
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    settings = settings_for(tmp_path)
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")), encoding="utf-8")
    runner = CliRunner()
    added = runner.invoke(cli, ["users", "add", "王芳", "--role", "reviewer", "--config", str(config)])
    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[0]
    assert token.startswith("swt_") and len(token) > 40
    assert token not in (tmp_path / "cases.db").read_bytes().decode("latin-1")  # only the hash is stored
    again = runner.invoke(cli, ["users", "add", "王芳", "--config", str(config)])
    assert again.exit_code == 2 and "already has an active token" in again.output
    assert runner.invoke(cli, ["users", "add", "x", "--role", "overlord", "--config", str(config)]).exit_code == 2
    listed = runner.invoke(cli, ["users", "list", "--config", str(config)])
    assert "王芳\treviewer\t" + token[:8] in listed.stdout

    app, _ = make_app(settings)
    with TestClient(app) as client:
        assert client.get("/api/v1/cases", headers=auth(token)).status_code == 200
        assert runner.invoke(cli, ["users", "revoke", "王芳", "--config", str(config)]).exit_code == 0
        revoked = client.get("/api/v1/cases", headers=auth(token))
        assert revoked.status_code == 401 and revoked.headers["WWW-Authenticate"] == "Bearer"
        assert revoked.json()["detail"] == "API 令牌无效（未知或已吊销） unknown or revoked API token"
    assert "revoked" in runner.invoke(cli, ["users", "list", "--all", "--config", str(config)]).stdout
    assert runner.invoke(cli, ["users", "revoke", "nobody", "--config", str(config)]).exit_code == 2


def test_user_names_are_revoked_as_added_and_unreadable_ones_refused(tmp_path):
    """`users add " 王芳 "` stored 王芳 but `users revoke " 王芳 "` found no such user; a name holding a tab or a line
    break (or an invisible character) was stored and split the lines of `users list`."""
    settings = settings_for(tmp_path)
    users = users_cli(settings, tmp_path)

    assert users("add", " 王芳 ", "--role", "inspector").exit_code == 0
    revoked = users("revoke", " 王芳 ")
    assert revoked.exit_code == 0 and "revoked 1 token of 王芳" in revoked.output
    for name, why in (("王\t芳", "U+0009"), ("王芳\n李四", "U+000A"), ("王芳\u200b", "U+200B"), ("王" * 201, "201 characters")):
        refused = users("add", name)
        assert refused.exit_code == 2 and why in refused.output, (name, refused.output)
    assert users("list", "--all").output.count("\n") == 1  # 王芳's revoked token only


def test_example_settings_file_has_a_valid_service_section(tmp_path, monkeypatch):
    from api.config import load_service
    from tests.conftest import REPO

    example = REPO / "docs/examples/streetwatch-settings.yaml"
    monkeypatch.chdir(tmp_path)  # a deployment folder holding the files the example names
    for name in ("cameras.yaml", "city/grid-cells.geojson", "city/zones.geojson", "city/number-cutoffs.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    settings, service = load_service(example)
    assert service.triage.workers == 2 and service.cors_origins == [] and str(service.cameras_file) == "cameras.yaml"
    assert settings.dispatch.targets["hz-dcm"].callback_url.path == "/api/v1/dispatch/hz-dcm/webhook"
    assert settings.cityops.grid == settings.analytics.grid  # one grid file, not two a copied example asks for


def test_serve_refuses_a_bad_service_section(tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text("service:\n  max_upload_bytes: -1\n  job_concurency: 2\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["serve", "--config", str(config)])
    assert result.exit_code == 2
    assert f"{config}: service.max_upload_bytes: Input should be greater than 0" in result.output
    assert f"{config}: service.job_concurency: Extra inputs are not permitted" in result.output


@pytest.mark.parametrize("section, reason", [
    ("evidence_store: {backend: s3, s3: {endpoint: 127.0.0.1:9, bucket: evidence}}\n",
     "evidence_store.s3: set the environment variables STREETWATCH_S3_ACCESS_KEY and STREETWATCH_S3_SECRET_KEY"),
    ("evidence: {city: hangzhou}\n", "evidence.city: no code table for city 'hangzhou'"),
])
def test_serve_refuses_what_its_settings_name_but_cannot_be_used_naming_the_file(tmp_path, monkeypatch, section, reason):
    """An S3 store whose key variables are not set, or a city with no code table, stopped `serve` with a traceback."""
    monkeypatch.delenv("STREETWATCH_S3_ACCESS_KEY", raising=False)
    config = tmp_path / "settings.yaml"
    config.write_text(f"cases: {{url: 'sqlite:///{tmp_path}/cases.db'}}\n{section}", encoding="utf-8")
    result = CliRunner().invoke(cli, ["serve", "--config", str(config)])
    assert result.exit_code == 2, result.exception
    assert f"error: {config}: {reason}" in result.output


@pytest.mark.parametrize("field, name, reason", [
    ("hmac_key_file", "missing.key", "cannot read evidence key: No such file or directory"),
    ("hmac_key_file", "keys", "cannot read evidence key: Is a directory"),
    ("signing_key_file", "keys", "cannot read evidence signing key: Is a directory"),
    ("published_keys", "missing.pem", "cannot read public key: No such file or directory"),
    ("published_keys", "settings.yaml", "no PEM public key in it"),
    ("previous_hmac_key_files", "missing.key", "cannot read evidence key: No such file or directory"),
])
def test_serve_refuses_an_evidence_key_file_it_cannot_read_naming_the_field(tmp_path, monkeypatch, field, name, reason):
    """A configured key file that could not be read started `serve` with a warning naming neither the field nor the
    file's trouble, advising to 'set it where streetwatch serve runs', and every upload job wrote no case; an earlier
    public key (`published_keys`, a list) that could not be read started it too, /evidence/keys answering 503."""
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: None)  # a serve that starts returns at once
    (tmp_path / "keys").mkdir()
    config = tmp_path / "settings.yaml"
    value = [str(tmp_path / name)] if field in ("published_keys", "previous_hmac_key_files") else str(tmp_path / name)
    config.write_text(f"cases: {{url: 'sqlite:///{tmp_path}/cases.db'}}\n" + yaml.safe_dump({"evidence": {field: value}}),
                      encoding="utf-8")
    result = CliRunner().invoke(cli, ["serve", "--config", str(config)])
    assert result.exit_code == 2, result.exception
    assert f"error: {config}: evidence.{field}: {tmp_path / name}: {reason}" in result.output


def test_serve_refuses_an_evidence_key_variable_shorter_than_16_bytes(tmp_path, monkeypatch):
    """A key variable holding too short a key started `serve` under a warning, every upload job writing no case; an
    unset one is still only warned of (tests/test_api_uploads.py)."""
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: None)  # a serve that starts returns at once
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "short-key")
    config = tmp_path / "settings.yaml"
    config.write_text(f"cases: {{url: 'sqlite:///{tmp_path}/cases.db'}}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["serve", "--config", str(config)])
    assert result.exit_code == 2, result.exception
    assert (f"error: {config}: environment variable STREETWATCH_EVIDENCE_KEY: evidence key has 9 bytes; use at least 16"
            in result.output)


def test_serve_warns_at_start_up_of_a_cameras_file_it_cannot_read(tmp_path, bus_jpg, caplog):
    """A cameras file with a typo (`analysis_fsp`) started `serve` without a word; the cameras page answered 503."""
    cams = write_cameras(tmp_path, bus_jpg)
    text = cams["file"].read_text(encoding="utf-8")
    cams["file"].write_text(text.replace("id: cam-02", "id: cam-02\n  analysis_fsp: 0.5"), encoding="utf-8")
    with caplog.at_level("WARNING", logger="api.app"):
        make_app(settings_for(tmp_path, cameras_file=str(cams["file"])))
    warned = [r.getMessage() for r in caplog.records if "cameras_file" in r.getMessage()]
    assert warned == [f"service.cameras_file: {cams['file']}: cameras.1.analysis_fsp: Extra inputs are not permitted (got 0.5); "
                      "the cameras routes and page answer 503 until it is fixed (it is read again at each request)"]


def test_ocr_off_may_be_written_unquoted_in_yaml(tmp_path):
    """Issue 14, item 7: YAML reads `ocr: off` as false; it was refused with "Input should be a valid string"."""
    from api.config import load_service
    from detect.config_io import ConfigError
    from pipelines.triage.settings import TriageSettings
    from pipelines.triage.text import OcrMode

    config = tmp_path / "settings.yaml"
    config.write_text("service:\n  triage:\n    ocr: off\n", encoding="utf-8")
    assert load_service(config)[1].triage.ocr == "off"
    assert OcrMode(TriageSettings(ocr=False).ocr) is OcrMode.OFF  # as the service hands it to the triage run
    config.write_text("triage:\n  ocr: off\n", encoding="utf-8")  # the settings file's own triage: section too
    assert load_service(config)[0].triage.ocr == "off"
    config.write_text("service:\n  triage:\n    ocr: on\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"service.triage.ocr: Value error, write auto, all or off"):
        load_service(config)


def test_a_scene_change_whose_audit_record_cannot_be_written_does_not_stand_on_postgresql(tmp_path, monkeypatch, bus_jpg,
                                                                                         fresh_postgres_url):
    """A scene change was saved to its file and its audit record written after, in a transaction of its own: when the
    record could not be written the new scene stood unrecorded (the watcher applying it) and the admin, answered 500,
    might change it again. The record is written first, in a transaction committed once the file is replaced: the
    audit log refusing the record (a trigger), the file is not replaced; the record refused only when its transaction
    commits (a deferred constraint trigger), the file replaced is put back. Once the log takes records, the change is
    saved and recorded once."""
    from tests.api_helpers import DCM

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    cams = write_cameras(tmp_path, bus_jpg)
    app, tokens = make_app(settings_for(tmp_path, dispatch=DCM, cameras_file=str(cams["file"]), cases_url=fresh_postgres_url))
    accounts, admin = app.state.ctx.accounts, auth(tokens["admin"])
    refusals = {"on insert": "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
                "on commit": "CREATE CONSTRAINT TRIGGER refuse_audit AFTER INSERT ON audit_log DEFERRABLE INITIALLY DEFERRED "
                             "FOR EACH ROW EXECUTE FUNCTION refuse_audit()"}
    with TestClient(app, raise_server_exceptions=False) as client:
        scene = client.get("/api/v1/cameras/cam-01/scene", headers=admin).json()
        scene["zones"].append({"id": "new-stall-zone", "kind": "no_vending", "polygon": [[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]]})
        before, audits = cams["scene"].read_bytes(), accounts.audit_records()
        with accounts.engine.begin() as conn:
            conn.exec_driver_sql("CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN "
                                 "RAISE EXCEPTION 'audit log refuses records'; END $$ LANGUAGE plpgsql")
        for when, trigger in refusals.items():
            with accounts.engine.begin() as conn:
                conn.exec_driver_sql(trigger)
            refused = client.put("/api/v1/cameras/cam-01/scene", headers=admin, json=scene)
            assert refused.status_code == 500, (when, refused.text)
            assert cams["scene"].read_bytes() == before, when
            assert accounts.audit_records() == audits, when
            with accounts.engine.begin() as conn:
                conn.exec_driver_sql("DROP TRIGGER refuse_audit ON audit_log")

        saved = client.put("/api/v1/cameras/cam-01/scene", headers=admin, json=scene)
        assert saved.status_code == 200, saved.text
    assert yaml.safe_load(cams["scene"].read_text(encoding="utf-8"))["zones"][-1]["id"] == "new-stall-zone"
    record, *earlier = accounts.audit_records()  # newest first
    assert earlier == audits and (record["action"], record["actor"], record["details"]) == ("put_scene", "admin-user",
                                                                      {"camera_id": "cam-01", "zones": len(scene["zones"])})
    assert [p.name for p in cams["scene"].parent.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_serve_refuses_a_data_dir_it_cannot_create_naming_the_setting(tmp_path):
    """A `service.data_dir` that could not be created stopped `serve` with `error: PATH: reason`, naming neither the
    setting nor the settings file it came from."""
    config = tmp_path / "settings.yaml"
    data_dir = tmp_path / "settings.yaml" / "data"  # under a file: never made, whoever runs the test
    config.write_text(f"cases: {{url: 'sqlite:///{tmp_path}/cases.db'}}\nservice: {{data_dir: '{data_dir}'}}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["serve", "--config", str(config)])
    assert result.exit_code == 2, result.exception
    assert f"error: {config}: service.data_dir: {data_dir / 'jobs'}: cannot create: Not a directory" in result.output, result.output


def test_serve_refuses_a_data_dir_it_cannot_write_naming_the_setting(tmp_path):
    """A `service.data_dir` whose folders are there but cannot be written (a read-only mount, another user's folder)
    let `serve` start: /readyz said not ready, and every upload was answered 500 with a traceback in the log. The app
    refuses to start as for a folder it cannot create (`serve` then prints the line after the settings file's name,
    as the test above shows). Unwritable: 0555 for a user, immutable (chattr +i) for root, whom modes do not stop."""
    import os
    import subprocess

    from api.app import create_app
    from detect.config_io import ConfigError
    from tests.api_helpers import service_config, settings_for

    jobs = tmp_path / "data" / "jobs"
    jobs.mkdir(parents=True)
    settings = settings_for(tmp_path, data_dir=str(tmp_path / "data"))
    as_root = os.geteuid() == 0
    jobs.chmod(0o555)
    if as_root and subprocess.run(["chattr", "+i", str(jobs)], capture_output=True).returncode:
        pytest.skip("chattr +i is not supported on this file system (root writes a 0555 folder)")
    try:
        with pytest.raises(ConfigError) as refused:
            create_app(settings, service_config(settings, "test")).state.ctx.close()
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(jobs)], check=True)
        jobs.chmod(0o755)
    assert str(refused.value).startswith(f"service.data_dir: {jobs}: cannot write: "), refused.value
    assert list(jobs.iterdir()) == []


def test_every_health_condition_has_a_chinese_name_on_the_cameras_page():
    """The cameras page shows each condition in the words staff use (画面冻结 ...) beside its code; a new condition
    (`infrared`) without one showed only the English code."""
    import re

    from pipelines.cctv.health import HealthKind

    script = (Path(__file__).resolve().parents[1] / "api" / "static" / "cameras.js").read_text(encoding="utf-8")
    table = script[script.index("const HEALTH_ZH"):script.index("};", script.index("const HEALTH_ZH"))]
    named = set(re.findall(r"(\w+): \"", table))
    assert {k.value for k in HealthKind} - named == set()
