"""Verifier parts on real photos: the neck map from the detector's own run, pooling, heads files, datasets."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from detect.imageio import decode_image, read_image
from detect.verifier.heads import HeadsCard, HeadSet, HeadSpec, VerifierError
from detect.verifier.pooling import tile_boxes
from pipelines.verifier.data import DatasetError, load_dataset
from pipelines.verifier.train import choose_threshold, parking_head, tile_grid
from tests.conftest import SHARED

STREET_SCENES = SHARED / "datasets" / "street-scenes"


def test_neck_map_comes_with_the_same_detections(onnx_detector, bus_jpg):
    """One network run gives boxes and the pooled neck map; the boxes are those of plain detect()."""
    image = read_image(bus_jpg)
    plain = onnx_detector.detect([image])[0]
    dets, fmap = onnx_detector.detect_with_features([image])[0]
    assert onnx_detector.has_features
    np.testing.assert_allclose(dets.xyxy, plain.xyxy, atol=1e-3)
    assert fmap.channels == 64 + 128 + 256  # yolo11n P3 + P4 + P5
    h, w = image.shape[:2]  # 1080 x 810 -> rect input 640 x 480: 20 x 15 cells, the image fills them all
    assert fmap.data.shape[1:] == (20, 15)
    assert fmap.cells(np.array([0.0, 0.0, 1.0, 1.0])) == (0, 15, 0, 20)
    assert np.isfinite(fmap.data).all() and fmap.data.std() > 0


def test_torch_backend_gives_the_same_neck_map(onnx_detector, torch_detector, bus_jpg):
    image = read_image(bus_jpg)
    _, a = onnx_detector.detect_with_features([image])[0]
    _, b = torch_detector.detect_with_features([image])[0]
    assert a.data.shape == b.data.shape
    assert np.abs(a.data - b.data).max() < 1e-2 * max(1.0, np.abs(a.data).max())


def test_pooling_reads_the_cells_a_box_covers(onnx_detector, bus_jpg):
    _, fmap = onnx_detector.detect_with_features([read_image(bus_jpg)])[0]
    c = fmap.channels
    whole = fmap.pool(np.array([[0.0, 0.0, 1.0, 1.0]]))[0]
    np.testing.assert_allclose(whole[:c], fmap.data.reshape(c, -1).mean(1), rtol=1e-5)
    np.testing.assert_allclose(whole[c:], fmap.data.reshape(c, -1).max(1), rtol=1e-5)
    corner = fmap.pool(np.array([[0.0, 0.0, 0.01, 0.01]]))[0]  # a tiny box still reads its one cell
    np.testing.assert_allclose(corner[:c], fmap.data[:, 0, 0], rtol=1e-5)
    mask = fmap.polygon_mask(np.array([[0, 0.5], [1, 0.5], [1, 1], [0, 1]]))
    assert mask[:10].sum() == 0 and mask[10:].all()


def test_tiles_half_overlap_and_cover_the_image():
    tiles = tile_boxes(5, 3)
    assert len(tiles) == 15
    assert tiles[:, 0].min() == 0 and tiles[:, 2].max() == pytest.approx(1) and tiles[:, 3].max() == pytest.approx(1)
    assert tiles[1, 0] == pytest.approx((tiles[0, 2] - tiles[0, 0]) / 2)


def _write_heads(folder: Path, dim: int = 8, **arrays) -> Path:
    spec = HeadSpec(region="tiles", intercept=0.0, threshold=0.5)
    card = HeadsCard(id="t", backbone="yolo11n-neck", feature_dim=dim, weights="t.npz", heads={"street_stall": spec})
    default = {"street_stall/mean": np.zeros(dim), "street_stall/scale": np.ones(dim), "street_stall/coef": np.ones(dim)}
    HeadSet(card, {}).save(folder / "t.yaml", {**default, **arrays})
    return folder / "t.yaml"


def test_overlapping_tiles_merge_into_one_region_through_a_chain_and_apart_ones_stay_apart():
    """The evidence box of one thing lit up in several tiles is drawn from their group: tiles that overlap directly or
    through a chain are one group, tiles that only touch at an edge are not; groups keep the tiles' order."""
    from detect.verifier.verifier import _merge_tiles

    tiles = np.array([[0, 0, 4, 4], [20, 0, 24, 4], [3, 3, 7, 7], [6, 6, 10, 10], [24, 0, 28, 4], [21, 2, 23, 3]], float)
    groups = [g.tolist() for g in _merge_tiles(tiles)]
    assert groups == [[0, 2, 3], [1, 5], [4]]
    assert _merge_tiles(tiles[:0]) == []


def test_heads_round_trip_and_fold_the_standardiser(tmp_path):
    mean, scale, coef = np.arange(8.0), np.full(8, 2.0), np.linspace(-1, 1, 8)
    path = _write_heads(tmp_path, **{"street_stall/mean": mean, "street_stall/scale": scale, "street_stall/coef": coef})
    head = HeadSet.load(path).heads["street_stall"]
    x = np.random.default_rng(0).normal(size=(4, 8))
    np.testing.assert_allclose(head.logits(x), ((x - mean) / scale) @ coef, rtol=1e-5, atol=1e-5)


