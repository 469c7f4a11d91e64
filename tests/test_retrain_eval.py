"""Evaluation that counts cases (COCO models on real photos labelled in COCO JSON) and the promotion gate."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from detect.taxonomy import load_taxonomy
from pipelines.retrain.evaluate import CaseMetrics, EvalResult, evaluable_types, truth_types
from pipelines.retrain.promote import gate
from streetwatch.cli import app

runner = CliRunner()


def test_coco_import_converts_boxes(coco_dataset):
    assert coco_dataset.classes == ["person", "bus"]
    bus = next(f for f in coco_dataset.files() if f.image.endswith("bus.jpg"))
    boxes = coco_dataset.labels(bus).boxes
    assert boxes[0].tolist() == pytest.approx([1, 400 / 810, 480 / 1080, 800 / 810, 500 / 1080], abs=1e-6)
    assert bus.boxes == 3


def test_a_folder_given_as_coco_says_coco_is_read_from_its_annotation_file(coco_dataset):
    """`data import FOLDER --format coco` stopped with "[Errno 21] Is a directory"; it says what COCO takes instead."""
    result = runner.invoke(app, ["data", "import", str(coco_dataset.root.parent / "coco"), "--format", "coco",
                                 "--out", str(coco_dataset.root.parent / "again")])
    assert result.exit_code != 0 and "a folder; COCO is read from its annotation file" in result.output
    assert not (coco_dataset.root.parent / "again").exists()


def test_case_metrics_count_pictures_after_the_photo_rules(coco_dataset):
    taxonomy = load_taxonomy()
    assert evaluable_types(["person", "bus"], taxonomy) == ["illegal_parking"]  # people alone are no stall
    assert truth_types({"person", "bus"}, taxonomy) == {"illegal_parking"}
    result = runner.invoke(app, ["eval", "--model", "yolo11n", "--data", str(coco_dataset.root), "--backend", "torch",
                                 "--compare", "yolov8n"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "box metrics skipped: model classes ['person', 'bicycle'" in out  # COCO model, 2-class dataset
    assert "yolo11n vs yolov8n on" in out
    for metric in ("precision", "recall"):
        row = next(line for line in out.splitlines() if f"illegal_parking case {metric}" in line)
        assert [c.strip() for c in row.split("│") if c.strip()][-3:] == ["1.000", "1.000", "+0.000"]
    report = json.loads(next((coco_dataset.root.parent / "models" / "runs").glob("eval-yolo11n-*/eval.json")).read_text())
    cases = report["cases"]
    assert cases["split"] is None and cases["images"] == 2 and cases["evaluable"] == ["illegal_parking"]
    assert cases["per_type"]["illegal_parking"] == {"tp": 1, "fp": 0, "fn": 0, "tn": 1, "positives": 1, "predicted": 1,
                                                    "precision": 1.0, "recall": 1.0}
    assert cases["confusion"] == {"illegal_parking": {"illegal_parking": 1, "none": 0},
                                  "none": {"illegal_parking": 0, "none": 1}}
    per_image = {p["image"]: p for p in cases["per_image"]}
    assert per_image["images/bus.jpg"]["predicted"] == ["illegal_parking"]
    assert per_image["images/zidane.jpg"] == {"image": "images/zidane.jpg", "truth": [], "predicted": []}
    assert cases["thresholds"]["types"]["illegal_parking"]["min_conf"] == 0.4


def _result(model: str, classes: list[str], per_type: dict[str, tuple[float | None, float | None]]) -> EvalResult:
    cases = CaseMetrics(model=model, dataset="d", digest="x", split="val", images=10, evaluable=list(per_type),
                        per_type={t: {"precision": p, "recall": r} for t, (p, r) in per_type.items()},
                        confusion={}, thresholds={})
    return EvalResult(model, classes, {}, cases, out_dir=None)


def test_gate_refuses_drops_beyond_tolerance_and_lost_types():
    taxonomy = load_taxonomy()
    current = _result("old", ["garbage", "stall"], {"exposed_garbage": (0.80, 0.60), "street_stall": (0.9, 0.5)})
    within = _result("new", ["garbage", "stall"], {"exposed_garbage": (0.79, 0.70), "street_stall": (0.95, 0.49)})
    assert gate(within, current, tolerance=0.02, taxonomy=taxonomy).passed
    worse = _result("new", ["garbage", "stall"], {"exposed_garbage": (0.90, 0.57), "street_stall": (0.95, 0.5)})
    decision = gate(worse, current, tolerance=0.02, taxonomy=taxonomy)
    assert not decision.passed
    assert decision.reasons == ["exposed_garbage: case recall 0.570 < current 0.600 - tolerance 0.02"]
    assert decision.per_type["street_stall"]["verdict"] == "ok"
    lost = _result("new", ["garbage"], {"exposed_garbage": (0.9, 0.9)})
    decision = gate(lost, current, tolerance=0.02, taxonomy=taxonomy)
    assert decision.reasons == ["street_stall: the current model can detect it, the candidate has none of its evidence classes"]
    silent = _result("new", ["garbage", "stall"], {"exposed_garbage": (None, 0.0), "street_stall": (0.9, 0.5)})
    assert "exposed_garbage: case recall 0.000" in gate(silent, current, tolerance=0.02, taxonomy=taxonomy).reasons[0]
