"""`data import --format street-scenes`: real rows of street-scenes (labels.csv, boxes.csv, the photos) as a detector
dataset: exact label rows, what is left out and why, groups kept whole by `data split`, and bad input named."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.retrain.check import check_dataset
from pipelines.retrain.dataset import Dataset, DatasetError
from pipelines.retrain.split import split_dataset
from pipelines.verifier.data import dataset_rows, write_rows
from pipelines.verifier.to_detector import import_street_scenes, parse_types
from streetwatch.cli import app
from tests.conftest import SHARED

STREET_SCENES = SHARED / "datasets" / "street-scenes"
runner = CliRunner()

#: 14 real rows: stalls with boxes (IMG_1406: three, IMG_1410: one), stall + spillover (IMG_0698), a travel-photo
#: posting with its box (IMG_2968), spillover (IMG_2970), bikes on a pavement alone (PA211718: parking, no class),
#: negatives (IMG_1389, IMG_2975, IMG_0711, lindsay__IMG_1839), a bike photo marked uncertain (IMG_2959), gallery
#: stickers (010404a uncertain, 010404b certain, no boxes) and a Chinese market alley stall without boxes.
ROWS = ["images/mmj/IMG_1406.jpg", "images/mmj/IMG_1410.jpg", "images/mmj/IMG_1389.jpg", "images/mmj/IMG_0698.jpg",
        "images/mmj/IMG_0711.jpg", "images/mmj/IMG_2968.jpg", "images/mmj/IMG_2970.jpg", "images/mmj/IMG_2975.jpg",
        "images/mmj/IMG_2959.jpg", "images/mmj/PA211718.jpg", "images/stk/010404a.jpg", "images/stk/010404b.jpg",
        "images/cn2/mpig__CrowdedMarketAlley.jpg", "images/cn2/lindsay__IMG_1839.jpg"]


def read(name: str) -> tuple[list[str], list[dict]]:
    """The columns and rows of one of street-scenes' CSVs, as the dataset reader reads them."""
    path = STREET_SCENES / name
    reader = dataset_rows(path.read_bytes(), path)
    rows = list(reader)
    return list(reader.fieldnames or []), rows


@pytest.fixture
def subset(tmp_path) -> Path:
    """A street-scenes folder of the `ROWS` (their labels.csv and boxes.csv rows as they are), the photos linked."""
    root = tmp_path / "ss"
    root.mkdir()
    columns, labels = read("labels.csv")
    write_rows(root / "labels.csv", columns, [r for r in labels if r["file"] in ROWS])
    columns, boxes = read("boxes.csv")
    write_rows(root / "boxes.csv", columns, [r for r in boxes if r["file"] in ROWS])
    (root / "images").symlink_to(STREET_SCENES / "images")
    return root


def label_rows(ds: Dataset) -> dict[str, list[str]]:
    return {Path(f.image).name: ds.path(f.label).read_text().splitlines() for f in ds.files()}


def test_boxed_positives_and_negatives_go_in_and_the_rest_is_counted(subset, tmp_path):
    ds = import_street_scenes(subset, tmp_path / "v")
    assert ds.classes == ["stall", "goods_display", "small_ad", "garbage"]
    assert label_rows(ds) == {
        "mmj__IMG_1406.jpg": ["0 0.666650 0.562500 0.666700 0.875000", "0 0.291700 0.500000 0.250000 0.250000",
                              "0 0.166650 0.500000 0.333300 0.500000"],
        "mmj__IMG_1410.jpg": ["0 0.500000 0.625000 1.000000 0.750000"],
        "mmj__IMG_0698.jpg": ["0 0.916650 0.625000 0.166700 0.250000", "1 0.708300 0.625000 0.250000 0.250000"],
        "mmj__IMG_2968.jpg": ["2 0.583300 0.937500 0.500000 0.125000"],
        "mmj__IMG_2970.jpg": ["1 0.958350 0.875000 0.083300 0.250000"],
        # negatives for every imported type: background pictures, the bikes of PA211718 included (parking: no class)
        "mmj__IMG_1389.jpg": [], "mmj__IMG_0711.jpg": [], "mmj__IMG_2975.jpg": [], "mmj__PA211718.jpg": [],
        "cn2__lindsay__IMG_1839.jpg": [],
    }
    assert ds.manifest.left_out == [
        "4 of 14 labelled photos: 2 uncertain=1 (close calls: --uncertain imports them), 1 positive for flyposting without a "
        "box for it, 1 positive for street_stall without a box for it (a positive without its box is left out: an empty "
        "label would teach what it shows as background)"]
    groups = {Path(f.image).name: f.group for f in ds.files()}
    assert groups["mmj__IMG_1406.jpg"] == groups["mmj__IMG_1389.jpg"] == "mmj-IMG023"
    assert groups["mmj__IMG_2968.jpg"] == groups["mmj__IMG_2975.jpg"] == "mmj-IMG049" != groups["mmj__PA211718.jpg"]
    assert len(set(groups.values())) == 5
    by_name = {Path(f.image).name: f.source for f in ds.files()}
    assert by_name["mmj__IMG_1410.jpg"] == "vseventer/markmyjourney@760261640b33897c6b0dbf810cf0951ec71b2f37:static/uploads/IMG_1410.JPG"  # as its repository spells it
    negatives = {Path(f.image).name: f.negative_for for f in ds.files() if not f.boxes}
    assert negatives == {n: ["stall", "goods_display", "small_ad", "garbage"] for n, rows in label_rows(ds).items() if not rows}
    assert check_dataset(ds).ok