def test_bad_heads_are_refused_with_file_and_reason(tmp_path):
    path = _write_heads(tmp_path, **{"street_stall/coef": np.ones(5)})
    with pytest.raises(VerifierError, match=r"t.npz: head 'street_stall' coef has shape \(5,\).*gives 8 features"):
        HeadSet.load(path)
    path = _write_heads(tmp_path)
    with pytest.raises(VerifierError, match="head 'street_stall' is not a violation type"):
        HeadSet.load(path, known_types={"flyposting"})
    weights = (tmp_path / "t.npz").read_bytes()
    for damaged in (weights[: len(weights) // 2], b"not a weights file\n"):  # a copy cut short; another file under the name
        (tmp_path / "t.npz").write_bytes(damaged)
        with pytest.raises(VerifierError, match=r"t.npz: cannot read the heads: not an .npz archive \(cut short, corrupt or another file\)"):
            HeadSet.load(path)
    (tmp_path / "t.npz").unlink()
    with pytest.raises(VerifierError, match=r"t.npz: weights of verifier t not found"):
        HeadSet.load(path)
    path.write_text("id: t\nbackbone: x\n", encoding="utf-8")
    with pytest.raises(VerifierError, match="t.yaml: not a verifier card"):
        HeadSet.load(path)


def test_a_scene_part_adds_the_images_best_tile_to_every_object(tmp_path):
    """The parking head's scene part: its best tile's logit adds to each vehicle's; a bad one is refused by name."""
    dim, odim = 4, 2 * 4 + 3 + 1
    rng = np.random.default_rng(0)
    arrays = {"illegal_parking/mean": np.zeros(odim), "illegal_parking/scale": np.ones(odim), "illegal_parking/coef": rng.normal(size=odim),
              "illegal_parking/scene_mean": np.ones(dim), "illegal_parking/scene_scale": np.full(dim, 2.0),
              "illegal_parking/scene_coef": rng.normal(size=dim)}
    spec = HeadSpec(region="objects", classes=["car"], feature_classes=["car"], intercept=0.5, calibration=(0.8, -1.0),
                    scene_intercept=-0.25)
    card = HeadsCard(id="t", backbone="yolo11n-neck", feature_dim=dim, weights="t.npz", heads={"illegal_parking": spec})
    HeadSet(card, {}).save(tmp_path / "t.yaml", arrays)
    head = HeadSet.load(tmp_path / "t.yaml").heads["illegal_parking"]
    tiles, objects = rng.normal(size=(16, dim)), rng.normal(size=(3, odim))
    scene = float(((((tiles - 1) / 2) @ arrays["illegal_parking/scene_coef"]) - 0.25).max())
    assert head.scene_logit(tiles) == pytest.approx(scene, abs=1e-5)
    logit = objects @ arrays["illegal_parking/coef"] + 0.5 + scene
    np.testing.assert_allclose(head.probs(objects, head.scene_logit(tiles)), 1 / (1 + np.exp(-(0.8 * logit - 1.0))), rtol=1e-5)
    HeadSet(card, {}).save(tmp_path / "t.yaml", {**arrays, "illegal_parking/scene_coef": np.ones(odim)})
    with pytest.raises(VerifierError, match=r"t.npz: head 'illegal_parking' scene_coef has shape \(12,\).*gives 4 features for its scene part"):
        HeadSet.load(tmp_path / "t.yaml")
    _write_heads(tmp_path)  # a tiles head
    bad = HeadsCard.model_validate({**HeadSet.load(tmp_path / "t.yaml").card.model_dump(), "heads": {
        "street_stall": {"region": "tiles", "intercept": 0.0, "scene_intercept": 1.0}}})
    HeadSet(bad, {}).save(tmp_path / "t.yaml", {"street_stall/mean": np.zeros(8), "street_stall/scale": np.ones(8), "street_stall/coef": np.ones(8)})
    with pytest.raises(VerifierError, match="t.yaml: head 'street_stall' is a tiles head; only objects heads have a scene part"):
        HeadSet.load(tmp_path / "t.yaml")


def test_an_object_part_adds_the_images_best_object_to_every_tile(tmp_path):
    """The stall head's object part: its best object's logit adds to each tile's, the floor where there is
    none; a bad one is refused by name."""
    dim, classes = 4, ["umbrella", "person"]
    odim = 2 * dim + 3 + len(classes)
    rng = np.random.default_rng(1)
    arrays = {"street_stall/mean": np.zeros(dim), "street_stall/scale": np.ones(dim), "street_stall/coef": rng.normal(size=dim),
              "street_stall/object_mean": np.ones(odim), "street_stall/object_scale": np.full(odim, 2.0),
              "street_stall/object_coef": rng.normal(size=odim)}
    spec = HeadSpec(region="tiles", classes=classes, feature_classes=classes, intercept=0.1, object_intercept=0.3, object_floor=-2.5)
    card = HeadsCard(id="t", backbone="yolo11n-neck", feature_dim=dim, weights="t.npz", heads={"street_stall": spec})
    HeadSet(card, {}).save(tmp_path / "t.yaml", arrays)
    head = HeadSet.load(tmp_path / "t.yaml").heads["street_stall"]
    objects = rng.normal(size=(3, odim))
    best = float(((((objects - 1) / 2) @ arrays["street_stall/object_coef"]) + 0.3).max())
    assert head.object_logit(objects) == pytest.approx(best, abs=1e-5)
    assert head.object_logit(np.zeros((0, odim))) == -2.5
    tiles = rng.normal(size=(16, dim))
    np.testing.assert_allclose(head.logits(tiles, best), tiles @ arrays["street_stall/coef"] + 0.1 + best, rtol=1e-5, atol=1e-5)
    HeadSet(card, {}).save(tmp_path / "t.yaml", {**arrays, "street_stall/object_coef": np.ones(dim)})
    with pytest.raises(VerifierError, match=r"head 'street_stall' object_coef has shape \(4,\).*gives 13 features for its object part"):
        HeadSet.load(tmp_path / "t.yaml")
    bad = HeadsCard.model_validate({**card.model_dump(), "heads": {"street_stall": {**spec.model_dump(), "classes": []}}})
    HeadSet(bad, {}).save(tmp_path / "t.yaml", arrays)
    with pytest.raises(VerifierError, match="head 'street_stall' has an object part but is not a tiles head with object classes"):
        HeadSet.load(tmp_path / "t.yaml")


def test_verifier_refuses_another_detectors_neck_or_input_size(tmp_path):
    from detect.verifier import Verifier

    path = _write_heads(tmp_path)
    path.write_text(path.read_text(encoding="utf-8").replace("imgsz: 640\n", ""), encoding="utf-8")
    verifier = Verifier(HeadSet.load(path))
    assert verifier.heads.card.imgsz == 640  # a card written before the field: the size every earlier card was trained at
    with pytest.raises(VerifierError, match="reads the neck of yolo11n, but the detector is yolov8n"):
        verifier.check_detector("yolov8n", True, 640)
    with pytest.raises(VerifierError, match=r"trained on the detector's neck at input 640, but the detector runs at 1280.*--imgsz 640"):
        verifier.check_detector("yolo11n", True, 1280)
    with pytest.raises(VerifierError, match="gives no neck features"):
        verifier.check_detector("yolo11n-640-dyn", False, 640)
    verifier.check_detector("yolo11n-640-dyn", True, 640)  # an export of yolo11n at the heads' size: its neck
    assert verifier.misfit("yolo11n-640-dyn", 640) is None and "runs at 320" in verifier.misfit("yolo11n", 320)


def _dataset(tmp_path: Path, rows: list[dict]) -> Path:
    """A labels.csv of `rows`; every file they name but images/missing.jpg is a copy of one real photo."""
    (tmp_path / "images").mkdir(exist_ok=True)
    src = sorted((STREET_SCENES / "images" / "cn2").glob("*.jpg"))[0]
    for file in {r["file"] for r in rows} - {"images/missing.jpg"}:
        (tmp_path / file).write_bytes(src.read_bytes())
    with (tmp_path / "labels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return tmp_path


def test_dataset_rows_are_checked(tmp_path):
    ok = {"file": "images/a.jpg", "group": "g", "street_stall": "1", "parking_motor": "0", "parking_nonmotor": "1"}
    ds = load_dataset(_dataset(tmp_path, [ok]))
    assert ds.photos[0].labels == {"street_stall": 1, "parking": 1} and len(ds.digest) == 64
    with pytest.raises(DatasetError, match=r"labels.csv: row 3 \(images/b.jpg\): street_stall is '2', expected 0, 1 or empty"):
        load_dataset(_dataset(tmp_path, [ok, {**ok, "file": "images/b.jpg", "street_stall": "2"}]))
    # a photo in two rows would count twice (with labels that may disagree) and could sit in two folds
    with pytest.raises(DatasetError, match=r"labels.csv: row 4 \(images/a.jpg\): the photo is already in row 2; keep one row per photo"):
        load_dataset(_dataset(tmp_path, [ok, {**ok, "file": "images/b.jpg"}, {**ok, "street_stall": "0"}]))
    with pytest.raises(DatasetError, match=r"labels.csv: row 2: .*images/missing.jpg not found"):
        load_dataset(_dataset(tmp_path, [{**ok, "file": "images/missing.jpg"}]))
    (tmp_path / "labels.csv").write_text("file,street_stall\nimages/a.jpg,1\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="missing column\\(s\\) group"):
        load_dataset(tmp_path)


def test_uncertain_rows_are_counted_when_left_out(tmp_path):
    ok = {"file": "images/a.jpg", "group": "g", "street_stall": "1", "uncertain": "1"}
    ds = load_dataset(_dataset(tmp_path, [ok, {**ok, "file": "images/b.jpg", "uncertain": "0"}]), uncertain=False)
    assert len(ds.photos) == 1 and ds.notes == ["1 rows with uncertain=1 left out (--no-uncertain)"]


def test_blank_rows_excel_saves_are_passed_over_and_counted(tmp_path):
    """An office clears a row's cells in Excel or WPS and saves "CSV UTF-8": the file keeps the row as `,,,,` (byte-order
    mark and CRLF too). Such a row stopped train, crossval and eval with 'row 4: empty file name'; a row with nothing
    in any cell is passed over and counted in a note, while a row with labels but no file name is still refused."""
    _dataset(tmp_path, [{"file": f"images/{x}.jpg", "group": "g", "street_stall": "1", "notes": ""} for x in "ab"])
    text = "\ufefffile,group,street_stall,notes\r\nimages/a.jpg,g,1,摊点\r\n,,,\r\nimages/b.jpg,g,0,\r\n,,,\r\n"
    (tmp_path / "labels.csv").write_bytes(text.encode("utf-8"))
    ds = load_dataset(tmp_path)
    assert [(p.file, p.labels, p.notes) for p in ds.photos] == [("images/a.jpg", {"street_stall": 1}, "摊点"),
                                                                ("images/b.jpg", {"street_stall": 0}, "")]
    assert ds.notes == [f"{tmp_path / 'labels.csv'}: 2 blank rows (every cell empty) passed over"]
    (tmp_path / "labels.csv").write_bytes((text + ",g,1,\r\n").encode("utf-8"))
    with pytest.raises(DatasetError, match=r"labels.csv: row 6: empty file name"):
        load_dataset(tmp_path)


def test_rows_labelled_for_no_type_are_counted_and_left_out(tmp_path):
    ok = {"file": "images/a.jpg", "group": "g", "street_stall": "1", "flyposting": ""}
    ds = load_dataset(_dataset(tmp_path, [ok, {**ok, "file": "images/b.jpg", "street_stall": ""},
                                          {**ok, "file": "images/c.jpg", "street_stall": "", "flyposting": "0"}]))
    assert len(ds.photos) == 2 and ds.notes == [f"{tmp_path / 'labels.csv'}: 1 row with every label cell empty left out (labelled for no type)"]


def test_boxes_of_photos_labels_csv_does_not_list_are_counted_and_left_out(tmp_path):
    """A typo in boxes.csv's file column used to drop the box without a word."""
    ok = {"file": "images/a.jpg", "group": "g", "street_stall": "1", "uncertain": "0"}
    root = _dataset(tmp_path, [ok, {**ok, "file": "images/b.jpg", "uncertain": "1"}])
    (root / "boxes.csv").write_text("file,type,x1,y1,x2,y2\nimages/a.jpg,street_stall,0.1,0.2,0.5,0.9\n"
                                    "images/b.jpg,street_stall,0.1,0.2,0.5,0.9\nimages/A.jpg,street_stall,0,0,1,1\n", encoding="utf-8")
    ds = load_dataset(root, uncertain=False)
    assert ds.photos[0].boxes == {"street_stall": [(0.1, 0.2, 0.5, 0.9)]}
    assert ds.notes == ["1 rows with uncertain=1 left out (--no-uncertain)",  # b.jpg's box goes with its row, unsaid
                        f"{root / 'boxes.csv'}: 1 row names a photo labels.csv does not list, left out: row 4 (images/A.jpg)"]


def test_a_dataset_csv_writes_a_formula_as_text_and_the_trainer_reads_it_back_as_it_was(tmp_path):
    """labels.csv and boxes.csv were written without the formula guard of every other CSV here, and people open them
    in Excel and WPS: a camera id or photo name such as `=HYPERLINK(…)` (a group, a to-label sheet's source path) ran
    there as a formula. Such a cell is written as text (`'=…`), and the trainer reads the name it was given back."""
    from pipelines.verifier.data import write_rows

    src = sorted((STREET_SCENES / "images" / "cn2").glob("*.jpg"))[0]
    (tmp_path / "-night.jpg").write_bytes(src.read_bytes())
    group, note = '=HYPERLINK("http://evil.example/x","点我")', "@SUM(1+1) 摊点"
    write_rows(tmp_path / "labels.csv", ["file", "group", "street_stall", "notes"],
               [{"file": "-night.jpg", "group": group, "street_stall": 1, "notes": note}])
    write_rows(tmp_path / "boxes.csv", ["file", "type", "x1", "y1", "x2", "y2"],
               [{"file": "-night.jpg", "type": "street_stall", "x1": 0.1, "y1": 0.2, "x2": 0.5, "y2": 0.9}])
    with (tmp_path / "labels.csv").open(encoding="utf-8-sig", newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert (row["file"], row["group"], row["notes"]) == ("'-night.jpg", f"'{group}", f"'{note}")  # text to Excel and WPS
    [photo] = load_dataset(tmp_path).photos
    assert (photo.file, photo.group, photo.notes, photo.path) == ("-night.jpg", group, note, tmp_path / "-night.jpg")
    assert photo.boxes == {"street_stall": [(0.1, 0.2, 0.5, 0.9)]}
    # a verdicts sheet (--validation-csv) is read back by the same rule: its file is the dataset's, unmarked
    from pipelines.verifier.validation_csv import FIELDS, read_verdicts

    verdicts = write_rows(tmp_path / "verdicts.csv", FIELDS,
                          [{"head": "street_stall", "outcome": "found", "probability": "0.9", "file": "-night.jpg"}])
    assert read_verdicts(verdicts) == {("street_stall", "-night.jpg"): ("found", 0.9)}


def test_reviewed_cases_become_a_verifier_dataset(tmp_path):
    """Confirmed -> 1 with its evidence box, rejected as not a violation -> 0, rejected as legal -> nothing, said as
    the detector path says it (it was left out without a word); types a case says nothing about stay unlabelled, so a
    confirmed stall never teaches 'no parking'."""
    import json

    from pipelines.verifier.from_cases import verifier_dataset_from_cases

    export = tmp_path / "export"
    photos = sorted((STREET_SCENES / "images" / "cn2").glob("*.jpg"))[:3]
    lines = []
    for i, (photo, vtype, decision, reason) in enumerate([
            (photos[0], "street_stall", "approved", None),
            (photos[1], "shopfront_spillover", "rejected", "not_a_violation"),
            (photos[2], "street_stall", "rejected", "permitted")]):
        (export / "evidence").mkdir(parents=True, exist_ok=True)
        (export / "evidence" / photo.name).write_bytes(photo.read_bytes())
        lines.append({"case_id": f"c-{i}", "violation_type": vtype, "decision": decision, "reason_code": reason, "source_id": "cam-01",
                      "image": f"evidence/{photo.name}", "width": 400, "height": 300,
                      "boxes": [{"class_name": "verified:street_stall", "xyxy": [100, 150, 300, 300]}]})
    (export / "review.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "{broken\n", encoding="utf-8")
    labels, n, findings = verifier_dataset_from_cases(export, tmp_path / "ds")
    assert n == 2 and [(f.path, f.severity) for f in findings] == [("review.jsonl: line 3", "warning"), ("review.jsonl: line 4", "error")]
    assert findings[0].reason == "rejected as 'permitted': the object is real, not a hard negative: skipped"
    ds = load_dataset(tmp_path / "ds")
    by_case = {p.file: p for p in ds.photos}
    stall = by_case["images/cases/c-0.jpg"]
    assert stall.labels == {"street_stall": 1} and stall.boxes["street_stall"] == [(0.25, 0.5, 0.75, 1.0)]
    assert by_case["images/cases/c-1.jpg"].labels == {"shopfront_spillover": 0}
    assert ds.labels("shopfront_spillover").tolist() == [-1, 0]  # the stall photo says nothing about spillover
    assert ds.labels("parking").tolist() == [-1, -1]



def test_a_picture_in_two_confirmed_cases_keeps_the_boxes_of_both(tmp_path):
    """One photo often opens a stall case and a spillover case: its one row gets both labels and boxes.csv names that
    row's file for both boxes (the second case's box named a file of its own case id, which labels.csv does not list,
    so loading left it out without a word)."""
    import json

    from pipelines.verifier.from_cases import verifier_dataset_from_cases

    export = tmp_path / "export"
    photo = sorted((STREET_SCENES / "images" / "cn2").glob("*.jpg"))[0]
    (export / "evidence").mkdir(parents=True)
    (export / "evidence" / photo.name).write_bytes(photo.read_bytes())
    lines = [{"case_id": case, "violation_type": vtype, "decision": "approved", "source_id": "cam-01",
              "image": f"evidence/{photo.name}", "width": 400, "height": 300,
              "boxes": [{"class_name": f"verified:{vtype}", "xyxy": xyxy}]}
             for case, vtype, xyxy in [("c-1", "street_stall", [100, 150, 300, 300]),
                                       ("c-2", "shopfront_spillover", [0, 0, 200, 150])]]
    (export / "review.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    _, n, findings = verifier_dataset_from_cases(export, tmp_path / "ds")
    assert n == 1 and not findings
    [only] = load_dataset(tmp_path / "ds").photos
    assert only.file == "images/cases/c-1.jpg"
    assert only.labels == {"street_stall": 1, "shopfront_spillover": 1}
    assert only.boxes == {"street_stall": [(0.25, 0.5, 0.75, 1.0)], "shopfront_spillover": [(0.0, 0.0, 0.5, 0.5)]}


def test_a_case_id_that_is_no_file_name_names_no_file_outside_the_dataset(tmp_path):
    """Another tool's case id became the picture's file name as it was: `../../x` copied the photo outside the dataset
    folder (labels.csv naming images/cases/../../x.jpg), `SW:2026/1` a name Windows cannot hold. The id is made safe as
    the detector path makes it (`case_file_stem`); two ids alike once made safe keep a file each."""
    import json

    from pipelines.verifier.from_cases import verifier_dataset_from_cases

    export = tmp_path / "export"
    (export / "evidence").mkdir(parents=True)
    photos = sorted((STREET_SCENES / "images" / "cn2").glob("*.jpg"))[:3]
    for photo in photos:
        (export / "evidence" / photo.name).write_bytes(photo.read_bytes())
    lines = [{"case_id": case, "violation_type": "street_stall", "decision": "rejected", "reason_code": "not_a_violation",
              "source_id": "cam-01", "image": f"evidence/{photo.name}"}
             for case, photo in [("../../escaped", photos[0]), ("SW:2026/1", photos[1]), ("SW_2026_1", photos[2])]]
    (export / "review.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    out = tmp_path / "out" / "ds"
    _, n, findings = verifier_dataset_from_cases(export, out)
    assert n == 3 and not findings
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jpg") if "export" not in p.parts) == [
        "out/ds/images/cases/.._.._escaped.jpg", "out/ds/images/cases/SW_2026_1-line3.jpg", "out/ds/images/cases/SW_2026_1.jpg"]
    assert sorted(p.file for p in load_dataset(out).photos) == [
        "images/cases/.._.._escaped.jpg", "images/cases/SW_2026_1-line3.jpg", "images/cases/SW_2026_1.jpg"]


def test_reviewed_cases_with_a_bad_size_swapped_box_or_altered_picture_are_reported_and_skipped(tmp_path):
    """The checks of the detector path (`data from-cases`), on `--verifier` too: a frame size that is no number of pixels
    was a TypeError traceback, a box with its corners swapped a boxes.csv row that stopped the dataset from loading, and
    a picture altered since review (sha256 differs) became training data. Each such line is said and left out."""
    import json

    from detect.digests import sha256_file
    from pipelines.verifier.from_cases import verifier_dataset_from_cases

    export = tmp_path / "export"
    (export / "evidence").mkdir(parents=True)
    photos = sorted((STREET_SCENES / "images" / "cn2").glob("*.jpg"))[:5]
    for photo in photos:
        (export / "evidence" / photo.name).write_bytes(photo.read_bytes())
    box = [{"class_name": "verified:street_stall", "xyxy": [100, 150, 300, 300]}]
    lines = [{"case_id": case, "violation_type": "street_stall", "decision": "approved", "source_id": "cam-01",
              "image": f"evidence/{photo.name}", "image_sha256": sha256_file(photo), "width": 400, "height": 300, "boxes": box}
             | change for case, photo, change in [
                 ("ok", photos[0], {}),
                 ("px", photos[1], {"width": "1920px"}),
                 ("neg", photos[2], {"height": -300}),
                 ("swapped", photos[3], {"boxes": [{"class_name": "verified:street_stall", "xyxy": [300, 300, 100, 150]}]}),
                 ("altered", photos[4], {"image_sha256": "0" * 64})]]
    (export / "review.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    _, n, findings = verifier_dataset_from_cases(export, tmp_path / "ds")
    assert n == 1
    assert [(f.path, f.reason) for f in findings] == [
        ("review.jsonl: line 2", "width '1920px' and height 300 must be positive numbers of pixels: skipped"),
        ("review.jsonl: line 3", "width 400 and height -300 must be positive numbers of pixels: skipped"),
        ("review.jsonl: line 4", "box [300.0, 300.0, 100.0, 150.0] is not [x1, y1, x2, y2] with x1 < x2 and y1 < y2: skipped"),
        ("review.jsonl: line 5", f"image {export / 'evidence' / photos[4].name} does not match its recorded sha256 "
                                 "(evidence altered?): skipped")]
    [only] = load_dataset(tmp_path / "ds").photos
    assert only.file == "images/cases/ok.jpg" and only.boxes == {"street_stall": [(0.25, 0.5, 0.75, 1.0)]}


def _review_export(folder: Path, lines: list[dict]) -> Path:
    """A review export like `data export-reviews` writes: each line's `image` (a real photo) copied under evidence/."""
    import json
    import shutil

    (folder / "evidence").mkdir(parents=True)
    for line in lines:
        if isinstance(line.get("image"), Path):
            shutil.copyfile(line["image"], folder / "evidence" / line["image"].name)
            line["image"] = f"evidence/{line['image'].name}"
    (folder / "review.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return folder


def test_reviewed_cases_dataset_csvs_open_in_excel_with_their_chinese_names(tmp_path):
    """labels.csv and boxes.csv of `from-cases --verifier` had no byte-order mark, while `verifier to-label`'s sheet has
    one, so Excel showed a Chinese camera or batch name (the group) garbled; every dataset CSV is written by one
    `write_rows`, and the set still loads with the group as written."""
    from pipelines.verifier.from_cases import verifier_dataset_from_cases

    photo = sorted((STREET_SCENES / "images" / "cn2").glob("*.jpg"))[0]
    export = _review_export(tmp_path / "export", [
        {"case_id": "c-1", "violation_type": "street_stall", "decision": "approved", "source_id": "文三路口-东",
         "image": photo, "width": 400, "height": 300, "boxes": [{"class_name": "verified:street_stall", "xyxy": [100, 150, 300, 300]}]}])
    labels, n, _ = verifier_dataset_from_cases(export, tmp_path / "ds")
    assert n == 1
    for name in ("labels.csv", "boxes.csv"):
        assert (tmp_path / "ds" / name).read_bytes().startswith(b"\xef\xbb\xbffile,"), name
    assert "文三路口-东" in labels.read_text(encoding="utf-8-sig")
    [only] = load_dataset(tmp_path / "ds").photos
    assert only.group == "文三路口-东" and only.boxes == {"street_stall": [(0.25, 0.5, 0.75, 1.0)]}


def test_reviewed_cases_decisions_are_read_as_the_detector_path_reads_them(tmp_path):
    """"Confirmed" from another tool was skipped as no decision, and a decision that is a list stopped the whole build
    with a TypeError; the decision is now read by the detector path's own function (case_decision)."""
    from pipelines.verifier.from_cases import verifier_dataset_from_cases

    photos = sorted((STREET_SCENES / "images" / "cn2").glob("*.jpg"))[:3]
    box = [{"class_name": "verified:street_stall", "xyxy": [100, 150, 300, 300]}]
    export = _review_export(tmp_path / "export", [
        {"case_id": case, "violation_type": "street_stall", "decision": decision, "source_id": "cam-01",
         "image": photo, "width": 400, "height": 300, "boxes": box}
        for case, photo, decision in [("upper", photos[0], "Confirmed"), ("list", photos[1], ["confirmed"]),
                                      ("pending", photos[2], "pending")]])
    _, n, findings = verifier_dataset_from_cases(export, tmp_path / "ds")
    assert n == 1
    assert [(f.path, f.reason, f.severity) for f in findings] == [
        ("review.jsonl: line 2", "decision ['confirmed'] is not confirmed/approved/rejected: skipped", "warning"),
        ("review.jsonl: line 3", "decision 'pending' is not confirmed/approved/rejected: skipped", "warning")]
    [only] = load_dataset(tmp_path / "ds").photos
    assert only.file == "images/cases/upper.jpg" and only.labels == {"street_stall": 1}


def test_reviewed_cases_without_a_frame_size_keep_their_boxes_on_the_picture_itself(tmp_path):
    """A confirmed case whose line names no width/height lost its boxes (the detector path takes the picture's own
    size); and, as there, a picture that cannot be decoded is reported and skipped, not copied into the set."""
    import cv2

    from pipelines.verifier.from_cases import verifier_dataset_from_cases

    photos = sorted((STREET_SCENES / "images" / "cn2").glob("*.jpg"))[:2]
    h, w = cv2.imread(str(photos[0])).shape[:2]
    line = {"violation_type": "street_stall", "decision": "approved", "source_id": "cam-01"}
    export = _review_export(tmp_path / "export", [
        {**line, "case_id": "nosize", "image": photos[0],
         "boxes": [{"class_name": "verified:street_stall", "xyxy": [w / 4, h / 2, w * 3 / 4, h]}]},
        {**line, "case_id": "cut", "image": "evidence/cut.jpg", "boxes": []}])
    (export / "evidence" / "cut.jpg").write_bytes(photos[1].read_bytes()[:2000])  # a copy broken off mid-file
    _, n, findings = verifier_dataset_from_cases(export, tmp_path / "ds")
    assert n == 1 and [(f.path, f.reason) for f in findings] == [
        ("review.jsonl: line 2", f"{export / 'evidence' / 'cut.jpg'}: cannot open image: Truncated File Read: skipped")]
    [only] = load_dataset(tmp_path / "ds").photos
    assert only.file == "images/cases/nosize.jpg" and only.boxes == {"street_stall": [(0.25, 0.5, 0.75, 1.0)]}


def test_a_reviewed_case_whose_box_lies_off_its_frame_is_reported_and_skipped(tmp_path):
    """A box with nothing on the 400 x 300 frame the line names (wholly right of it, or starting at its edge) became a
    boxes.csv row with x1 >= x2 once clipped, and then the whole dataset failed to load. Such a line is said and left
    out; a box that only overhangs the frame is clipped to it, as before."""
    from pipelines.verifier.from_cases import verifier_dataset_from_cases

    photos = sorted((STREET_SCENES / "images" / "cn2").glob("*.jpg"))[:3]
    export = _review_export(tmp_path / "export", [
        {"case_id": case, "violation_type": "street_stall", "decision": "approved", "source_id": "cam-01",
         "image": photo, "width": 400, "height": 300,
         "boxes": [{"class_name": "verified:street_stall", "xyxy": xyxy} for xyxy in boxes]}
        for case, photo, boxes in [("overhang", photos[0], [[100, 150, 500, 400]]),
                                   ("off", photos[1], [[100, 150, 300, 300], [450, 10, 600, 100]]),
                                   ("edge", photos[2], [[400, 10, 420, 100]])]])
    _, n, findings = verifier_dataset_from_cases(export, tmp_path / "ds")
    assert n == 1 and [(f.path, f.reason) for f in findings] == [
        ("review.jsonl: line 2", "box [450.0, 10.0, 600.0, 100.0] lies outside the 400 x 300 frame (wrong width/height?): skipped"),
        ("review.jsonl: line 3", "box [400.0, 10.0, 420.0, 100.0] lies outside the 400 x 300 frame (wrong width/height?): skipped")]
    [only] = load_dataset(tmp_path / "ds").photos
    assert only.file == "images/cases/overhang.jpg" and only.boxes == {"street_stall": [(0.25, 0.5, 1.0, 1.0)]}


def _f1_best(scores: np.ndarray, y: np.ndarray) -> float:
    """The plain rule the blurred one replaced: the positive score with the best F1."""
    def f1(th):
        tp, fp = ((scores >= th) & (y == 1)).sum(), ((scores >= th) & (y == 0)).sum()
        return 2 * tp / (2 * tp + (y == 1).sum() - tp + fp)
    return max(np.unique(scores[y == 1]), key=f1)


def test_thresholds_move_with_the_scores_not_by_peaks():
    """A retrained head's scores move a little (float rounding on another CPU): its threshold must move a little too.
    Score sets shaped like a head's (30 positives, 300 negatives); the plain F1-best point jumps between peaks."""
    y, sources = np.r_[np.ones(30, int), np.zeros(300, int)], np.full(330, "travel")
    jumps = 0
    for seed in range(30):
        scores = np.random.default_rng(seed).normal(size=330) + 1.5 * y
        moved = [scores + 0.01 * np.random.default_rng(1000 + k).normal(size=330) for k in range(5)]
        blurred = [choose_threshold(s, y, sources, 1.0) for s in moved]
        assert np.ptp([choose_threshold(scores, y, sources, 1.0), *blurred]) < 0.1, seed
        jumps += np.ptp([_f1_best(scores, y), *[_f1_best(s, y) for s in moved]]) > 0.1
    assert jumps >= 5  # the data do have jagged curves, so the bound above is the blurring's doing


def test_threshold_separates_classes_that_do_not_overlap():
    y = np.r_[np.ones(20, int), np.zeros(200, int)]
    scores = np.where(y == 1, 3.0, 0.0) + 0.3 * np.random.default_rng(0).normal(size=220)
    scores[0] = -np.inf  # a positive photo without a region to score (parking without a vehicle): always a miss
    th = choose_threshold(scores, y, np.full(220, "travel"), 1.0)
    assert (scores[y == 0] >= th).sum() == 0
    assert (scores[1:20] >= th).mean() >= 0.9


def test_a_weak_head_ships_only_where_it_beats_rules_that_find_something():
    """Figures of `street-v3`'s card: a refused head hands its types back to today's rules."""
    from pipelines.verifier.run import ships

    parking_rules = {"tp": 19, "fp": 332, "F1": 0.10, "P": 0.054}  # every vehicle of a zone-less photo
    assert ships({"tp": 5, "fp": 19, "F1": 0.192, "P": 0.208}, parking_rules)
    assert ships({"tp": 4, "fp": 22, "F1": 0.13, "P": 0.154}, parking_rules)  # weak, still far more precise
    assert not ships({"tp": 4, "fp": 300, "F1": 0.12, "P": 0.013}, parking_rules)  # no more precise: the rules stay
    garbage_rules = {"tp": 0, "fp": 0, "F1": 0.0, "P": 0.0}  # the rules find no garbage at all
    assert not ships({"tp": 2, "fp": 142, "F1": 0.026, "P": 0.014}, garbage_rules)
    assert not ships({"tp": 9, "fp": 60, "F1": 0.14, "P": 0.13}, {"tp": 7, "fp": 27, "F1": 0.141, "P": 0.206})  # stalls


def test_close_calls_do_not_train_the_parking_head_but_are_still_judged(tmp_path):
    """A photo without parking marked uncertain (a close call in its row) gives the parking head no training
    vehicle, yet it keeps its label, so thresholds and validation still count it as a photo without parking."""
    from pipelines.verifier.features import Features
    from pipelines.verifier.train import VehicleHead

    row = {"file": "images/a.jpg", "group": "g", "street_stall": "0", "parking_motor": "0", "parking_nonmotor": "0", "uncertain": "0"}
    rows = [{**row, "parking_motor": "1", "uncertain": "1"}, {**row, "file": "images/b.jpg", "uncertain": "1"},
            {**row, "file": "images/c.jpg"},
            {**row, "file": "images/d.jpg", "parking_motor": "", "parking_nonmotor": ""}]  # the last is labelled for stalls only
    ds = load_dataset(_dataset(tmp_path, rows))
    assert ds.close_call_negatives("parking").tolist() == [False, True, False, False]
    n = len(rows)
    feats = Features(np.zeros((n, 2, 1), np.float32), np.zeros((n, 8), np.float32), np.arange(n), np.tile([0.1, 0.5, 0.3, 0.9], (n, 1)),
                     np.array(["car"] * n, dtype=object), np.zeros((0, 2, 1), np.float32), np.zeros(0, int), [], [[]] * n)
    head = VehicleHead(ds, feats, c=1.0)
    assert head.labels.tolist() == [-2, -1, 0, -1]  # positive to find (no boxes), close call, trained negative, unlabelled
    assert head.y.tolist() == [1, 0, 0, -1]  # the photo labels that thresholds and validation count
    both = parking_head(ds, feats, tile_grid((1, 1)), c=1.0)
    assert both.y.tolist() == [1, 0, 0, -1]
    assert (both.added.labels[1] == -1).all() and both.added.y[1] == -1  # the scene part trains nothing on it either
    assert (both.added.labels[2] == 0).any() and both.added.labels[0].tolist() == [-2, -2]


@pytest.mark.slow  # 9 s: fits heads
def test_the_parking_heads_parts_are_standardised_on_their_training_photos(tmp_path):
    """Each part's logits have mean 0 and deviation 1 on the photos it was fitted on, so neither part's
    scale decides the sum (real features of `street-scenes`: its Chinese street photos and every parking photo)."""
    from pipelines.verifier.data import Dataset, load_datasets
    from pipelines.verifier.run import TrainOptions, features

    full = load_datasets([STREET_SCENES])
    ds = Dataset(full.root, [p for p in full.photos if p.source == "cn2" or p.labels.get("parking") == 1], full.digest)
    opt = TrainOptions(heads=["parking"], synth=0)
    _, feats = features(ds, opt, tmp_path)
    head = parking_head(ds, feats, tile_grid(opt.tiles), c=opt.c_for("parking"))
    idx = np.flatnonzero(head.y >= 0)
    assert (head.y[idx] == 1).sum() >= 20
    model = head.fit(idx)
    vehicle = head.main.scores(model.main, idx)
    seen = np.isfinite(vehicle)
    assert 0 < seen.sum() < len(idx)  # some photos have no vehicle: never found, and not in the standardisation
    assert not np.isfinite(head.scores(model, idx)[~seen]).any()
    scene = head.added.scores(model.added, idx)[seen]
    for part in (vehicle[seen], scene):
        assert abs(part.mean()) < 1e-3 and part.std() == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(head.scores(model, idx)[seen], vehicle[seen] + scene, rtol=1e-5)


@pytest.mark.slow  # 13 s: fits heads
def test_the_stall_heads_parts_are_standardised_and_photos_without_objects_get_the_floor(tmp_path):
    """The tiles and object parts of the stall head each have mean 0 and deviation 1 on their training photos;
    a photo without any object of the part's classes adds the lowest training photo's best object (real
    features of `street-scenes`: its Chinese street photos and every stall photo)."""
    from pipelines.verifier.data import Dataset, load_datasets
    from pipelines.verifier.run import TrainOptions, features
    from pipelines.verifier.train import tiles_objects_head

    full = load_datasets([STREET_SCENES])
    ds = Dataset(full.root, [p for p in full.photos if p.source == "cn2" or p.labels.get("street_stall") == 1], full.digest)
    opt = TrainOptions(heads=["street_stall"], synth=0)
    _, feats = features(ds, opt, tmp_path)
    head = tiles_objects_head("street_stall", ds, feats, tile_grid(opt.tiles), c=opt.c_for("street_stall"))
    idx = np.flatnonzero(head.y >= 0)
    model = head.fit(idx)
    tiles = head.main.scores(model.main, idx)
    objects = head.added.scores(model.added, idx)
    seen = np.isfinite(objects)
    assert 0 < (~seen).sum() < len(idx)  # some photos have no such object
    for part in (tiles, objects[seen]):
        assert abs(part.mean()) < 1e-3 and part.std() == pytest.approx(1.0, abs=1e-3)
    assert model.floor == pytest.approx(objects[seen].min())
    np.testing.assert_allclose(head.scores(model, idx), tiles + np.where(seen, objects, model.floor), rtol=1e-5)


def test_the_stall_head_is_regularised_harder_unless_C_is_set_for_every_head():
    """Default training gives the stall head its own, stronger L2 (`HEAD_C`, measured in docs/verifier.md);
    `--C` sets one value for every head, and the card's notes say which applied."""
    from pipelines.verifier.options import DEFAULT_C, HEAD_C, TrainOptions

    default = TrainOptions()
    assert default.c_for("street_stall") == HEAD_C["street_stall"] < DEFAULT_C
    assert {default.c_for(h) for h in ("shopfront_spillover", "flyposting", "parking")} == {DEFAULT_C}
    assert default.c_text == f"C={HEAD_C['street_stall']} for street_stall, {DEFAULT_C} for the others"
    chosen = TrainOptions(c=0.05)
    assert {chosen.c_for(h) for h in ("street_stall", "shopfront_spillover", "parking")} == {0.05}
    assert chosen.c_text == "C=0.05 for every head"


def test_the_figures_table_says_what_a_head_labelled_only_0_found():
    """`verifier eval` on a labelled folder whose one spillover photo is labelled 0 printed the bare line
    `  shopfront_spillover` with nothing under it, as if the head had judged nothing; it now says how many photos, and
    on how many of them the verifier and today's rules found the type anyway (figures as `evaluate` writes them)."""
    from streetwatch.commands.verifier import table

    def fig(fp: int) -> dict:
        return {"P": 0.0, "R": 0.0, "F1": 0.0, "AP": None, "tp": 0, "fp": fp, "fn": 0, "photos": 3, "positives": 0}

    shown = table({"shopfront_spillover": {"verifier": {"all": fig(1), "triage": fig(1)},
                                           "rules_today": {"all": fig(2), "triage": fig(2)}}})
    assert shown.splitlines() == ["  shopfront_spillover",
                                  "    no photo labelled 1 among 3: found on 1 (false findings)   rules today: found on 2"]


def test_a_photo_in_two_data_folders_is_kept_once_with_its_labels_merged(tmp_path):
    """A to-label sheet and a `from-cases --verifier` folder naming one photo (by content) counted it twice, weighing
    double in every figure and possibly on both sides of a split. It is kept once, the first folder's row with what
    the other says merged in, and a note counts them; rows that disagree are refused naming both."""
    import json
    import shutil

    from pipelines.verifier.data import load_datasets, write_rows
    from pipelines.verifier.from_cases import verifier_dataset_from_cases

    photos = sorted((STREET_SCENES / "images" / "cn2").glob("*.jpg"))[:3]
    sheet = tmp_path / "sheet"
    (sheet / "images" / "city").mkdir(parents=True)
    for p in photos:
        shutil.copy(p, sheet / "images" / "city" / p.name)
    write_rows(sheet / "labels.csv", ["file", "group", "street_stall", "notes"],
               [{"file": f"images/city/{p.name}", "group": f"g{i}", "street_stall": int(i == 0), "notes": "路边摊？" * (i == 0)}
                for i, p in enumerate(photos)])

    def cases(name: str, *lines: tuple[int, str, str, str | None]) -> Path:
        export = tmp_path / f"{name}-export"
        (export / "evidence").mkdir(parents=True)
        rows = []
        for i, vtype, decision, reason in lines:
            shutil.copy(photos[i], export / "evidence" / f"{name}-{i}.jpg")  # export-reviews' copy: another file name
            rows.append({"case_id": f"{name}-{i}", "violation_type": vtype, "decision": decision, "reason_code": reason,
                         "source_id": "cam-01", "image": f"evidence/{name}-{i}.jpg", "width": 400, "height": 300,
                         "boxes": [{"class_name": f"verified:{vtype}", "xyxy": [100, 150, 300, 300]}]})
        (export / "review.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows), encoding="utf-8")
        verifier_dataset_from_cases(export, tmp_path / name)
        return tmp_path / name

    agree = cases("agree", (0, "street_stall", "approved", None), (1, "shopfront_spillover", "rejected", "not_a_violation"))
    ds = load_datasets([sheet, agree])
    assert len(ds.photos) == 3 and [p.file for p in ds.photos] == [f"images/city/{p.name}" for p in photos]
    first, second, _ = ds.photos
    assert first.labels == {"street_stall": 1} and first.boxes == {"street_stall": [(0.25, 0.5, 0.75, 1.0)]}
    assert first.group == "g0" and first.notes == "路边摊？"
    assert second.labels == {"street_stall": 0, "shopfront_spillover": 0}  # the case's type merged into the sheet's row
    assert f"{agree}: 2 photos are (by content) photos of an earlier --data folder: kept once, their labels merged " \
           "into its rows" in ds.notes
    assert ds.digest == load_datasets([sheet, agree]).digest  # the folders' labels, as before

    disagree = cases("disagree", (1, "street_stall", "approved", None))
    with pytest.raises(DatasetError, match=rf"{sheet / 'labels.csv'} \(images/city/{photos[1].name}\) and "
                                           rf"{disagree / 'labels.csv'} \(images/cases/disagree-1.jpg\) are the same photo but "
                                           r"label street_stall 0 and 1: correct or remove one row"):
        load_datasets([sheet, disagree])


def test_a_photo_rejected_as_car_parking_is_no_parking_negative_for_its_bicycles(tmp_path):
    """`parking_motor` and `parking_nonmotor` train the one parking head, and a 0 in either made the photo a parking
    negative: a case rejected as illegal_parking on street-scenes' rida__30 (no car, a pavement of shared bikes,
    parking_nonmotor 1) stopped training with street-scenes beside it ('label parking 1 and 0'), and alone taught the
    head that those bikes are no parking. A head is negative only when every parking column the file has says 0."""
    import json
    import shutil

    from pipelines.verifier.data import load_datasets, write_rows
    from pipelines.verifier.from_cases import verifier_dataset_from_cases

    photo = STREET_SCENES / "images" / "cn2" / "rida__30.jpg"
    sheet = tmp_path / "sheet"  # street-scenes' own row of the photo, both parking columns answered
    (sheet / "images" / "cn2").mkdir(parents=True)
    shutil.copy(photo, sheet / "images" / "cn2" / photo.name)
    columns = ["file", "group", "street_stall", "parking_motor", "parking_nonmotor"]
    write_rows(sheet / "labels.csv", columns, [{"file": f"images/cn2/{photo.name}", "group": "cn2-rida", "street_stall": 0,
                                               "parking_motor": 0, "parking_nonmotor": 1}])
    export = tmp_path / "export"
    (export / "evidence").mkdir(parents=True)
    shutil.copy(photo, export / "evidence" / "c1.jpg")
    line = {"case_id": "c1", "violation_type": "illegal_parking", "decision": "rejected", "reason_code": "not_a_violation",
            "source_id": "triage:run1", "image": "evidence/c1.jpg", "boxes": []}
    (export / "review.jsonl").write_text(json.dumps(line) + "\n", encoding="utf-8")
    cases = tmp_path / "cases"
    verifier_dataset_from_cases(export, cases)

    both = load_datasets([sheet, cases])
    assert [p.labels for p in both.photos] == [{"street_stall": 0, "parking": 1}]
    assert both.name == "sheet + cases"  # the card's dataset `root` named the first folder alone
    alone = load_dataset(cases)
    assert alone.name == "cases"
    assert alone.photos == []
    assert any("1 rows label one parking column 0 and leave the other empty" in n for n in alone.notes)

    answered = tmp_path / "answered"  # a to-label row answered for both columns is a negative, as before
    shutil.copytree(sheet, answered)
    write_rows(answered / "labels.csv", columns, [{"file": f"images/cn2/{photo.name}", "group": "g", "parking_motor": 0,
                                                  "parking_nonmotor": 0}])
    assert [p.labels for p in load_dataset(answered).photos] == [{"parking": 0}]


def test_detect_without_a_promoted_verifier_says_what_to_do(tmp_path, monkeypatch, bus_jpg):
    """No verifier folder has a promoted.yaml (one removed by hand): detect stopped with only the missing
    promoted.yaml's path; it says where to put a verifier and how to run without one."""
    from typer.testing import CliRunner

    from streetwatch.cli import app

    monkeypatch.setattr("detect.verifier.verifier_dirs", lambda: [tmp_path / "verifiers"])
    result = CliRunner().invoke(app, ["detect", str(bus_jpg)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert str(tmp_path / "verifiers" / "promoted.yaml") in result.stderr
    assert "$STREETWATCH_MODELS" in result.stderr and "--verifier none" in result.stderr


def _mmj_dataset(folder: Path, count: int):
    """A dataset of street-scenes' first `count` mmj photos (copied into `folder`, one group each, no flyposting)."""
    from pipelines.verifier.data import write_rows

    photos = sorted((STREET_SCENES / "images" / "mmj").glob("*.jpg"))[:count]
    (folder / "images").mkdir(parents=True)
    for p in photos:
        (folder / "images" / p.name).write_bytes(p.read_bytes())
    write_rows(folder / "labels.csv", ["file", "group", "flyposting"],
               [{"file": f"images/{p.name}", "group": p.stem, "flyposting": 0} for p in photos])
    return load_dataset(folder)


def _counting_detector():
    """The real neck detector, counting the photos it reads."""
    from pipelines.verifier.run import detector_for

    detector = detector_for("yolo11n-neck")
    read, calls = detector.detect_with_features, []

    def counted(images):
        calls.extend(images)
        return read(images)

    detector.detect_with_features = counted
    return detector, calls


def _assert_same_features(a, b) -> None:
    """Every array of two Features the same bytes, dtype and shape; the lists equal."""
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), name
        else:
            assert x == y, name


def test_a_dataset_one_photo_larger_extracts_only_that_photo(tmp_path):
    """Each reviewed case joining the data changed the dataset's digest, and every retrain read all ~2,100 photos again
    for one new photo (docs/verifier.md: the whole training 366 s cold, 244 s so): a photo's parts are cached by its
    content, so only the new one is read, and the features are those of a run without any cache."""
    from pipelines.verifier.features import extract

    detector, calls = _counting_detector()
    first, second = _mmj_dataset(tmp_path / "first", 2), _mmj_dataset(tmp_path / "second", 3)
    extract(first, "yolo11n-neck", detector, (5, 3), tmp_path / "cache")
    assert len(calls) == 2
    steps = []
    warm = extract(second, "yolo11n-neck", detector, (5, 3), tmp_path / "cache", progress=lambda *step: steps.append(step))
    assert len(calls) == 3 and steps[-1] == (3, 3, 2)
    cold = extract(second, "yolo11n-neck", detector, (5, 3), tmp_path / "fresh")
    assert len(calls) == 6
    _assert_same_features(warm, cold)


def test_a_photo_replaced_under_its_own_name_is_read_again(tmp_path):
    """The assembled features were found by the labels and the photos' names: a photo the data team replaced in place
    (re-exported, cropped, the right shot swapped in) trained on the old photo's numbers until the cache was deleted."""
    from pipelines.verifier.features import extract

    detector, calls = _counting_detector()
    dataset = _mmj_dataset(tmp_path / "data", 2)
    first = extract(dataset, "yolo11n-neck", detector, (5, 3), tmp_path / "cache")
    replaced, other = dataset.photos
    replaced.path.write_bytes(other.path.read_bytes())
    again = extract(load_dataset(tmp_path / "data"), "yolo11n-neck", detector, (5, 3), tmp_path / "cache")
    assert len(calls) == 2  # the new content's parts were already cached (the other photo's), nothing stale was read
    assert np.array_equal(again.tiles[0], first.tiles[1]) and not np.array_equal(again.tiles[0], first.tiles[0])


def test_training_reads_a_large_photo_at_the_pixels_triage_judges(tmp_path, zidane_jpg):
    """A head must train on the pixels it will judge. Triage decodes a JPEG reduced while its long side stays at or above
    the detector's input (zidane.jpg, 1280 x 720, at 640 x 360); train decoded it at up to 1280 px, and its tiles
    differed by up to 2 % of their range from triage's. A reviewed case's 12 MP phone photo was trained on pixels no
    photo is judged on."""
    from pipelines.triage.settings import TriageSettings
    from pipelines.verifier.data import write_rows
    from pipelines.verifier.features import extract

    detector, calls = _counting_detector()
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "images" / "zidane.jpg").write_bytes(zidane_jpg.read_bytes())
    write_rows(tmp_path / "data" / "labels.csv", ["file", "group", "street_stall"],
               [{"file": "images/zidane.jpg", "group": "z", "street_stall": 0}])
    extract(load_dataset(tmp_path / "data"), "yolo11n-neck", detector, (5, 3), tmp_path / "cache")
    [seen] = calls
    triage = decode_image(zidane_jpg, str(zidane_jpg), max_side=TriageSettings().imgsz).image
    assert seen.shape == (360, 640, 3) and np.array_equal(seen, triage)


def test_an_unreadable_per_photo_cache_file_is_extracted_again_with_a_warning(tmp_path, caplog):
    """A per-photo file cut short (a disk filled, a copy stopped) is read again from the photo, not a crash."""
    from pipelines.verifier.features import extract

    detector, calls = _counting_detector()
    dataset = _mmj_dataset(tmp_path / "data", 2)
    first = extract(dataset, "yolo11n-neck", detector, (5, 3), tmp_path / "cache")
    broken = sorted((tmp_path / "cache" / "verifier-photos").glob("*/*.npz"))[0]
    broken.write_bytes(broken.read_bytes()[:100])
    for assembled in (tmp_path / "cache").glob("verifier-features-*.npz"):
        assembled.unlink()
    again = extract(dataset, "yolo11n-neck", detector, (5, 3), tmp_path / "cache")
    assert len(calls) == 3 and str(broken) in caplog.text and "extracting the photo again" in caplog.text
    _assert_same_features(first, again)
    assert np.load(broken)["tiles"].shape == first.tiles.shape[1:]  # written again


def test_a_fresh_feature_extraction_trains_on_what_its_cache_gives_every_later_run(tmp_path):
    """The run that extracted the features trained on the composites' slip boxes in float64, and every later run of the
    same command (the one a card records, reading the cache) on them in float32: a tile at a slip's edge changed sides,
    and a card's flyposting head and threshold (0.8948) came out 0.9025 when its recorded command was run again. The
    fresh extraction is what the cache gives back."""
    from pipelines.verifier.features import extract
    from pipelines.verifier.run import detector_for
    from pipelines.verifier.synth import slip_font

    dataset = _mmj_dataset(tmp_path, 3)
    detector, font = detector_for("yolo11n-neck"), slip_font()
    assert font is not None  # fonts-noto-cjk, as `verifier train --synth` needs

    def run():
        return extract(dataset, "yolo11n-neck", detector, (5, 3), tmp_path / "cache", synth=6, seed=0, font=font)

    fresh = run()
    assert len(list((tmp_path / "cache").glob("verifier-features-*.npz"))) == 1
    again = run()  # from the cache
    assert len(fresh.synth_boxes) == 6
    for a, b in zip(fresh.synth_boxes, again.synth_boxes):  # in float64: NumPy 2 compares a float32 with a float as float32
        assert np.array_equal(np.array(a, dtype=np.float64), np.array(b, dtype=np.float64))
    assert np.array_equal(fresh.synth_tiles, again.synth_tiles) and np.array_equal(fresh.tiles, again.tiles)
    assert np.array_equal(fresh.vehicle_box, again.vehicle_box) and np.array_equal(fresh.object_box, again.object_box)


def test_a_misspelt_label_column_or_box_type_is_refused_not_passed_over(tmp_path):
    """A labels.csv header `shopfront_spilover` (one l short) was passed over as a column of notes: `verifier train`
    trained without the folder's 47 spillover labels and said nothing, and `data import --format street-scenes` said
    only that no photo was labelled. A column or box type that is nearly a label column is refused naming both; a box
    type no head trains on (another team's `graffiti`) is counted and left out, as a box of an unlisted photo is."""
    rows = list(csv.DictReader((STREET_SCENES / "labels.csv").open(encoding="utf-8")))
    travel = [r for r in rows if r["file"].startswith("images/mmj/")][:20]
    boxes = [b for b in csv.DictReader((STREET_SCENES / "boxes.csv").open(encoding="utf-8")) if b["file"] in {r["file"] for r in travel}]
    assert boxes  # the travel photos' real boxes

    def folder(name: str, header: dict[str, str], box_type: str | None = None) -> Path:
        root = tmp_path / name
        root.mkdir()
        (root / "images").symlink_to(STREET_SCENES / "images")
        with (root / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow([header.get(c, c) for c in travel[0]])
            writer.writerows([list(r.values()) for r in travel])
        with (root / "boxes.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(boxes[0]))
            writer.writeheader()
            writer.writerows([dict(boxes[0], type=box_type or boxes[0]["type"]), *boxes[1:]])
        return root

    assert not load_dataset(folder("clean", {})).notes
    bad = folder("header", {"shopfront_spillover": "shopfront_spilover"})
    with pytest.raises(DatasetError, match=rf"^{bad / 'labels.csv'}: column 'shopfront_spilover' is no label column: did you mean "
                                           r"'shopfront_spillover'\? \(its labels would be left out unread"):
        load_dataset(bad)
    with pytest.raises(DatasetError, match=r"column 'Street_Stall' is no label column: did you mean 'street_stall'"):
        load_dataset(folder("capital", {"street_stall": "Street_Stall"}))
    typo = folder("box-type", {}, "street_stal")
    with pytest.raises(DatasetError, match=rf"^{typo / 'boxes.csv'}: row 2: type 'street_stal' is no label column: did you mean 'street_stall'\?"):
        load_dataset(typo)
    other = load_dataset(folder("other-type", {}, "graffiti"))
    assert other.notes == [f"{tmp_path / 'other-type' / 'boxes.csv'}: 1 rows of a type no head trains on left out: graffiti 1"]
