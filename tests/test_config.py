"""Configuration files: JSON schemas from `streetwatch config schema` validate the shipped examples and refuse
what the loaders refuse; rule and tracker knobs set in the settings file reach every camera, a camera's own
change only the fields it sets; the settings file's `triage:` section sets `streetwatch triage`'s defaults."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from detect.config_io import ConfigError, load_model, loaded_file, read_mapping
from detect.grades import DEFAULT_GRADES_PATH, Grades
from detect.scenes import Scene
from detect.taxonomy import DEFAULT_TAXONOMY_PATH, CityCodeFile, Taxonomy, load_taxonomy
from pipelines.analytics.sheet import EXAMPLE_SHEET, Sheet
from pipelines.cctv.config import CamerasFile, load_cameras
from pipelines.cctv.service import Watcher
from pipelines.settings import Settings, load_settings
from streetwatch.cli import app as cli
from tests.cctv_helpers import cameras_file, make_intake, scene_for
from tests.conftest import REPO

EXAMPLES = REPO / "docs" / "examples"
KINDS = {"settings": Settings, "cameras": CamerasFile, "scene": Scene, "taxonomy": Taxonomy, "city-codes": CityCodeFile,
         "scoring-sheet": Sheet, "grades": Grades}
EXAMPLE_FILES = {
    "settings": [EXAMPLES / "streetwatch-settings.yaml"],
    "cameras": [EXAMPLES / "cameras.yaml"],
    "scene": sorted(EXAMPLES.glob("scene-*.yaml")),
    "taxonomy": [DEFAULT_TAXONOMY_PATH],
    "city-codes": [EXAMPLES / "city-codes-hangzhou.yaml"],
    "scoring-sheet": [EXAMPLE_SHEET],
    "grades": [DEFAULT_GRADES_PATH],
}


@pytest.fixture(scope="module")
def schemas(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("schemas")
    result = CliRunner().invoke(cli, ["config", "schema", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{k}.schema.json" for k in KINDS)
    return {kind: json.loads((out / f"{kind}.schema.json").read_text(encoding="utf-8")) for kind in KINDS}


def _yaml(path: Path):
    """A YAML file as an editor's YAML 1.2 language server sees it (dates and times stay strings)."""
    return json.loads(json.dumps(yaml.safe_load(path.read_text(encoding="utf-8")), default=str))


def _errors(schema: dict, data) -> list[str]:
    jsonschema.Draft202012Validator.check_schema(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in jsonschema.Draft202012Validator(schema).iter_errors(data)]


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_example_file_validates_against_its_schema_and_its_loader(schemas, kind):
    assert EXAMPLE_FILES[kind], kind
    for path in EXAMPLE_FILES[kind]:
        assert _errors(schemas[kind], _yaml(path)) == [], path
        load_model(KINDS[kind], path)  # and the loader accepts it: the schema says what the loader says


