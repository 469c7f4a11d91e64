"""The whole retraining loop on real photos: 1 epoch at imgsz 160, then the promotion gate.

import -> retrain (merge onto project classes, grouped split, check, train, ONNX export, eval,
registry card, gate) -> forced promotion -> gate pass for the model's own ONNX export, and the
engine's default model following the promoted pointer.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import onnxruntime as ort
import yaml
from typer.testing import CliRunner

from detect.registry import get_card, promoted, promoted_model
from detect.digests import sha256_file
from pipelines.retrain.dataset import Dataset
from streetwatch.cli import app

runner = CliRunner()


def _source(real_sample_dir, dest, name, n):
    (dest / "images").mkdir(parents=True)
    (dest / "labels").mkdir()
    shutil.copy(real_sample_dir / name / "classes.txt", dest)
    for image in sorted((real_sample_dir / name / "images").glob("*.jpg"))[:n]:
        shutil.copy(image, dest / "images")
        shutil.copy(real_sample_dir / name / "labels" / f"{image.stem}.txt", dest / "labels")
    return dest


@pytest.mark.slow  # trains a detector for an epoch and exports it: the longest case of the default suite
def test_retrain_loop_registers_a_model_and_the_gate_decides(real_sample_dir, tmp_path, monkeypatch):
    models = tmp_path / "models"
    monkeypatch.setenv("STREETWATCH_MODELS", str(models))  # registry, weights and runs go here
    for name, n, extra in (("facades-ads", 8, ["--group-regex", r"img_(\d*)\d\."]), ("street-garbage", 8, [])):
        src = _source(real_sample_dir, tmp_path / "src" / name, name, n)
        result = runner.invoke(app, ["data", "import", str(src), "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output

    # three reviewed cases: two confirmed garbage photos (boxes in pixels) and one rejected
    reviews = []
    for i, image in enumerate(sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[8:11]):
        rows = [list(map(float, line.split())) for line in
                (real_sample_dir / "street-garbage" / "labels" / f"{image.stem}.txt").read_text().splitlines()]
        boxes = [{"class_name": "garbage", "xyxy": [640 * (cx - w / 2), 640 * (cy - h / 2), 640 * (cx + w / 2), 640 * (cy + h / 2)]}
                 for _, cx, cy, w, h in rows]
        reviews.append({"case_id": f"c{i}", "violation_type": "exposed_garbage", "source_id": f"cam-{i}", "image": str(image),
                        "decision": "rejected" if i == 2 else "approved", "reason": "not garbage", "boxes": boxes})
    (tmp_path / "review.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reviews))

    work = tmp_path / "work"
    result = runner.invoke(app, [
        "retrain", "--name", "tiny-ft", "--cases", str(tmp_path / "review.jsonl"),
        "--data", str(tmp_path / "facades-ads"), "--data", str(tmp_path / "street-garbage"),
        "--map", "cantilever=signboard", "--drop-unmapped", "--epochs", "1", "--imgsz", "160", "--batch", "4",
        "--val", "0.25", "--work", str(work), "--promote",
    ])
    # a garbage/signboard model would end parking and stall detection: the gate refuses (exit 3)
    assert result.exit_code == 3, result.output
    assert "gate vs yolo11n: refused" in result.output and "illegal_parking: the current model can detect it" in result.output
    assert promoted_model() is None

    summary = json.loads((work / "retrain.json").read_text())
    assert summary["steps"]["from_cases"]["counts"]["images"] == 3 and summary["steps"]["from_cases"]["counts"]["negatives"] == 1
    data = Dataset(summary["steps"]["split"]["dataset"])
    # the rejected garbage photo says nothing of the signboards the merge trains too: left out, and said
    assert sum(1 for f in data.files() if "tiny-ft-cases__" in f.image) == 2
    [left_out] = summary["steps"]["merge"]["left_out"]
    assert left_out.startswith("tiny-ft-cases: 1 hard negatives (rejected cases) left out, as their rejection says nothing "
                               "about signboard") and left_out.endswith("images/c2.jpg")
    assert data.classes == ["garbage", "signboard"] + (["win_ad"] if "win_ad" in data.classes else [])
    assert data.files("train") and data.files("val")

    run = models / "runs" / "tiny-ft"
    for artifact in ("args.yaml", "results.csv", "results.png", "data.yaml", "weights/best.pt", "streetwatch.json"):
        assert (run / artifact).is_file(), artifact
    assert list(run.glob("*PR_curve.png")) and list(run.glob("confusion_matrix*.png"))
    assert yaml.safe_load((run / "args.yaml").read_text())["epochs"] == 1
    assert len((run / "results.csv").read_text().strip().splitlines()) == 2  # header + 1 epoch
    assert json.loads((run / "streetwatch.json").read_text())["dataset"]["digest"] == data.digest

    card = get_card("tiny-ft")
    assert card.dataset["digest"] == data.digest and card.dataset["splits"]["val"]["images"] == len(data.files("val"))
    assert card.classes == data.classes and card.license == "AGPL-3.0" and card.imgsz == 160
    assert card.training["epochs"] == 1 and card.training["base"] == "yolo11n" and card.training["amp"] is False
    assert card.sha256["tiny-ft.pt"] == sha256_file(models / "tiny-ft.pt")
    ev = card.metrics["eval"]
    assert ev["digest"] == data.digest and ev["split"] == "val"
    assert set(ev["box"]["per_class"]) <= set(data.classes) and "mAP50-95" in ev["box"]["overall"]
    garbage_val = sum(1 for f in data.files("val") if 0 in data.labels(f).boxes[:, 0])
    g = ev["cases"]["per_type"]["exposed_garbage"]
    assert g["positives"] == garbage_val and g["tp"] + g["fp"] + g["fn"] + g["tn"] == len(data.files("val"))
    assert card.thresholds["types"]["exposed_garbage"]["min_conf"] == 0.3

    onnx_card = get_card("tiny-ft-160-dyn")
    assert onnx_card.format == "onnx" and onnx_card.exported_from == "tiny-ft" and onnx_card.dataset["digest"] == data.digest
    for name, channels in (("tiny-ft-160-dyn", 4 + len(data.classes)),  # standard graph: boxes, then the classes
                           ("tiny-ft-160-dyn-rawbox", 4 * 16 + len(data.classes))):  # engine's: 16 distance bins per box side
        sess = ort.InferenceSession(str(models / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        out = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 3, 160, 160), np.float32)})[0]
        assert out.shape[1] == channels, name
        assert get_card(name).dataset["digest"] == data.digest

    [decision] = [json.loads(line) for line in (models / "registry" / "promotions.jsonl").read_text().splitlines()]
    assert decision["candidate"] == "tiny-ft" and decision["passed"] is False and decision["promoted"] is False
    assert decision["per_type"]["street_stall"]["verdict"] == "lost"

    # the data team may override, with a reason that is recorded
    split = str(data.root)
    result = runner.invoke(app, ["models", "promote", "tiny-ft", "--data", split, "--force"])
    assert result.exit_code == 2 and "--force needs --reason" in result.stderr
    result = runner.invoke(app, ["models", "promote", "tiny-ft", "--data", split, "--force", "--reason", "garbage pilot district"])
    assert result.exit_code == 0, result.output
    assert "promoted tiny-ft (FORCED: garbage pilot district)" in result.output
    assert f"in place of yolo11n; to go back: streetwatch models promote yolo11n --data {split}" in result.output
    record = promoted()
    assert record.model == "tiny-ft" and record.forced and record.reason == "garbage pilot district"
    assert record.previous == "yolo11n" and record.data_digest == data.digest  # the default it replaced, not null

    # the model's own ONNX export is exactly as good: the gate passes without force
    result = runner.invoke(app, ["models", "promote", "tiny-ft-160-dyn", "--data", split])
    assert result.exit_code == 0, result.output
    assert "gate tiny-ft-160-dyn vs tiny-ft (tolerance 0.02): passed" in result.output
    assert promoted().previous == "tiny-ft" and not promoted().forced

    from detect.engine import load_detector

    detector = load_detector(imgsz=160)  # no model named: the promoted one
    assert detector.model_id == "tiny-ft-160-dyn" and list(detector.names.values()) == data.classes
    log = [json.loads(line) for line in (models / "registry" / "promotions.jsonl").read_text().splitlines()]
    assert [(d["candidate"], d["passed"], d["forced"], d["promoted"]) for d in log] == [
        ("tiny-ft", False, False, False), ("tiny-ft", False, True, True), ("tiny-ft-160-dyn", True, False, True)]

    # the promoted model's card broken by a hand edit: the comparison is refused naming the file and the reason
    card = models / "registry" / "tiny-ft-160-dyn.yaml"
    card.write_text(card.read_text(encoding="utf-8").replace("format: onnx", "format: tensorrt"), encoding="utf-8")
    result = runner.invoke(app, ["models", "promote", "tiny-ft", "--data", split])
    assert result.exit_code == 2 and f"the card of model 'tiny-ft-160-dyn' cannot be used: {card}: format:" in result.output
    assert "mend its card" in result.output and promoted().model == "tiny-ft-160-dyn"

    # the promoted model's card deleted: nothing to compare with, so it is refused plainly and replaced only with --force
    card.unlink()
    result = runner.invoke(app, ["models", "promote", "tiny-ft", "--data", split])
    assert result.exit_code == 2 and "the promoted model 'tiny-ft-160-dyn'" in result.output, result.output
    assert "has no card any more" in result.output and "--force --reason" in result.output
    result = runner.invoke(app, ["models", "promote", "tiny-ft", "--data", split, "--force", "--reason", "card lost"])
    assert result.exit_code == 0, result.output
    assert promoted().model == "tiny-ft" and promoted().forced and promoted().previous == "tiny-ft-160-dyn"


@pytest.mark.slow  # trains a detector for an epoch (about 40 s)
def test_a_night_whose_reviews_give_the_detector_nothing_trains_on_its_data_sets(real_sample_dir, tmp_path, monkeypatch):
    """With the verifier promoted, stall and flyposting cases carry only its image/tile regions, which teach a detector
    nothing: `retrain --cases … --data …` stopped with 'no usable reviewed cases' (exit 2), so a nightly job failed
    every night. It trains on its --data sets, and retrain.json says why the cases were skipped. Without --data it
    still stops: there is nothing to train on."""
    monkeypatch.setenv("STREETWATCH_MODELS", str(tmp_path / "models"))
    src = _source(real_sample_dir, tmp_path / "src", "street-garbage", 8)
    assert runner.invoke(app, ["data", "import", str(src), "--out", str(tmp_path / "garbage")]).exit_code == 0
    image = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[9]
    review = {"case_id": "c-wall", "violation_type": "flyposting", "decision": "approved", "image": str(image),
              "boxes": [{"class_name": "verified:flyposting", "xyxy": [0, 0, 640, 640]}]}
    (tmp_path / "review.jsonl").write_text(json.dumps(review) + "\n")

    alone = runner.invoke(app, ["retrain", "--name", "no-data", "--cases", str(tmp_path / "review.jsonl"),
                                "--work", str(tmp_path / "alone")])
    assert alone.exit_code == 2 and "no usable reviewed cases" in alone.output, alone.output

    result = runner.invoke(app, ["retrain", "--name", "data-only", "--cases", str(tmp_path / "review.jsonl"),
                                 "--data", str(tmp_path / "garbage"), "--epochs", "1", "--imgsz", "160", "--batch", "4",
                                 "--val", "0.25", "--work", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    assert "model data-only registered" in result.output
    summary = json.loads((tmp_path / "work" / "retrain.json").read_text())
    assert "no usable reviewed cases" in summary["steps"]["from_cases"]["skipped"]
