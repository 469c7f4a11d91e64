"""Dataset versions on real photos: import, check (bad input per file), split, merge, stats, from-cases."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv
from typer.testing import CliRunner

from detect.digests import sha256_file
from pipelines.retrain.check import check_dataset
from pipelines.retrain.classes import load_classes
from pipelines.retrain.dataset import Dataset, DatasetError, Item, content_digest, parse_labels, write_dataset
from pipelines.retrain.importers import import_yolo
from pipelines.retrain.merge import merge_datasets, parse_mapping
from pipelines.retrain.split import split_dataset
from streetwatch.cli import app

runner = CliRunner()


def yolo_source(real_sample_dir: Path, dest: Path, name: str, n: int) -> Path:
    """A YOLO folder with the first `n` pictures (and labels, classes.txt) of a real-sample set."""
    src = real_sample_dir / name
    (dest / "images").mkdir(parents=True)
    (dest / "labels").mkdir()
    shutil.copy(src / "classes.txt", dest)
    for image in sorted((src / "images").glob("*.jpg"))[:n]:
        shutil.copy(image, dest / "images")
        shutil.copy(src / "labels" / f"{image.stem}.txt", dest / "labels")
    return dest


@pytest.fixture
def facades(real_sample_dir, tmp_path) -> Path:
    return yolo_source(real_sample_dir, tmp_path / "src-facades", "facades-ads", 12)


@pytest.fixture
def garbage(real_sample_dir, tmp_path) -> Path:
    return yolo_source(real_sample_dir, tmp_path / "src-garbage", "street-garbage", 10)


def test_import_writes_a_manifest_that_names_every_file(facades, tmp_path):
    result = runner.invoke(app, ["data", "import", str(facades), "--out", str(tmp_path / "v1"),
                                 "--group-regex", r"img_(\d*)\d\."])
    assert result.exit_code == 0, result.output
    assert "passes data check: 12 images, 0 errors" in result.output
    ds = Dataset(tmp_path / "v1")
    assert ds.classes == ["window", "cantilever", "arch", "signboard", "win_ad", "door"]
    assert len(ds.files()) == 12
    src_labels = sorted((facades / "labels").glob("*.txt"))
    boxes = sum(len(p.read_text().split("\n")) - 1 for p in src_labels)
    assert ds.manifest.counts["boxes"] == boxes
    for entry in ds.files():
        assert entry.sha256 == sha256_file(facades / "images" / Path(entry.image).name)
        assert entry.group == Path(entry.image).stem[4:-1]  # img_170 -> group "17"
    assert ds.digest == content_digest(ds.classes, ds.files())
    # same content, same digest: a second import of the same folder is the same version
    again, _ = import_yolo(facades, tmp_path / "v2", group_regex=r"img_(\d*)\d\.")
    assert again.digest == ds.digest
    (tmp_path / "v3").mkdir()
    (tmp_path / "v3" / "keep").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        import_yolo(facades, tmp_path / "v3")


def test_check_reports_bad_input_per_file_with_reasons(garbage, bus_jpg, tmp_path):
    images, labels = garbage / "images", garbage / "labels"
    pics = sorted(images.glob("*.jpg"))
    (labels / f"{pics[0].stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 zero 0.1 0.1\n")
    (labels / f"{pics[1].stem}.txt").write_text("3 0.5 0.5 0.2 0.2\n")
    (labels / f"{pics[2].stem}.txt").write_text("0 1.4 0.5 0.2 0.2\n0 0.5 0.5 0.0 0.3\n0 0.5 0.5 0.2\n")
    (labels / f"{pics[3].stem}.txt").write_text("0 0.95 0.5 0.3 0.2\n0 0.5 0.5 0.001 0.5\n")
    (labels / f"{pics[4].stem}.txt").unlink()  # image without labels
    (labels / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # labels without image
    (images / "notes.jpg").write_text("this is not a photo")
    (labels / "notes.txt").write_text("")
    shutil.copy(pics[5], images / "copy.jpg")
    shutil.copy(labels / f"{pics[5].stem}.txt", labels / "copy.txt")

    result = runner.invoke(app, ["data", "import", str(garbage), "--out", str(tmp_path / "bad")])
    assert result.exit_code == 0, result.output
    assert "ghost.txt: label file without an image" in result.output
    assert "FAILS data check" in result.output

    result = runner.invoke(app, ["data", "check", str(tmp_path / "bad")])
    assert result.exit_code == 1
    out = result.output
    assert f"labels/{pics[0].stem}.txt: line 2: not numbers" in out
    assert f"labels/{pics[1].stem}.txt: line 1: class id 3 unknown (dataset has 1 classes: 0..0)" in out
    assert f"labels/{pics[2].stem}.txt: line 1: coordinates out of range 0..1" in out
    assert f"labels/{pics[2].stem}.txt: line 2: degenerate box (zero width or height)" in out
    assert f"labels/{pics[2].stem}.txt: line 3: expected 5 fields 'class cx cy w h', got 4" in out
    assert f"labels/{pics[3].stem}.txt: line 1: box extends beyond the image" in out
    assert f"labels/{pics[3].stem}.txt: line 2: degenerate box (0.6x" in out  # 0.001 of 640 px
    assert f"images/{pics[4].name}: image without a label file" in out
    assert "images/notes.jpg: not an image (unrecognised format)" in out
    assert "warning: images/copy.jpg: same picture (sha256) as" in out or f"warning: images/{pics[5].name}: same picture" in out
    assert "FAILS data check: 12 images, 9 errors" in out

    # files changed or added after the manifest was written are errors too
    ds = Dataset(tmp_path / "bad")
    (ds.root / "labels" / f"{pics[6].stem}.txt").write_text("0 0.5 0.5 0.3 0.3\n")
    shutil.copy(bus_jpg, ds.root / "images" / "bus.jpg")
    reasons = {(f.path, f.reason) for f in check_dataset(ds).findings}
    assert (f"labels/{pics[6].stem}.txt", "changed since the manifest was written (sha256 differs from manifest.json)") in reasons
    assert ("images/bus.jpg", "image not in manifest.json (added after the version was written?)") in reasons

    # and training refuses the dataset before any work (exit 2, the reason on stderr)
    result = runner.invoke(app, ["train", "--data", str(ds.root), "--name", "never", "--epochs", "1"])
    assert result.exit_code == 2 and "FAILS data check" in result.stderr and "--allow-check-failures" in result.stderr


@pytest.mark.parametrize("taken, why", [
    ("yolo11n-640-dyn", "the registry already has the onnx model 'yolo11n-640-dyn' (exported from yolo11n"),  # an export
    ("yolo11n", "the registry already has the pt model 'yolo11n' (Ultralytics YOLO11n COCO release"),  # shipped card
    ("yolov8s", "the registry already has the pt model 'yolov8s' (Ultralytics release"),  # a release name, no card
    ("street-v3", "'street-v3' is the promoted model (registry/promoted.yaml)")])  # promoted, its card since removed
def test_train_refuses_a_name_another_model_answers_to(garbage, tmp_path, monkeypatch, taken, why):
    """`train --name` wrote models/registry/NAME.yaml whatever had that id: an export's card was replaced (its .onnx
    then unreachable), a shipped card or a release name shadowed (`--model yolo11n` loaded the fine-tune), a promoted
    id made the untested model every pipeline's default. Refused before any training, naming the model and a free id."""
    models = tmp_path / "models"
    (models / "registry").mkdir(parents=True)
    monkeypatch.setenv("STREETWATCH_MODELS", str(models))
    export_card = models / "registry" / "yolo11n-640-dyn.yaml"
    shutil.copy(Path(__file__).resolve().parents[1] / "models" / "registry" / "yolo11n-640-dyn.yaml", export_card)
    (models / "registry" / "promoted.yaml").write_text("model: street-v3\npromoted_at: 2025-03-01T00:00:00Z\n")
    before = export_card.read_bytes()
    result = runner.invoke(app, ["data", "import", str(garbage), "--out", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    ds = split_dataset(Dataset(tmp_path / "v"), tmp_path / "split", val_fraction=0.3)
    result = runner.invoke(app, ["train", "--data", str(ds.root), "--name", taken, "--epochs", "1", "--imgsz", "32",
                                 "--batch", "2"])
    assert result.exit_code == 2, result.output
    assert f"--name {taken}: {why}" in result.stderr and f"choose another --name, e.g. {taken}-ft" in result.stderr
    assert export_card.read_bytes() == before
    assert not (models / f"{taken}.pt").exists() and not (models / "runs" / taken).exists()
    # the nightly loop is refused before it exports, merges and splits anything
    result = runner.invoke(app, ["retrain", "--name", taken, "--data", str(ds.root), "--work", str(tmp_path / "work")])
    assert result.exit_code == 2 and f"--name {taken}: {why}" in result.stderr
    assert not (tmp_path / "work").exists()


def test_wrong_class_counts_are_refused_at_import(garbage, tmp_path):
    (garbage / "classes.txt").unlink()
    (garbage / "data.yaml").write_text("nc: 2\nnames: [garbage]\n")
    result = runner.invoke(app, ["data", "import", str(garbage), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "nc is 2 but 1 names are listed (wrong class count)" in result.stderr


def test_leakage_between_splits_is_an_error(garbage, tmp_path):
    pics = sorted((garbage / "images").glob("*.jpg"))
    label = lambda p: (garbage / "labels" / f"{p.stem}.txt").read_bytes()  # noqa: E731
    items = [Item(p, p.name, label(p), group=f"g{i}", split="train") for i, p in enumerate(pics[:6])]
    items += [Item(pics[6], pics[6].name, label(pics[6]), group="g0", split="val"),  # a place on both sides
              Item(pics[0], "again.jpg", label(pics[0]), group="g9", split="val"),  # the same picture on both sides
              Item(pics[7], pics[7].name, label(pics[7]), group="g7", split="val")]
    ds = write_dataset(tmp_path / "leaky", items, ["garbage"], name="leaky", source="test")
    errors = {(f.path, f.reason) for f in check_dataset(ds).errors}
    assert (f"images/{pics[6].name}", "group 'g0' is in both train and val (1 val image(s)): split leaks") in errors
    assert ("images/again.jpg", f"same picture as train image images/{pics[0].name}: split leaks") in errors
    assert len(errors) == 2


def test_near_duplicates_across_splits_are_leakage(real_sample_dir, tmp_path):
    """img278 and img476 of street-garbage are two crops of one street scene."""
    src = real_sample_dir / "street-garbage"
    a, b = (next((src / "images").glob(f"{n}_jpg*")) for n in ("img278", "img476"))
    items = [Item(a, a.name, (src / "labels" / f"{a.stem}.txt").read_bytes(), "a", split="train"),
             Item(b, b.name, (src / "labels" / f"{b.stem}.txt").read_bytes(), "b", split="val")]
    ds = write_dataset(tmp_path / "nd", items, ["garbage"], name="nd", source="test")
    [finding] = check_dataset(ds).errors
    assert finding.path == f"images/{b.name}" and "near-duplicate of train image" in finding.reason
    # data split joins near-duplicates into one group, so a fresh split of the same pictures passes
    unsplit = write_dataset(tmp_path / "nd0", [Item(i.src, i.name, i.label, i.group) for i in items] +
                            [Item(p, p.name, (src / "labels" / f"{p.stem}.txt").read_bytes(), p.stem)
                             for p in sorted((src / "images").glob("*.jpg"))[:4]], ["garbage"], name="nd", source="t")
    split = split_dataset(unsplit, tmp_path / "nd1", val_fraction=0.4)
    assert check_dataset(split).ok
    sides = {Path(f.image).name: f.split for f in split.files()}
    assert sides[a.name] == sides[b.name]


def test_split_is_grouped_stratified_and_repeatable(facades, garbage, tmp_path):
    fa, _ = import_yolo(facades, tmp_path / "fa", group_regex=r"img_(\d*)\d\.")
    ga, _ = import_yolo(garbage, tmp_path / "ga")
    merged = merge_datasets([fa, ga], tmp_path / "m", mapping=parse_mapping(["window=-", "arch=-", "door=-", "cantilever=signboard"], load_classes()))
    result = runner.invoke(app, ["data", "split", str(tmp_path / "m"), "--out", str(tmp_path / "s"), "--val", "0.3"])
    assert result.exit_code == 0, result.output
    ds = Dataset(tmp_path / "s")
    assert check_dataset(ds).ok
    train_groups = {f.group for f in ds.files("train")}
    assert train_groups.isdisjoint({f.group for f in ds.files("val")})
    per_split = ds.manifest.counts["splits"]
    for cls in ("garbage", "signboard"):
        assert per_split["val"]["per_class"][cls]["images"] > 0 and per_split["train"]["per_class"][cls]["images"] > 0
    assert 0.15 <= per_split["val"]["images"] / len(ds.files()) <= 0.45
    assert (tmp_path / "s" / "val.txt").read_text().splitlines()[0].startswith("./images/")
    again = split_dataset(merged, tmp_path / "s2", val_fraction=0.3)
    assert again.digest == ds.digest
    other = split_dataset(merged, tmp_path / "s3", val_fraction=0.3, seed=5)
    assert other.digest != ds.digest and {f.group for f in other.files("train")}.isdisjoint({f.group for f in other.files("val")})


def test_merge_maps_names_and_aliases_onto_project_classes(facades, garbage, tmp_path):
    ga, _ = import_yolo(garbage, tmp_path / "ga")
    (garbage / "classes.txt").write_text("Trash\n")  # an alias of garbage
    trash, _ = import_yolo(garbage, tmp_path / "trash")
    fa, _ = import_yolo(facades, tmp_path / "fa")
    classes = load_classes()
    with pytest.raises(DatasetError, match="classes 'window', 'cantilever', 'arch', 'door' match no project class"):
        merge_datasets([fa], tmp_path / "x", mapping={}, classes=classes)
    with pytest.raises(DatasetError, match="'awning' is not a project class"):
        parse_mapping(["window=awning"], classes)
    merged = merge_datasets([ga, trash, fa], tmp_path / "m", mapping=parse_mapping(["cantilever=signboard"], classes),
                            drop_unmapped=True, classes=classes)
    fa_counts = fa.manifest.counts["per_class"]
    assert merged.classes == ["garbage", "signboard"] + (["win_ad"] if fa_counts["win_ad"]["boxes"] else [])
    per = merged.manifest.counts["per_class"]
    assert per["garbage"]["boxes"] == 2 * ga.manifest.counts["boxes"]
    assert per["signboard"]["boxes"] == fa_counts["signboard"]["boxes"] + fa_counts["cantilever"]["boxes"]
    assert merged.manifest.parents == [ga.digest, trash.digest, fa.digest]
    assert {f.image.split("__")[0] for f in merged.files()} == {"images/src-garbage1", "images/src-garbage2", "images/src-facades"}
    assert len({f.group for f in merged.files()}) == len(merged.files())  # same picture names, different inputs


def test_stats_counts_sizes_and_draws_contact_sheets(garbage, tmp_path):
    import_yolo(garbage, tmp_path / "ga")
    result = runner.invoke(app, ["data", "stats", str(tmp_path / "ga"), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    boxes = sum(len(p.read_text().splitlines()) for p in (garbage / "labels").glob("*.txt"))
    assert stats["counts"]["per_class"]["garbage"]["boxes"] == boxes
    assert sum(stats["box_size_histogram"]["garbage"]) == boxes
    import cv2

    sheet = cv2.imread(stats["contact_sheets"]["garbage"])
    assert sheet is not None and sheet.shape[1] == 6 * 128 and sheet.std() > 20  # real crops, not a blank page


def from_cases_run(tmp_path: Path, lines: list[dict], *extra: str, out: str = "cases"):
    """Write `lines` as tmp_path/review.jsonl and run `data from-cases` on it into tmp_path/`out` (with `extra`
    options); the CLI's result, checked to have succeeded."""
    export = tmp_path / "review.jsonl"
    export.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    result = runner.invoke(app, ["data", "from-cases", str(export), "--out", str(tmp_path / out), *extra])
    assert result.exit_code == 0, result.output
    return result


def test_from_cases_turns_reviews_into_positives_and_hard_negatives(real_sample_dir, tmp_path):
    src = real_sample_dir / "street-garbage" / "images"
    pics = sorted(src.glob("*.jpg"))[:4]
    ev = tmp_path / "evidence"
    ev.mkdir()
    for p in pics:
        shutil.copy(p, ev / p.name)
    lines = [
        {"case_id": "c1", "violation_type": "exposed_garbage", "decision": "confirmed", "source_id": "cam-1",
         "image": f"evidence/{pics[0].name}", "image_sha256": sha256_file(pics[0]),
         "boxes": [{"class_name": "garbage", "xyxy": [100, 200, 300, 400]}]},
        {"case_id": "c2", "violation_type": "street_stall", "decision": "approved", "source_id": "cam-2",
         "image": str(ev / pics[1].name),
         "boxes": [{"class_name": "umbrella", "xyxy": [100, 100, 200, 150]}, {"class_name": "dining table", "xyxy": [120, 140, 260, 220]}]},
        {"case_id": "c3", "violation_type": "street_stall", "decision": "rejected", "reason": "permitted night market",
         "source_id": "cam-2", "image": f"evidence/{pics[2].name}", "boxes": []},
        {"case_id": "c4", "violation_type": "illegal_parking", "decision": "confirmed", "source_id": "cam-3",
         "image": f"evidence/{pics[3].name}", "boxes": [{"class_name": "car", "xyxy": [0, 0, 50, 50]}]},
        {"case_id": "c5", "violation_type": "exposed_garbage", "decision": "pending", "image": f"evidence/{pics[0].name}"},
        {"case_id": "c6", "violation_type": "exposed_garbage", "decision": "confirmed", "image": "evidence/missing.jpg"},
        {"case_id": "c7", "violation_type": "exposed_garbage", "decision": "confirmed", "image": f"evidence/{pics[3].name}",
         "image_sha256": "0" * 64, "boxes": [{"class_name": "garbage", "xyxy": [1, 1, 9, 9]}]},
    ]
    export = tmp_path / "review.jsonl"
    export.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    result = runner.invoke(app, ["data", "from-cases", str(export), "--out", str(tmp_path / "cases")])
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert "review.jsonl:4 (case c4): no training class stands for violation type 'illegal_parking'" in err
    assert "review.jsonl:5 (case c5): decision 'pending' is not confirmed/approved/rejected: skipped" in err
    assert "review.jsonl:6 (case c6): image" in err and "missing.jpg not found" in err
    assert "review.jsonl:7 (case c7): image" in err and "does not match its recorded sha256" in err
    assert "review.jsonl:8: not a JSON object" in err

    # the rejected stall's street may hold garbage, which this dataset trains too: no hard negative (see the next test)
    assert ("review.jsonl (cases c3): picture left out: no hard negative, as its rejection says nothing about garbage "
            "(rejected street_stall: permitted night market)") in err
    assert ("skipped 5 review lines; 1 pictures left out (no hard negative: 1 rejected for a type that says nothing "
            "about a class the dataset trains)") in result.stdout

    ds = Dataset(tmp_path / "cases")
    assert ds.classes == ["stall", "garbage"]
    by_case = {f.source: f for f in ds.files()}
    assert set(by_case) == {"cases c1", "cases c2"}  # unusable cases add no picture
    g = ds.labels(by_case["cases c1"]).boxes
    assert g[:, 0].tolist() == [1] and np.allclose(g[0, 1:], [200 / 640, 300 / 640, 200 / 640, 200 / 640], atol=1e-5)
    s = ds.labels(by_case["cases c2"]).boxes  # umbrella + table -> one stall box around both
    assert s[:, 0].tolist() == [0] and np.allclose(s[0, 1:], [180 / 640, 160 / 640, 160 / 640, 120 / 640], atol=1e-5)
    assert by_case["cases c2"].group == "cam-2" and by_case["cases c1"].group == "cam-1"
    assert by_case["cases c1"].negative_for is None
    assert check_dataset(ds).ok


def test_a_rejected_picture_is_a_negative_only_for_the_classes_its_rejection_speaks_of(real_sample_dir, garbage, tmp_path):
    """A rejected case's picture was written with an empty label file, background for every class trained: a rejected
    stall on a street with a real garbage pile taught the detector that garbage is background. It is a hard negative
    only where its rejection speaks of every class the dataset trains (a rejected stall: stall, vendor_cart), and
    `data merge` leaves it out of a merge that trains another class (a garbage set's), saying so."""
    pics = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[-3:]  # not among `garbage`'s
    stall = {"violation_type": "street_stall", "source_id": "cam-2"}
    lines = [
        {**stall, "case_id": "c-stall", "decision": "confirmed", "image": str(pics[0]), "source_id": "cam-1",
         "boxes": [{"class_name": "umbrella", "xyxy": [100, 100, 200, 150]}]},
        {**stall, "case_id": "c-no", "decision": "rejected", "reason_code": "not_a_violation", "reason": "a bus shelter",
         "image": str(pics[1]), "boxes": [{"class_name": "umbrella", "xyxy": [10, 10, 90, 90]}]},
        {"case_id": "c-spill", "violation_type": "shopfront_spillover", "decision": "rejected",  # its goods are real goods
         "reason_code": "not_a_violation", "source_id": "cam-3", "image": str(pics[2]), "boxes": []},
    ]
    result = from_cases_run(tmp_path, lines)
    assert ("review.jsonl (cases c-spill): picture left out: no hard negative, as its rejection says nothing about stall "
            "(rejected shopfront_spillover: not_a_violation)") in result.stderr
    cases = Dataset(tmp_path / "cases")
    assert cases.classes == ["stall"]
    neg = next(f for f in cases.files() if f.source == "cases c-no")
    assert len(cases.labels(neg).boxes) == 0 and neg.note == "hard negative: rejected street_stall: a bus shelter"
    assert neg.negative_for == ["stall", "vendor_cart"] and neg.group == "cam-2"
    assert [f.source for f in cases.files()] == ["cases c-no", "cases c-stall"]

    garbage_set, _ = import_yolo(garbage, tmp_path / "garbage")
    result = runner.invoke(app, ["data", "merge", str(tmp_path / "cases"), str(tmp_path / "garbage"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    left = ("cases: 1 hard negatives (rejected cases) left out, as their rejection says nothing about garbage, which the "
            "merge trains: images/c-no.jpg")
    assert f"left out: {left}" in result.stdout
    merged = Dataset(tmp_path / "m")
    assert merged.manifest.left_out == [left] and merged.classes == ["stall", "garbage"]
    assert [f.source for f in merged.files() if f.source.startswith("cases")] == ["cases c-stall"]
    assert len(merged.files()) == len(garbage_set.files()) + 1

    alone = merge_datasets([cases], tmp_path / "m2", mapping={})  # the stall classes alone: still the negative
    kept = next(f for f in alone.files() if f.source == "cases c-no")
    assert kept.negative_for == ["stall", "vendor_cart"] and alone.manifest.left_out == []
    split = split_dataset(alone, tmp_path / "s", val_fraction=0.5)  # and a split carries what it is a negative for
    assert next(f for f in split.files() if f.source == "cases c-no").negative_for == ["stall", "vendor_cart"]



def test_from_cases_reports_a_line_whose_frame_size_or_box_is_not_usable(real_sample_dir, tmp_path):
    """Another tool's export may write the frame size as text ("1920px") or 0, or a box with its corners swapped:
    that line is reported and skipped, the others built (the size used to stop the whole build with a ValueError
    traceback; the swapped box made a confirmed case a negative picture, said only by `data check`)."""
    pics = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:3]
    box = [{"class_name": "garbage", "xyxy": [100, 200, 300, 400]}]
    lines = [
        {"case_id": "ok", "violation_type": "exposed_garbage", "decision": "confirmed", "image": str(pics[0]),
         "width": 640, "height": 640, "boxes": box},
        {"case_id": "px", "violation_type": "exposed_garbage", "decision": "confirmed", "image": str(pics[1]),
         "width": "1920px", "height": 1080, "boxes": box},
        {"case_id": "neg", "violation_type": "exposed_garbage", "decision": "confirmed", "image": str(pics[2]),
         "width": -640, "height": 640, "boxes": box},
        {"case_id": "swapped", "violation_type": "exposed_garbage", "decision": "confirmed", "image": str(pics[2]),
         "boxes": [{"class_name": "garbage", "xyxy": [300, 400, 100, 200]}]},
    ]
    result = from_cases_run(tmp_path, lines)
    assert "review.jsonl:2 (case px): width '1920px' and height 1080 must be positive numbers of pixels" in result.stderr
    assert "review.jsonl:3 (case neg): width -640 and height 640 must be positive numbers of pixels" in result.stderr
    # corners swapped: reported, not written as a label line with a negative size (counted as a negative picture)
    assert "review.jsonl:4 (case swapped): box [300.0, 400.0, 100.0, 200.0] is not [x1, y1, x2, y2] with x1 < x2 and y1 < y2" \
        in result.stderr
    assert [f.source for f in Dataset(tmp_path / "cases").files()] == ["cases ok"]

def test_from_cases_clips_a_box_that_overhangs_its_picture_and_reports_one_off_it(real_sample_dir, tmp_path):
    """A box beyond the picture's edge was written as a label line with coordinates above 1, without a word: the
    manifest then counted the confirmed case as a negative picture and only `data check` said why. A box that only
    overhangs the picture is clipped to it; a box with nothing on it (wholly beyond, or starting at its edge; on the
    picture's own 640 x 640 or the frame the line names) is reported with the line, the box and the frame, and that
    line skipped, as on the --verifier path."""
    pics = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:4]
    lines = [
        {"case_id": "overhang", "violation_type": "exposed_garbage", "decision": "confirmed", "image": str(pics[0]),
         "boxes": [{"class_name": "garbage", "xyxy": [480, -40, 700, 320]}]},
        {"case_id": "off", "violation_type": "exposed_garbage", "decision": "confirmed", "image": str(pics[1]),
         "boxes": [{"class_name": "garbage", "xyxy": [100, 200, 300, 400]}, {"class_name": "garbage", "xyxy": [650, 10, 700, 100]}]},
        {"case_id": "edge", "violation_type": "street_stall", "decision": "confirmed", "image": str(pics[2]),
         "boxes": [{"class_name": "umbrella", "xyxy": [10, 640, 200, 700]}]},
        {"case_id": "frame", "violation_type": "exposed_garbage", "decision": "confirmed", "image": str(pics[3]),
         "width": 400, "height": 300, "boxes": [{"class_name": "garbage", "xyxy": [450, 10, 600, 100]}]},
    ]
    result = from_cases_run(tmp_path, lines)
    err = result.stderr
    assert "review.jsonl:2 (case off): box [650.0, 10.0, 700.0, 100.0] lies outside the 640 x 640 frame" in err
    assert "review.jsonl:3 (case edge): box [10.0, 640.0, 200.0, 700.0] lies outside the 640 x 640 frame" in err
    assert "review.jsonl:4 (case frame): box [450.0, 10.0, 600.0, 100.0] lies outside the 400 x 300 frame" in err
    ds = Dataset(tmp_path / "cases")
    [only] = ds.files()
    assert only.source == "cases overhang" and ds.manifest.counts["boxes"] == 1
    box = ds.labels(only).boxes  # clipped to [480, 0, 640, 320]
    assert np.allclose(box[0, 1:], [560 / 640, 160 / 640, 160 / 640, 320 / 640], atol=1e-5)
    assert check_dataset(ds).ok


def test_label_parser_is_the_one_definition_of_a_valid_box():
    parsed = parse_labels(b"0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n\n1 0.5 0.5 0.2 0.2\n", nc=2)
    assert parsed.boxes.shape == (2, 5) and parsed.duplicates == 1 and not parsed.problems
    assert parse_labels(b"\xff\xfe\x00", nc=1).problems == ["not UTF-8 text (binary or wrong encoding)"]
    poly = parse_labels(b"0 0.1 0.1 0.2 0.1 0.2 0.2\n", nc=1).problems[0]
    assert "got 7" in poly and "segmentation polygon" in poly


def test_cvat_yolo_export_layout_imports(real_sample_dir, tmp_path):
    """CVAT "YOLO 1.1": obj.names, obj_train_data/ with each label file beside its picture."""
    src = tmp_path / "cvat"
    frames = src / "obj_train_data"
    frames.mkdir(parents=True)
    (src / "obj.names").write_text("trash\n")
    (src / "train.txt").write_text("")  # CVAT's list file is not a label file
    pics = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:3]
    for p in pics:
        shutil.copy(p, frames / p.name)
        shutil.copy(real_sample_dir / "street-garbage" / "labels" / f"{p.stem}.txt", frames / f"{p.stem}.txt")
    (frames / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    ds, findings = import_yolo(src, tmp_path / "v")
    assert ds.classes == ["trash"] and len(ds.files()) == 3 and all(f.label for f in ds.files())
    assert [(Path(f.path).name, f.reason) for f in findings] == [("orphan.txt", "label file without an image")]
    assert check_dataset(ds).ok


def test_the_api_and_retraining_agree_on_what_a_rejection_means(real_sample_dir, tmp_path):
    """Issue 15.4: one list of reject reasons. `privacy` rejections became hard negatives; `permitted` was
    a retraining code the API refused. A privacy rejection's line was skipped as "the object is real"; it says the
    picture must not be used."""
    from pipelines.cases.vocabulary import REASONS, RejectReason, is_hard_negative

    assert RejectReason("permitted") is RejectReason.LEGAL
    assert not is_hard_negative("privacy") and not is_hard_negative("permitted") and is_hard_negative("not_a_violation")
    assert is_hard_negative(None) and is_hard_negative("a code from a newer version")
    pics = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:2]
    lines = [{"case_id": f"c{i}", "violation_type": "exposed_garbage", "decision": "rejected", "reason_code": code,
              "image": str(pic)} for i, (code, pic) in enumerate(zip(("privacy", "not_a_violation"), pics, strict=True))]
    result = from_cases_run(tmp_path, lines)
    assert ("(case c0): rejected as 'privacy': 涉及隐私，该图片不得用于训练 a reviewer judged the picture private: it must "
            "not be used for training") in result.stderr and "the object is real" not in result.stderr, result.stderr
    assert {f.source for f in Dataset(tmp_path / "cases").files()} == {"cases c1"}
    assert [r.hard_negative for r in REASONS.values()].count(False) == 5


def test_from_cases_names_a_review_export_it_cannot_read_for_both_datasets(tmp_path):
    """A review export another tool wrote in GBK (a Chinese reason) was a UnicodeDecodeError traceback with `--verifier`
    while the detector dataset said which file and why; both read it through one `review_lines`."""
    export = tmp_path / "review.jsonl"
    export.write_bytes(json.dumps({"case_id": "c-1", "violation_type": "street_stall", "decision": "rejected",
                                   "reason": "不是摊点", "image": "a.jpg"}, ensure_ascii=False).encode("gbk") + b"\n")
    for extra in ([], ["--verifier"]):
        result = runner.invoke(app, ["data", "from-cases", str(export), "--out", str(tmp_path / f"ds{len(extra)}"), *extra])
        assert result.exit_code == 2, result.output
        assert f"{export}: cannot read the review export: 'utf-8' codec can't decode" in result.output
        assert not (tmp_path / f"ds{len(extra)}").exists()


def test_from_cases_refuses_an_export_none_of_whose_lines_can_be_used_for_both_datasets(real_sample_dir, tmp_path):
    """With every line skipped `--verifier` wrote an empty labels.csv and said 'wrote 0 labelled pictures', while the
    detector dataset refused with a count of problems but not what they were; both refuse with one message that says
    why each line was skipped, and write nothing."""
    pic = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[0]
    lines = [
        {"case_id": "c1", "violation_type": "street_stall", "decision": "pending", "image": str(pic)},
        {"case_id": "c2", "violation_type": "street_stall", "decision": "rejected", "reason_code": "permitted", "image": str(pic)},
        {"case_id": "c3", "violation_type": "street_stall", "decision": "confirmed", "image": "evidence/missing.jpg"},
    ]
    export = tmp_path / "review.jsonl"
    export.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    for extra in ([], ["--verifier"]):
        out = tmp_path / f"ds{len(extra)}"
        result = runner.invoke(app, ["data", "from-cases", str(export), "--out", str(out), *extra])
        assert result.exit_code == 2, result.output
        assert f"error: {export}: no usable reviewed cases (3 lines skipped):" in result.stderr
        assert "decision 'pending' is not confirmed/approved/rejected: skipped" in result.stderr
        assert "rejected as 'permitted': the object is real, not a hard negative: skipped" in result.stderr
        assert "missing.jpg not found" in result.stderr
        assert not out.exists()


def test_from_cases_keeps_two_pictures_whose_case_ids_are_alike_once_made_safe(real_sample_dir, tmp_path):
    """Cases `a/b` and `a_b` of two different pictures both named their picture `a_b.jpg`, so write_dataset refused the
    whole export ('two inputs want the same file name'); the second keeps a file of its own, as on the --verifier path."""
    pics = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:2]
    box = [{"class_name": "garbage", "xyxy": [100, 200, 300, 400]}]
    lines = [{"case_id": case, "violation_type": "exposed_garbage", "decision": "confirmed", "image": str(pic), "boxes": box}
             for case, pic in (("a/b", pics[0]), ("a_b", pics[1]))]
    from_cases_run(tmp_path, lines)
    ds = Dataset(tmp_path / "cases")
    files = {f.image: f for f in ds.files()}
    assert sorted(files) == ["images/a_b-line2.jpg", "images/a_b.jpg"]
    assert files["images/a_b.jpg"].sha256 == sha256_file(pics[0]) and files["images/a_b-line2.jpg"].sha256 == sha256_file(pics[1])
    assert all(len(ds.labels(f).boxes) == 1 for f in files.values()) and check_dataset(ds).ok


def test_a_version_refuses_two_pictures_whose_label_files_would_be_one(real_sample_dir, tmp_path):
    """a.jpg and a.png (a COCO export with both in one folder) were two names, so both were written, but their label
    files are both labels/a.txt: the second overwrote the first's boxes without a word. Such inputs are refused."""
    import cv2

    pics = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:2]
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), cv2.imread(str(pics[1])))
    items = [Item(pics[0], "a.jpg", b"0 0.5 0.5 0.2 0.2\n", "g1"), Item(png, "a.png", b"", "g2")]
    with pytest.raises(DatasetError, match=r"two inputs want the same file name \(label files go by the name without "
                                           r"its suffix\): a\.jpg, a\.png"):
        write_dataset(tmp_path / "v", items, ["garbage"], name="v", source="test")
    assert not (tmp_path / "v").exists()


def test_from_cases_takes_one_photo_exported_for_two_cases_as_one_picture(real_sample_dir, tmp_path):
    """`data export-reviews` copies each case's evidence into evidence/<case>/, so a photo that opened a stall case
    (confirmed) and a spillover case (rejected: not a violation) came as two files, and both datasets wrote it twice:
    the detector set the stall box on one copy and an empty label (no stall either) on the other. Pictures are one by
    their content; the photo gets one row with what both cases say."""
    from pipelines.verifier.data import load_dataset as load_verifier_dataset

    pic = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[0]
    lines = []
    for case, vtype, decision, code in (("c-stall", "street_stall", "approved", "confirmed"),
                                        ("c-spill", "shopfront_spillover", "rejected", "not_a_violation")):
        (tmp_path / "reviews" / "evidence" / case).mkdir(parents=True)
        shutil.copy(pic, tmp_path / "reviews" / "evidence" / case / "opened_original.jpg")
        lines.append({"case_id": case, "violation_type": vtype, "decision": decision, "reason_code": code, "source_id": "batch-1",
                      "image": f"evidence/{case}/opened_original.jpg", "image_sha256": sha256_file(pic), "width": 640, "height": 640,
                      "boxes": [{"class_name": "umbrella", "xyxy": [100, 200, 300, 400]}]})
    export = tmp_path / "reviews" / "review.jsonl"
    export.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    for extra in ([], ["--verifier"]):
        result = runner.invoke(app, ["data", "from-cases", str(export), "--out", str(tmp_path / f"ds{len(extra)}"), *extra])
        assert result.exit_code == 0, result.output
    ds = Dataset(tmp_path / "ds0")
    [only] = ds.files()
    assert only.source == "cases c-stall,c-spill" and ds.labels(only).boxes[:, 0].tolist() == [ds.classes.index("stall")]
    [row] = load_verifier_dataset(tmp_path / "ds1").photos
    assert row.file == "images/cases/c-stall.jpg" and row.labels == {"street_stall": 1, "shopfront_spillover": 0}


def test_from_cases_decodes_each_picture_once_however_many_lines_name_it(real_sample_dir, tmp_path, monkeypatch):
    """Both datasets decoded a thumbnail of the picture (its size, and proof it is readable) for every review line
    naming it: a photo in many cases, or copied once per case by `export-reviews`, was decoded as often. Once per
    picture, by path and by content."""
    import pipelines.retrain.from_cases as from_cases

    decodes: list[str] = []
    decode = from_cases.decode_image
    monkeypatch.setattr(from_cases, "decode_image", lambda path, **kw: decodes.append(str(path)) or decode(path, **kw))
    pic = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[0]
    shutil.copy(pic, tmp_path / "copy.jpg")
    lines = [{"case_id": f"c{i}", "violation_type": "exposed_garbage", "decision": "confirmed", "image": str(image),
              "boxes": [{"class_name": "garbage", "xyxy": [10 + i, 10, 200, 200]}]}
             for i, image in enumerate([pic, pic, pic, tmp_path / "copy.jpg"])]
    for extra in ([], ["--verifier"]):
        decodes.clear()
        from_cases_run(tmp_path, lines, *extra, out=f"ds{len(extra)}")
        assert len(decodes) == 1, decodes
    counts = Dataset(tmp_path / "ds0").manifest.counts
    assert (counts["images"], counts["boxes"]) == (1, 4)


def test_from_cases_keeps_the_verifiers_regions_out_of_the_detector_dataset(real_sample_dir, tmp_path):
    """A confirmed flyposting case whose evidence was the verifier's `verified:flyposting` region (a tile, or the whole
    frame) became a full-frame `small_ad` box, teaching the detector that a whole street is a small ad. The verifier's
    regions are no object boxes: left out of the detector dataset (a case with nothing else skipped with a finding,
    counted apart, and its picture no hard negative for another case's rejection: an empty label would teach that the
    confirmed small ad is background), kept as region labels by --verifier."""
    from pipelines.verifier.data import load_dataset as load_verifier_dataset

    pics = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:2]
    lines = [
        {"case_id": "c-wall", "violation_type": "flyposting", "decision": "confirmed", "image": str(pics[0]),
         "boxes": [{"class_name": "verified:flyposting", "xyxy": [0, 0, 640, 640]}]},
        {"case_id": "c-spill", "violation_type": "shopfront_spillover", "decision": "rejected", "reason_code": "not_a_violation",
         "image": str(pics[0]), "boxes": []},
        {"case_id": "c-stall", "violation_type": "street_stall", "decision": "confirmed", "image": str(pics[1]),
         "boxes": [{"class_name": "verified:street_stall", "xyxy": [0, 0, 640, 320]},
                   {"class_name": "umbrella", "xyxy": [100, 100, 200, 150]}]},
    ]
    result = from_cases_run(tmp_path, lines)
    assert ("review.jsonl:1 (case c-wall): its only evidence is the verifier's image/tile regions (verified:flyposting), "
            "no object box for the detector: skipped") in result.stderr
    assert ("review.jsonl (cases c-spill): picture left out: no hard negative, as case c-wall confirmed on it what only "
            "the verifier's regions show") in result.stderr
    assert ("skipped 1 review lines (1 with only the verifier's image/tile regions, kept by --verifier); 1 pictures left out "
            "(no hard negative)") in result.stdout
    ds = Dataset(tmp_path / "cases")
    [only] = ds.files()
    assert only.source == "cases c-stall" and ds.classes == ["stall"]
    box = ds.labels(only).boxes  # the umbrella alone, not the union with the verifier's half frame
    assert np.allclose(box[0, 1:], [150 / 640, 125 / 640, 100 / 640, 50 / 640], atol=1e-5)

    from_cases_run(tmp_path, lines, "--verifier", out="verifier")
    photos = {p.file: p for p in load_verifier_dataset(tmp_path / "verifier").photos}
    assert photos["images/cases/c-wall.jpg"].labels == {"flyposting": 1, "shopfront_spillover": 0}
    boxes = (tmp_path / "verifier" / "boxes.csv").read_text(encoding="utf-8-sig").splitlines()
    assert "images/cases/c-wall.jpg,flyposting,0.0000,0.0000,1.0000,1.0000" in boxes


def test_from_cases_makes_only_the_text_lines_that_carried_the_finding_a_small_ad(real_sample_dir, tmp_path):
    """A confirmed flyposting case with no project-class box had the union of all its boxes labelled `small_ad`, the
    OCR lines of a shop's sign (`text`, or `new_text` on a camera) with the pasted ad's phone line: the detector learnt
    a sign as part of a small ad. Only the lines that carried a phone number or small-ad keyword (`small_ad_text`)
    make the box; a case with no such line is skipped, and its picture is no hard negative either."""
    pics = sorted((real_sample_dir / "facades-ads" / "images").glob("*.jpg"))[:2]
    lines = [
        {"case_id": "c-ad", "violation_type": "flyposting", "decision": "confirmed", "image": str(pics[0]),
         "width": 640, "height": 640,
         "boxes": [{"class_name": "text", "xyxy": [20, 10, 600, 60]},  # the shop's sign across the facade
                   {"class_name": "small_ad_text", "xyxy": [300, 400, 380, 420]},  # 办证 138…
                   {"class_name": "small_ad_text", "xyxy": [300, 425, 370, 440]},
                   {"class_name": "verified:flyposting", "xyxy": [0, 320, 640, 640]}]},
        {"case_id": "c-sign", "violation_type": "flyposting", "decision": "confirmed", "image": str(pics[1]),
         "width": 640, "height": 640,
         "boxes": [{"class_name": "new_text", "xyxy": [20, 10, 600, 60]}, {"class_name": "text", "xyxy": [50, 500, 90, 520]}]},
        {"case_id": "c-spill", "violation_type": "shopfront_spillover", "decision": "rejected",
         "reason_code": "not_a_violation", "image": str(pics[1]), "boxes": []},
    ]
    result = from_cases_run(tmp_path, lines)
    assert ("review.jsonl:2 (case c-sign): its only boxes are text lines without a phone number or small-ad keyword "
            "(new_text, text), no object box for the detector: skipped") in result.stderr
    assert ("review.jsonl (cases c-spill): picture left out: no hard negative, as case c-sign confirmed on it what only "
            "text lines without a phone number or small-ad keyword show") in result.stderr
    assert "skipped 1 review lines; 1 pictures left out (no hard negative)" in result.stdout
    ds = Dataset(tmp_path / "cases")
    [only] = ds.files()
    assert only.source == "cases c-ad" and ds.classes == ["small_ad"]
    box = ds.labels(only).boxes  # the two phone lines' union: not the sign above, not the verifier's half frame
    assert box[:, 0].tolist() == [0]
    assert np.allclose(box[0, 1:], [340 / 640, 420 / 640, 80 / 640, 40 / 640], atol=1e-5)


def test_from_cases_makes_one_small_ad_box_per_slip_not_one_across_the_wall(tmp_path):
    """A photo's flyposting case holds the small-ad lines of every slip in the photo (its events merged per type), and
    from-cases labelled one `small_ad` box around all of them (one boxes.csv region with --verifier): two slips far
    apart taught the wall between them as one small ad. One box per object as the rules group them: the lines of a
    slip make one box, each slip its own.
    Real OCR of two slips composed onto a real street photo, through the photo rules to the case's boxes."""
    from detect.evidence.builder import detections_json
    from detect.imageio import read_image
    from detect.ocr import TextReader, label_texts, merge_with_texts
    from detect.rules import PhotoRules
    from detect.frames import Frame
    from pipelines.triage.findings import merge_events
    from pipelines.verifier.synth import compose, slip_font
    from tests.test_verifier_judgement import STREET

    photo = read_image(STREET / "cn2" / "lindsay__IMG_1842.jpg")
    photo, first = compose(photo, np.random.default_rng(1), slip_font(), max_slips=1, width=(0.25, 0.3))
    photo, second = compose(photo, np.random.default_rng(2), slip_font(), max_slips=1, width=(0.25, 0.3))
    slips = [s.box for s in first + second]
    assert slips[0][0] > slips[1][2] + 80  # far apart on the wall
    texts = label_texts(TextReader().read(photo))
    frame = Frame(image=photo, source_id="photo-1", ts=datetime(2026, 12, 6, 9, 0, tzinfo=UTC))
    [finding] = merge_events(PhotoRules().process(frame, merge_with_texts(sv.Detections.empty(), texts)))
    boxes = detections_json(finding.event.detections)
    assert finding.type == "flyposting" and finding.objects == 2
    assert sum(b["class_name"] == "small_ad_text" for b in boxes) == 3  # two lines on one slip, one on the other
    cv2.imwrite(str(tmp_path / "photo.png"), photo)
    from_cases_run(tmp_path, [{"case_id": "c-ads", "violation_type": "flyposting", "decision": "confirmed",
                               "image": str(tmp_path / "photo.png"), "boxes": boxes}])
    ds = Dataset(tmp_path / "cases")
    [only] = ds.files()
    h, w = photo.shape[:2]
    labelled = [(cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2) for _, cx, cy, bw, bh in ds.labels(only).boxes]
    from_cases_run(tmp_path, [{"case_id": "c-ads", "violation_type": "flyposting", "decision": "confirmed",
                               "image": str(tmp_path / "photo.png"), "boxes": boxes}], "--verifier", out="verifier")
    rows = (tmp_path / "verifier" / "boxes.csv").read_text(encoding="utf-8-sig").splitlines()[1:]
    regions = [tuple(float(v) for v in row.split(",")[2:]) for row in rows]  # the verifier's region labels alike
    assert len(labelled) == len(regions) == 2
    for (x1, y1, x2, y2), slip in zip(sorted(labelled, reverse=True), slips):  # each box on its own slip
        assert slip[0] <= x1 * w and x2 * w <= slip[2] and slip[1] <= y1 * h and y2 * h <= slip[3]
    assert np.allclose(sorted(regions, reverse=True), sorted(labelled, reverse=True), atol=1e-3)


def test_retrain_summary_counts_the_verifier_only_cases_apart(real_sample_dir, tmp_path):
    """retrain.json's from_cases step listed the skipped lines as problems, the flyposting cases the verifier alone
    found (expected) among the export's faults; it counts them apart, as `data from-cases` does."""
    from pipelines.retrain.from_cases import dataset_from_cases
    from pipelines.retrain.loop import from_cases_step

    pics = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:2]
    lines = [
        {"case_id": "c-wall", "violation_type": "flyposting", "decision": "confirmed", "image": str(pics[0]),
         "boxes": [{"class_name": "verified:flyposting", "xyxy": [0, 0, 640, 640]}]},
        {"case_id": "c-pending", "violation_type": "exposed_garbage", "decision": "pending", "image": str(pics[1])},
        {"case_id": "c-pile", "violation_type": "exposed_garbage", "decision": "confirmed", "image": str(pics[1]),
         "boxes": [{"class_name": "garbage", "xyxy": [10, 10, 200, 200]}]},
    ]
    export = tmp_path / "review.jsonl"
    export.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    ds, findings = dataset_from_cases(export, tmp_path / "cases")
    step = from_cases_step(ds, findings)
    assert step["skipped"] == {"lines": 2, "verifier_regions_only": 1, "pictures_left_out": 0, "rejection_says_nothing": 0}
    assert len(step["problems"]) == 2 and step["counts"]["images"] == 1 and step["digest"] == ds.digest
    json.dumps(step)  # written to retrain.json as it is


