"""`streetwatch rules taxonomy|check` through the real Typer app."""

from __future__ import annotations

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
    assert "cam.yaml: zones.0.polygon: Value error, polygon is self-intersecting" in result.output