def test_schemas_refuse_what_the_loaders_refuse(schemas, tmp_path):
    settings = _yaml(EXAMPLE_FILES["settings"][0])
    settings["rules"]["group_gapp"] = 0.4  # a typo
    settings["tracking"]["lost_s"] = -1
    assert sorted(_errors(schemas["settings"], settings)) == [
        "rules: Additional properties are not allowed ('group_gapp' was unexpected)",
        "tracking.lost_s: -1 is less than the minimum of 0",
    ]
    bad = tmp_path / "settings.yaml"
    bad.write_text(yaml.safe_dump(settings, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_settings(bad)
    assert f"{bad}: rules.group_gapp: Extra inputs are not permitted" in str(refused.value)
    assert f"{bad}: tracking.lost_s: Input should be greater than or equal to 0" in str(refused.value)

    cameras = _yaml(EXAMPLE_FILES["cameras"][0])
    cameras["cameras"][0]["tracking"] = {"los_s": 30}
    assert _errors(schemas["cameras"], cameras) == ["cameras.0.tracking: {'los_s': 30} is not valid under any of the given schemas"]
    scene = _yaml(EXAMPLE_FILES["scene"][0])
    scene["zones"][0]["schedule"][0]["start"] = "seven"
    assert [e.split(":")[0] for e in _errors(schemas["scene"], scene)] == ["zones.0.schedule.0.start"]
    codes = {"city": "x", "codes": {"street_stall": {"major_code": "13"}}}
    assert _errors(schemas["city-codes"], codes) == ["codes.street_stall: 'minor_code' is a required property"]
    taxonomy = _yaml(DEFAULT_TAXONOMY_PATH)
    del taxonomy["types"]["street_stall"]["evidence"]
    assert _errors(schemas["taxonomy"], taxonomy) == ["types.street_stall: 'evidence' is a required property"]
    sheet = _yaml(EXAMPLE_SHEET)
    sheet["sections"][0]["items"][0]["per"] = "stal"
    assert [e.split(":")[0] for e in _errors(schemas["scoring-sheet"], sheet)] == ["sections.0.items.0.per"]
    grades = _yaml(DEFAULT_GRADES_PATH)
    grades["grades"]["main"]["thresholds"]["street_stall"] = {"dwell": 0}  # a typo of dwell_s
    assert [e.split(":")[0] for e in _errors(schemas["grades"], grades)] == ["grades.main.thresholds.street_stall"]
    settings["cityops"]["warn"]["rules"][0]["recheck_after_s"] = 0
    assert sorted(e.split(":")[0] for e in _errors(schemas["settings"], settings)) == [
        "cityops.warn.rules.0.recheck_after_s", "rules", "tracking.lost_s"]


def test_settings_schema_takes_ocr_off_unquoted_as_the_loader_does(schemas, tmp_path):
    """YAML 1.1 reads `ocr: off` as false: the loader took it as off while the schema refused the settings file."""
    path = tmp_path / "settings.yaml"
    path.write_text("triage:\n  ocr: off\nservice:\n  triage:\n    ocr: off\n", encoding="utf-8")
    assert _errors(schemas["settings"], _yaml(path)) == []
    settings = load_settings(path)
    assert settings.triage.ocr == "off" and settings.service.triage.ocr == "off"
    assert _errors(schemas["settings"], {"triage": {"ocr": True}}) != []  # on/yes/true: refused by both


def test_settings_schema_covers_every_section(schemas):
    """The sections other issues added (analytics, evidence signing keys, dispatch leases) are in the schema too."""
    props = schemas["settings"]["properties"]
    assert {"timezone", "cases", "evidence", "evidence_store", "dispatch", "rules", "tracking", "triage", "analytics", "cityops",
            "service"} <= props.keys()
    defs = schemas["settings"]["$defs"]
    assert {"signing_key_file", "published_keys"} <= defs["EvidenceConfig"]["properties"].keys()
    assert {"grid", "zones", "sheet", "cutoffs", "reports_dir"} <= defs["AnalyticsConfig"]["properties"].keys()
    assert defs["AnalyticsConfig"]["additionalProperties"] is False


def test_one_kind_prints_to_stdout_and_unknown_kinds_are_refused(schemas):
    printed = CliRunner().invoke(cli, ["config", "schema", "scene"])
    assert printed.exit_code == 0 and json.loads(printed.stdout) == schemas["scene"]
    assert schemas["scene"]["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    refused = CliRunner().invoke(cli, ["config", "schema", "scenes"])
    assert refused.exit_code == 2 and "unknown file kind 'scenes'" in refused.output


def test_settings_and_cameras_files_as_windows_editors_save_them(tmp_path):
    """Notepad's UTF-8 with a BOM is read; a GBK ("ANSI") save and an empty file are refused with what to do,
    not a codec error or 'top level must be a mapping, got NoneType'."""
    text = Path(EXAMPLE_FILES["cameras"][0]).read_text(encoding="utf-8")
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert load_model(CamerasFile, bom).cameras
    gbk = tmp_path / "gbk.yaml"
    gbk.write_bytes((text + "\n# 文三路口 摄像头\n").encode("gbk"))
    with pytest.raises(ConfigError, match=rf"^{gbk}: not UTF-8 text \(byte \d+\): save it as UTF-8, not GBK/ANSI$"):
        load_model(CamerasFile, gbk)
    empty = tmp_path / "empty.yaml"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{empty}: empty file$"):
        load_settings(empty)


def test_a_workbook_or_a_photo_given_for_a_yaml_file_is_named_as_such(tmp_path, bus_jpg):
    """`--sheet 考核细则.xlsx` (the sheet as the office keeps it in Excel) was refused as 'not UTF-8 text ... save it as
    UTF-8', which no save of a workbook fixes; a binary file is named for what it is, with what is expected."""
    from openpyxl import Workbook

    from pipelines.analytics.sheet import load_sheet

    book = Workbook()
    book.active.append(["考核项目", "扣分标准"])
    book.active.append(["越门/窗占道经营", "每户扣 1 分"])
    workbook = tmp_path / "考核细则.xlsx"
    book.save(workbook)
    with pytest.raises(ConfigError) as refused:
        load_sheet(workbook)
    assert str(refused.value) == f"{workbook}: a YAML file (text, as an editor writes it) is expected, and this is an Excel workbook (.xlsx)"
    with pytest.raises(ConfigError, match=rf"^{tmp_path}/settings.json: a JSON file .* is expected, and this is a JPEG image$"):
        load_settings(Path(shutil.copy(bus_jpg, tmp_path / "settings.json")))
    unicode = tmp_path / "cameras.yaml"  # Notepad's "Unicode" (UTF-16) has NUL bytes but is text: told to save as UTF-8
    unicode.write_bytes(EXAMPLE_FILES["cameras"][0].read_text(encoding="utf-8").encode("utf-16"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0\): save it as UTF-8"):
        load_model(CamerasFile, unicode)


@pytest.mark.parametrize("where, reason", [("a-file/sub", "Not a directory"), ("a-file", "exists and is not a folder")])
def test_an_output_folder_that_cannot_be_made_is_one_error_line(tmp_path, where, reason):
    """Any command's --out under a file (or on a read-only disk) ended in a Python traceback."""
    import os
    import subprocess
    import sys

    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / where
    run = subprocess.run([sys.executable, "-m", "streetwatch.cli", "config", "schema", "--out", str(out)], cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip() == f"error: {out}: {reason}"


def test_settings_defaults_reach_every_camera_and_a_camera_changes_only_what_it_sets(tmp_path, real_sample_dir, onnx_detector):
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(yaml.safe_dump({"rules": {"update_stable_s": 90, "group_gap": 0.8},
                                             "tracking": {"lost_s": 45, "still_tolerance": 0.2}}), encoding="utf-8")
    settings = load_settings(settings_file)
    for cid in ("cam-01", "cam-02"):
        scene_for(tmp_path, cid, real_sample_dir)
    cams = cameras_file(tmp_path / "cameras.yaml", [
        {"id": "cam-01", "url": "cam-01.mp4", "scene": "cam-01.yaml", "analysis_fps": 0.5},
        {"id": "cam-02", "url": "cam-02.mp4", "scene": "cam-02.yaml", "tracking": {"lost_s": 120, "frame_rate": 2},
         "rules": {"update_stable_s": 10}},
    ])
    watcher = Watcher(cams, onnx_detector, make_intake(tmp_path / "data"), replay=True, tracking=settings.tracking, rules=settings.rules)
    try:
        rules = {cid: runtime.rules for cid, runtime in watcher.runtimes.items()}
        one, two = rules["cam-01"], rules["cam-02"]
        assert (one.tracking.lost_s, one.tracking.still_tolerance, one.tracking.frame_rate) == (45, 0.2, 0.5)
        assert (one.settings.update_stable_s, one.settings.group_gap) == (90, 0.8)
        assert (two.tracking.lost_s, two.tracking.still_tolerance, two.tracking.frame_rate) == (120, 0.2, 2)
        assert (two.settings.update_stable_s, two.settings.group_gap) == (10, 0.8)
        assert one.tracker.config is one.tracking  # the tracker runs with them
        assert watcher.runtimes["cam-02"].camera.rules.group_gap == 0.8  # re-checks group like the rules
    finally:
        watcher.shutdown()
    plain = load_cameras(cams, load_taxonomy())  # no settings file: the models' defaults
    assert [c.tracking.lost_s for c in plain.cameras] == [20, 120] and [c.rules.update_stable_s for c in plain.cameras] == [30, 10]


def test_triage_takes_its_defaults_from_the_settings_file_and_flags_win(tmp_path, bus_jpg, monkeypatch):
    monkeypatch.delenv("STREETWATCH_EVIDENCE_KEY", raising=False)
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump({"cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
                                      "triage": {"conf": 0.97, "ocr": "off", "workers": 1, "thumb_side": 96, "verifier": "none"}}), encoding="utf-8")

    def run(out: str, *flags: str) -> list[dict]:
        result = CliRunner().invoke(cli, ["triage", str(bus_jpg), "--out", str(tmp_path / out), "--config", str(config),
                                          "--no-progress", *flags])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in (tmp_path / out / "results.jsonl").read_text(encoding="utf-8").splitlines()]

    [strict] = run("strict")
    assert strict["status"] == "ok" and strict["detections"] == [] and strict["findings"] == []  # conf 0.97 from the file
    [found] = run("found", "--conf", "0.25")
    assert [f["type"] for f in found["findings"]] == ["illegal_parking"]
    import cv2

    thumb = cv2.imread(str(tmp_path / "found" / found["thumb"]))
    assert max(thumb.shape[:2]) == 96  # a knob without a flag, from the file


ZONED = ("triage", "service.triage", "analytics", "cityops", "evidence")


def _zones(settings: Settings) -> dict[str, str]:
    """Section -> its time zone, for every section that has one."""
    zones = {}
    for dotted in ZONED:
        section = settings
        for part in dotted.split("."):
            section = getattr(section, part)
        zones[dotted] = section.timezone
    return zones


def test_one_city_time_zone_is_every_sections_unless_a_section_sets_its_own(tmp_path):
    """A city outside UTC+8 that set one section's zone and forgot the others got a call-out export, a city page
    and a report that disagreed: the top-level `timezone` is every section's; a section's own still wins."""
    only = tmp_path / "berlin.yaml"
    only.write_text("timezone: Europe/Berlin\n", encoding="utf-8")
    assert _zones(load_settings(only)) == dict.fromkeys(ZONED, "Europe/Berlin")

    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(yaml.safe_dump({"timezone": "Europe/Berlin", "analytics": {"timezone": "America/Sao_Paulo"},
                                     "service": {"triage": {"timezone": "Asia/Tokyo", "workers": 1}}}), encoding="utf-8")
    assert _zones(load_settings(mixed)) == {**dict.fromkeys(ZONED, "Europe/Berlin"), "analytics": "America/Sao_Paulo",
                                            "service.triage": "Asia/Tokyo"}

    older = tmp_path / "older.yaml"  # a file written before the top-level zone: as it was
    older.write_text(yaml.safe_dump({"cityops": {"timezone": "Europe/Berlin"}}), encoding="utf-8")
    assert _zones(load_settings(older)) == {**dict.fromkeys(ZONED, "Asia/Shanghai"), "cityops": "Europe/Berlin"}
    assert _zones(Settings()) == dict.fromkeys(ZONED, "Asia/Shanghai")

    from pipelines.analytics.config import AnalyticsConfig

    given = AnalyticsConfig()  # a section an API caller built: followed by a copy, not changed under it
    assert Settings(timezone="Europe/Berlin", analytics=given).analytics.timezone == "Europe/Berlin"
    assert given.timezone == "Asia/Shanghai"

    bad = tmp_path / "bad.yaml"
    bad.write_text("timezone: Mars/Olympus\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{bad}: timezone: Value error, unknown time zone 'Mars/Olympus'"):
        load_settings(bad)


def test_every_sections_unknown_zone_is_refused_alike(tmp_path):
    """triage (and service.triage) and evidence each had their own copy of the zone check; triage's said only
    'unknown time zone'. Every section's zone is checked by the one TimeZoneName, naming the field and how to fix it."""
    for dotted in ("timezone", *(f"{name}.timezone" for name in ZONED)):
        section: dict = {"timezone": "Mars/Olympus"}
        for part in reversed(dotted.split(".")[:-1]):
            section = {part: section}
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump(section), encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_settings(bad)
        assert f"{bad}: {dotted}: Value error, unknown time zone 'Mars/Olympus' (use an IANA name such as Asia/Shanghai)" in str(caught.value)


def test_the_city_time_zone_reaches_the_pages_clock_and_triage_exif_times(tmp_path, bus_jpg, monkeypatch):
    """Through real consumers: GET /meta (the review pages' clock) and `streetwatch triage --config` reading an
    EXIF time without an offset, both set by the one top-level line."""
    from datetime import datetime

    from fastapi.testclient import TestClient

    from tests.api_helpers import auth, make_app
    from tests.triage_helpers import phone_photo

    monkeypatch.delenv("STREETWATCH_EVIDENCE_KEY", raising=False)
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump({"timezone": "Europe/Berlin", "cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
                                      "service": {"data_dir": str(tmp_path / "service")},
                                      "triage": {"ocr": "off", "workers": 1, "verifier": "none"}}), encoding="utf-8")
    app, tokens = make_app(load_settings(config))
    with TestClient(app) as client:
        assert client.get("/api/v1/meta", headers=auth(tokens["inspector"])).json()["timezone"] == "Europe/Berlin"

    photo = phone_photo(bus_jpg, tmp_path / "photos" / "bus.jpg", taken=datetime(2023, 11, 29, 10, 15, 22))  # no offset tag
    result = CliRunner().invoke(cli, ["triage", str(photo), "--out", str(tmp_path / "out"), "--config", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    [record] = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert (record["taken_at"], record["time_source"]) == ("2023-11-29T10:15:22+01:00", "exif")  # Berlin's winter, not +08:00


def test_configuration_files_are_replaced_whole(tmp_path):
    """A promotion record or card is written beside and renamed over the old one: never a truncated file."""
    from detect.config_io import write_text_atomic

    target = tmp_path / "promoted.yaml"
    target.write_text("model: old\n", encoding="utf-8")
    before = target.stat().st_ino
    assert write_text_atomic(target, "model: 新\n") == target
    assert target.read_text(encoding="utf-8") == "model: 新\n" and target.stat().st_ino != before  # a new file renamed in
    assert [p.name for p in tmp_path.iterdir()] == ["promoted.yaml"]  # no temporary file left


def test_a_key_written_twice_is_refused_naming_it_and_both_lines(tmp_path):
    """A line copied down and edited (a second `deduct:` in one sheet item, a second `queue_size:`) was read as the
    last value without a word; the file is refused naming the key and both lines, nested mappings too, while YAML's
    `<<:` merge keys may still be overridden (that is what they are for)."""
    lines = EXAMPLE_SHEET.read_text(encoding="utf-8").splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == "deduct: 1")  # the first item's deduct
    sheet = tmp_path / "sheet.yaml"
    sheet.write_text("\n".join(lines[:at + 1] + [lines[at].replace("1", "2")] + lines[at + 1:]) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_model(Sheet, sheet)
    assert str(refused.value) == (f"{sheet}: key 'deduct' is written twice in one mapping (lines {at + 1} and {at + 2}): "
                                  "YAML would keep the second without a word; delete or rename one")

    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(EXAMPLE_FILES["cameras"][0].read_text(encoding="utf-8") + "queue_size: 8\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{cameras}: key 'queue_size' is written twice in one mapping \(lines 9 and \d+\)"):
        load_model(CamerasFile, cameras)

    merged = tmp_path / "settings.yaml"
    merged.write_text("x-rules: &rules {update_stable_s: 90, group_gap: 0.8}\nrules:\n  <<: *rules\n  group_gap: 0.5\n",
                      encoding="utf-8")
    from detect.config_io import read_mapping

    assert read_mapping(merged)["rules"] == {"update_stable_s": 90, "group_gap": 0.5}


def test_a_key_written_twice_in_a_json_file_is_refused_naming_it(tmp_path):
    """YAML files refused a key written twice, but a .json one (a grid file exported as grid.json whose cell got a second `"squad"`, a settings .json) was read as the second value without a word: the
    cell counted for the wrong squad. It is refused the same way, naming the file and the key (`json` gives no lines)."""
    from pipelines.grid import load_grid
    from tests.analytics_helpers import write_grid

    grid = write_grid(tmp_path / "grid.json")
    text = grid.read_text(encoding="utf-8")
    grid.write_text(text.replace('"squad": "一中队"}', '"squad": "一中队", "squad": "二中队"}', 1), encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_grid(grid)
    assert str(refused.value) == (f"{grid}: key 'squad' is written twice in one object: JSON would keep the second "
                                  "without a word; delete or rename one")

    settings = tmp_path / "streetwatch.json"
    settings.write_text('{"timezone": "Asia/Shanghai", "cases": {}, "timezone": "Europe/Berlin"}', encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{settings}: key 'timezone' is written twice in one object"):
        load_settings(settings)
    assert write_grid(grid) and load_grid(grid)  # the file as written, each key once, still reads


def test_a_geojson_file_is_read_as_json(tmp_path):
    """A .geojson file was read as YAML, so a valid grid file indented with tabs (as some GIS tools write it) was
    refused as 'not valid YAML' (a tab cannot indent YAML), and a key written twice there was called a YAML mapping's.
    It is read as the JSON it is: the analytics grid loads, and a key written twice is refused as in a .json file."""
    from pipelines.analytics.config import AnalyticsConfig
    from pipelines.analytics.places import load_places
    from tests.analytics_helpers import CELLS, write_grid

    grid = write_grid(tmp_path / "grid.geojson")
    grid.write_text(json.dumps(json.loads(grid.read_text(encoding="utf-8")), ensure_ascii=False, indent="\t"), encoding="utf-8")
    assert "\n\t\"features\": [" in grid.read_text(encoding="utf-8")  # tab-indented, as a GIS tool writes it
    places = load_places(AnalyticsConfig(grid=grid))
    assert places.known_units("street") == list(dict.fromkeys(street for _, _, street, _ in CELLS)) and len(places.cells) == len(CELLS)

    text = grid.read_text(encoding="utf-8")
    grid.write_text(text.replace('"squad": "一中队"', '"squad": "一中队",\n"squad": "二中队"', 1), encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_places(AnalyticsConfig(grid=grid))
    assert f"{grid}: key 'squad' is written twice in one object: JSON would keep the second without a word" in str(refused.value)


def test_a_refused_value_is_shown_and_a_long_one_cut(tmp_path):
    """`deduct: 1分` said only 'Input should be a valid number', leaving the user to find which of many lines; the
    value refused is shown after the reason (cut at 80 characters), not for a missing field or a whole section."""
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"tracking": {"lost_s": "二十秒" * 40}, "rules": {"group_gap": [0.4]}, "triage": {"cases": {}}},
                                       allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_settings(settings)
    lines = str(refused.value).splitlines()
    long = next(line for line in lines if ": tracking.lost_s: " in line)
    assert long.endswith(f" (got '{'二十秒' * 26}…)")  # the quote, 78 characters and the … make 80
    assert f"{settings}: rules.group_gap: Input should be a valid number (got [0.4])" in lines
    assert f"{settings}: triage.cases: Input should be a valid boolean" in lines  # a mapping is not repeated back


def test_a_windows_path_in_the_settings_is_refused_naming_the_file_and_the_field(tmp_path, monkeypatch):
    """`data_dir: C:\\streetwatch\\service`, copied from a Windows machine, is one relative file name on Linux: `serve`
    made a folder of that name where it ran and kept its jobs there, without a word. Every such path is refused
    (an input file among them once, not also as 'file not found'); nothing is created."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "settings.yaml"
    config.write_text("service:\n  data_dir: C:\\streetwatch\\service\nevidence_store:\n  local_root: D:/evidence\n"
                      "taxonomy:\n  city_codes: [city\\hangzhou.yaml]\ncases:\n  url: sqlite:///C:\\streetwatch\\cases.db\n",
                      encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    lines = str(refused.value).splitlines()
    assert [line.split(": a Windows path")[0] for line in lines] == [
        f"{config}: cases.url: sqlite:///C:\\streetwatch\\cases.db",  # a SQLite URL's file too
        f"{config}: evidence_store.local_root: D:/evidence", f"{config}: service.data_dir: C:\\streetwatch\\service",
        f"{config}: taxonomy.city_codes.0: city\\hangzhou.yaml"]
    assert all("write it with /" in line for line in lines) and list(tmp_path.iterdir()) == [config]
    assert "(e.g. sqlite:////srv/streetwatch/cases.db)" in lines[0]


@pytest.mark.parametrize("url, says", [
    ("postgres://streetwatch@127.0.0.1:5432/streetwatch", "postgres:// is not SQLAlchemy's name for PostgreSQL"),
    ("mysql://streetwatch@127.0.0.1/streetwatch", "mysql:// is not a database the case store runs on"),
    ("streetwatch-data/cases.db", "not a database URL"),
    ("postgresql+nodriver://streetwatch@127.0.0.1/streetwatch", "postgresql+nodriver://: no such driver")])
def test_a_case_store_url_the_store_cannot_open_is_one_line_naming_the_setting(tmp_path, url, says):
    """`cases.url: postgres://…` (as hosting platforms write it), another database or a bare path stopped every command
    with SQLAlchemy's traceback (NoSuchModuleError, ArgumentError), naming neither the settings file nor the field:
    one line does, with what to write, exit code 2 (as `users list` met it, the first command an administrator runs)."""
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump({"cases": {"url": url}}), encoding="utf-8")
    result = CliRunner().invoke(cli, ["users", "list", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert f"{config}: cases.url: " in result.output and says in result.output
    assert "write sqlite:///path/to/cases.db or postgresql+psycopg://user@host/db" in result.output


def test_a_missing_settings_file_named_by_the_environment_says_so(tmp_path, monkeypatch):
    """`STREETWATCH_CONFIG=/nope.yaml` said only '/nope.yaml: file not found', naming no origin for a path the
    command line never gave (commands read the variable as their --config)."""
    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv("STREETWATCH_CONFIG", str(missing))
    with pytest.raises(ConfigError, match=f"^{missing}: file not found \\(the settings file the environment variable "
                                          "STREETWATCH_CONFIG names"):
        load_settings()
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 2 and "environment variable STREETWATCH_CONFIG" in result.output, result.output
    monkeypatch.delenv("STREETWATCH_CONFIG")
    with pytest.raises(ConfigError, match=f"^{missing}: file not found$"):  # given on the command line: no variable named
        load_settings(missing)


_LOADS: list[Path] = []


def _counted(path: Path) -> dict:
    """`read_mapping`, each read counted: what `loaded_file` caches in the tests below."""
    _LOADS.append(path)
    return read_mapping(path)


def test_a_file_edited_in_place_within_its_timestamp_tick_is_read_again(tmp_path):
    """loaded_file kept a file's content by its stamp (modified time, size, inode); an edit in place of the same size
    within the file system's timestamp tick left all three as they were, and the edit was never seen until the file
    changed again. A file modified just before it was read is read again at its next use."""
    path = tmp_path / "squads.yaml"
    path.write_text("squad: a\n", encoding="utf-8")
    first = os.stat(path).st_mtime_ns
    assert loaded_file(_counted, path) == {"squad": "a"}
    path.write_text("squad: b\n", encoding="utf-8")  # the same size, the same inode
    os.utime(path, ns=(first, first))  # and the modified time it had: within the tick
    assert loaded_file(_counted, path) == {"squad": "b"}


def test_a_file_just_written_is_read_once_while_it_does_not_change(tmp_path):
    """A file modified just before it was read is checked by its content until its stamp can be trusted, not loaded
    again (what a cache that logs a broken file once per change counts on)."""
    path = tmp_path / "squads.yaml"
    path.write_text("squad: a\n", encoding="utf-8")
    _LOADS.clear()
    assert loaded_file(_counted, path) == loaded_file(_counted, path) == {"squad": "a"}
    assert _LOADS == [path]


def test_a_file_once_settled_is_checked_by_a_stat_alone(tmp_path, monkeypatch):
    """The content of a file read just after its modification is compared at each check only until its stamp can be
    trusted; then its digest is dropped and the check is a stat again."""
    import detect.config_io as config_io

    path = tmp_path / "squads.yaml"
    path.write_text("squad: a\n", encoding="utf-8")
    with config_io.files_read() as read:
        read_mapping(path)
    [(_, stamp, digest)] = read
    assert digest is not None and config_io.unchanged(read) == read  # unsettled: its content checked, kept
    monkeypatch.setattr(config_io, "UNSETTLED_NS", 0)  # as when the tick has passed
    assert config_io.unchanged(read) == [(path, stamp, None)]


def _outer(path: Path) -> dict:
    """A loader calling `loaded_file` itself, as the case page's zone name reads the scene through its cache."""
    return {"outer": loaded_file(_counted, path)}


def test_a_loader_calling_loaded_file_is_loaded_again_when_a_file_of_the_inner_one_changes(tmp_path):
    """A loader whose `loaded_file` call found its value kept recorded no file read, so it was kept for ever."""
    path = tmp_path / "squads.yaml"
    path.write_text("squad: a\n", encoding="utf-8")
    assert loaded_file(_counted, path) == {"squad": "a"}  # the inner value kept first
    assert loaded_file(_outer, path) == {"outer": {"squad": "a"}}
    path.write_text("squad: bb\n", encoding="utf-8")
    assert loaded_file(_outer, path) == {"outer": {"squad": "bb"}}
