"""`streetwatch rules taxonomy|check` through the real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from streetwatch.cli import app

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "scene-example.yaml"


def test_taxonomy_lists_types_with_codes():
    result = CliRunner().invoke(app, ["rules", "taxonomy"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "street_stall" in result.output and "05/0501" in result.output and "flyposting" in result.output
    shop_sign = next(line for line in result.output.splitlines() if "shop_sign" in line)  # the class roles follow
    assert [c.strip() for c in shop_sign.split("│")[1:8]] == ["shop_sign", "", "yes", "yes", "", "", "bottom_center"]


def test_check_accepts_the_example_and_refuses_a_bad_scene(tmp_path: Path):
    result = CliRunner().invoke(app, ["rules", "check", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "camera hz-xihu-0417, 7 zones" in result.output
    bad = tmp_path / "cam.yaml"
    bad.write_text("camera_id: c\nzones:\n- {id: z, kind: no_parking, polygon: [[0, 0], [1, 1], [1, 0], [0, 1]]}\n")
    result = CliRunner().invoke(app, ["rules", "check", str(EXAMPLE), str(bad)])
    assert result.exit_code == 2
    assert "cam.yaml: zones.0.polygon: 多边形自相交或无效" in result.output


def test_check_refuses_a_city_zones_file_with_two_zones_of_one_id(tmp_path: Path):
    """A map-zones file whose second zone had an id the first had passed `rules check`, the second never used."""
    ring = [[120.1, 30.2], [120.2, 30.2], [120.2, 30.3], [120.1, 30.2]]
    zones = tmp_path / "zones.geojson"
    zones.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"id": "gate", "kind": kind}}
        for kind in ("no_parking", "sidewalk")]}), encoding="utf-8")
    result = CliRunner().invoke(app, ["rules", "check", str(zones)])
    assert result.exit_code == 2, result.output
    assert ("zones.geojson: features.1.properties.id: 区域编号 'gate' 重复：features.0.properties 与 features.1.properties"
            in result.output), result.output


def test_check_warns_of_a_reference_snapshot_the_moved_camera_check_cannot_use(tmp_path: Path, bus_jpg: Path):
    """`rules check` said ok for a scene whose reference snapshot is missing, where the watcher runs the camera without
    its moved-camera check (and refuses it with OCR on): it warns naming the file, and --strict exits 1."""
    scene = tmp_path / "cam.yaml"

    def check(reference: str, *options: str):
        scene.write_text(f"camera_id: cam\nreference_snapshot: {reference}\nzones: []\n", encoding="utf-8")
        return CliRunner().invoke(app, ["rules", "check", str(scene), *options])

    (tmp_path / "view.jpg").write_bytes(bus_jpg.read_bytes())
    for options in ((), ("--strict",)):
        result = check("view.jpg", *options)
        assert result.exit_code == 0 and result.output == f"ok {scene}: camera cam, 0 zones\n", result.output
    result = check("moved-away.jpg")
    assert result.exit_code == 0, result.output
    assert (f"warning: {scene}: reference_snapshot: {tmp_path / 'moved-away.jpg'}: file not found: "
            "the moved-camera check will not run for camera cam") in result.output
    assert f"checked {scene}: camera cam, 0 zones, 1 warning" in result.output and f"ok {scene}" not in result.output
    strict = check("moved-away.jpg", "--strict")
    assert strict.exit_code == 1 and "1 of 1 file with warnings (--strict)" in strict.output
    (tmp_path / "notes.jpg").write_text("not a picture", encoding="utf-8")
    assert f"{tmp_path / 'notes.jpg'}: not an image OpenCV can read" in check("notes.jpg").output


def test_taxonomy_refuses_a_city_with_no_code_table():
    """`rules taxonomy --city shanghai` (no code file for it) showed `-` for every code as if the table were empty;
    it is refused as a deployment naming such a city is, naming the cities that have a table and where one goes."""
    hangzhou = Path(__file__).resolve().parents[1] / "docs" / "examples" / "city-codes-hangzhou.yaml"
    result = CliRunner().invoke(app, ["rules", "taxonomy", "--city-file", str(hangzhou), "--city", "shanghai"])
    assert result.exit_code == 2, result.output
    assert ("error: --city: no code table for city 'shanghai' (cities: default, hangzhou); pass its code file with "
            "--city-file (example: docs/examples/city-codes-hangzhou.yaml)") in " ".join(result.output.split()), result.output
    assert "street_stall" not in result.output
    shown = CliRunner().invoke(app, ["rules", "taxonomy", "--city-file", str(hangzhou), "--city", "hangzhou"], env={"COLUMNS": "250"})
    assert shown.exit_code == 0 and "13/1301" in shown.output, shown.output


def test_the_rules_commands_judge_by_the_deployment_s_taxonomy_from_its_settings(tmp_path: Path):
    """A deployment with its own taxonomy (settings' `taxonomy.path`) had its scene files checked, and its types listed,
    against the shipped one unless `--taxonomy` was given, where `watch` reads the settings' file."""
    shipped = (Path(__file__).resolve().parents[1] / "detect" / "taxonomy.yaml").read_text(encoding="utf-8")
    renamed = shipped.replace("  illegal_parking:\n", "  car_parking:\n", 1)
    assert renamed != shipped
    (tmp_path / "taxonomy.yaml").write_text(renamed, encoding="utf-8")
    (tmp_path / "settings.yaml").write_text(f"taxonomy: {{path: {tmp_path / 'taxonomy.yaml'}}}\n", encoding="utf-8")
    settings = ["--config", str(tmp_path / "settings.yaml")]
    listed = CliRunner().invoke(app, ["rules", "taxonomy", *settings], env={"COLUMNS": "250"})
    assert listed.exit_code == 0 and "car_parking" in listed.output and "illegal_parking" not in listed.output
    refused = CliRunner().invoke(app, ["rules", "check", str(EXAMPLE), *settings])
    assert refused.exit_code == 2 and "unknown violation type 'illegal_parking'" in refused.output, refused.output
    shipped_file = Path(__file__).resolve().parents[1] / "detect" / "taxonomy.yaml"
    accepted = CliRunner().invoke(app, ["rules", "check", str(EXAMPLE), *settings, "--taxonomy", str(shipped_file)])
    assert accepted.exit_code == 0, accepted.output