def test_types_and_uncertain_change_what_counts_as_background(subset, tmp_path):
    stalls = import_street_scenes(subset, tmp_path / "stall", types=parse_types("street_stall"), uncertain=True)
    assert stalls.classes == ["stall"]
    rows = label_rows(stalls)
    # a posting or a shop's goods is no stall: background for a stall detector; the uncertain gallery sticker too
    assert rows["mmj__IMG_2968.jpg"] == rows["stk__010404b.jpg"] == rows["stk__010404a.jpg"] == rows["mmj__IMG_2959.jpg"] == []
    assert rows["mmj__IMG_0698.jpg"] == ["0 0.916650 0.625000 0.166700 0.250000"]
    assert stalls.manifest.left_out == ["1 of 14 labelled photos: 1 positive for street_stall without a box for it (a "
                                        "positive without its box is left out: an empty label would teach what it shows "
                                        "as background)"]
    assert parse_types("shopfront_spillover, street_stall") == ["street_stall", "shopfront_spillover"]
    with pytest.raises(DatasetError, match="unknown type.*parking_motor.*choose from street_stall.*a parked car is a COCO vehicle"):
        parse_types("street_stall,parking_motor")


def test_split_keeps_each_group_on_one_side(subset, tmp_path):
    ds = import_street_scenes(subset, tmp_path / "v")
    split = split_dataset(ds, tmp_path / "s", val_fraction=0.3)
    sides: dict[str, set] = {}
    for f in split.files():
        sides.setdefault(f.group, set()).add(f.split)
    assert all(len(s) == 1 for s in sides.values()) and {"train", "val"} == set().union(*sides.values())
    assert check_dataset(split).ok


def test_the_cli_imports_prints_counts_and_checks(subset, tmp_path):
    result = runner.invoke(app, ["data", "import", str(subset), "--format", "street-scenes", "--out", str(tmp_path / "v"),
                                 "--types", "street_stall,shopfront_spillover"])
    assert result.exit_code == 0, result.output
    assert "imported " in result.output and ": 11 images, 7 boxes, 7 negatives, 6 groups, classes stall, goods_display" in result.output
    assert "images/boxes per class: stall 3/5, goods_display 2/2" in result.output
    assert "left out: 3 of 14 labelled photos: 2 uncertain=1" in result.output
    assert "passes data check: 11 images, 0 errors" in result.output
    result = runner.invoke(app, ["data", "import", str(subset), "--out", str(tmp_path / "y"), "--types", "street_stall"])
    assert result.exit_code != 0 and "--types and --uncertain are for --format street-scenes" in result.output


def test_bad_input_is_named_with_its_file_and_row(subset, tmp_path):
    columns, boxes = read("boxes.csv")
    bad = [dict(r) for r in boxes if r["file"] in ROWS]
    bad[1]["x2"] = bad[1]["x1"]
    write_rows(subset / "boxes.csv", columns, bad)
    with pytest.raises(DatasetError, match=r"boxes.csv: row 3: box .* is not inside 0..1 with x1 < x2"):
        import_street_scenes(subset, tmp_path / "a")
    write_rows(subset / "boxes.csv", columns, [r for r in boxes if r["file"] in ROWS])
    columns, labels = read("labels.csv")
    rows = [r for r in labels if r["file"] in ROWS]
    import ultralytics.utils.patches  # noqa: F401  # as after any detector ran: PIL.Image.open patched to reach for pi-heif

    (subset / "notes.jpg").write_text("a text file saved under a photo's name")
    negative = rows[0]  # cn2/lindsay__IMG_1839.jpg: a street with no violation, which would go in as background
    write_rows(subset / "labels.csv", columns, [*rows, {**negative, "file": "notes.jpg"}])
    with pytest.raises(DatasetError, match=rf"labels.csv \(notes.jpg\): {subset / 'notes.jpg'} is not a readable image"):
        import_street_scenes(subset, tmp_path / "a")
    rows[4]["street_stall"] = "2"
    write_rows(subset / "labels.csv", columns, rows)
    with pytest.raises(DatasetError, match=rf"labels.csv: row 6 \({rows[4]['file']}\): street_stall is '2', expected 0, 1"):
        import_street_scenes(subset, tmp_path / "b")
    (subset / "labels.csv").unlink()
    result = runner.invoke(app, ["data", "import", str(subset), "--format", "street-scenes", "--out", str(tmp_path / "c")])
    assert result.exit_code != 0 and f"{subset / 'labels.csv'}: not found" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