@pytest.mark.slow  # a dataset import in a subprocess, interrupted, then run again
def test_an_import_stopped_half_way_leaves_no_version_and_can_be_run_again(tmp_path):
    """Ctrl-C while the pictures were being copied left images/ and labels/ without a manifest at --out: not a
    version (`data check` said so), yet the same command run again refused it as one ('already exists and is not
    empty'). A version is written beside --out and renamed onto it once whole: stopped, --out is not there and no
    partial folder is left; the same import then makes the version."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO, SHARED

    source = tmp_path / "street"  # every street photo, as negatives: an import that takes seconds
    (source / "images").mkdir(parents=True)
    (source / "labels").mkdir()
    (source / "classes.txt").write_text("street_stall\n", encoding="utf-8")
    for photo in sorted((SHARED / "datasets" / "street-scenes" / "images").glob("*/*.jpg")):
        name = f"{photo.parent.name}__{photo.name}"
        (source / "images" / name).symlink_to(photo)
        (source / "labels" / f"{Path(name).stem}.txt").write_text("")
    out = tmp_path / "versions" / "v1"
    command = [sys.executable, "-m", "streetwatch.cli", "data", "import", str(source), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not any((tmp_path / "versions").glob("*/images/*")) and run.poll() is None:  # (hidden folders too)
        time.sleep(0.01)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130 and "Traceback" not in stderr, stderr
    assert list((tmp_path / "versions").iterdir()) == []
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"imported {out}: 2096 images" in again.stdout and Dataset(out).manifest.counts["negatives"] == 2096


def test_the_split_group_of_a_case_is_its_grid_cell_not_its_upload_batch(real_sample_dir, tmp_path):
    """A photo case's group was its batch (`triage:<upload job>`, `patrol:<video>`): one day's round, and the next
    day's round shoots the same corner under another batch id, so a group split put one place on both sides. A case
    placed in a grid cell is grouped by it, in both datasets; one without a cell keeps its camera or batch."""
    from pipelines.verifier.data import load_dataset as load_verifier_dataset

    pics = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:3]
    garbage = {"violation_type": "exposed_garbage", "decision": "confirmed"}
    lines = [{**garbage, "case_id": f"c{i}", "source_id": source, "image": str(pic),
              **({"grid_cell": cell} if cell else {}), "boxes": [{"class_name": "garbage", "xyxy": [100, 200, 300, 400]}]}
             for i, (pic, source, cell) in enumerate(zip(pics, ("triage:job-0301", "patrol:VID_0302.mp4", "cam-07"),
                                                          ("330102001001", "330102001001", None)))]
    from_cases_run(tmp_path, lines)
    groups = {f.source: f.group for f in Dataset(tmp_path / "cases").files()}
    assert groups == {"cases c0": "grid:330102001001", "cases c1": "grid:330102001001", "cases c2": "cam-07"}
    from_cases_run(tmp_path, lines, "--verifier", out="verifier")
    rows = {p.file: p.group for p in load_verifier_dataset(tmp_path / "verifier").photos}
    assert rows == {"images/cases/c0.jpg": "grid:330102001001", "images/cases/c1.jpg": "grid:330102001001",
                    "images/cases/c2.jpg": "cam-07"}
