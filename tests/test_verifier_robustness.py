"""benchmarks/verifier_robustness.py: degraded copies of real photos, scored by the very fold heads of a training."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from benchmarks.verifier_robustness import SMALL_SIDE, SUBSTREAM_SIDE, degrade
from tests.conftest import SHARED

STREET_SCENES = SHARED / "datasets" / "street-scenes"
PHOTO = "images/mmj/IMG_0014.jpg"
"""A 960 x 720 travel photo of street-scenes."""


def _quantization_at(quality: int, image: Image.Image) -> dict:
    """The quantization tables Pillow writes at JPEG `quality`."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
    return Image.open(io.BytesIO(buf.getvalue())).quantization


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    with Image.open(STREET_SCENES / PHOTO) as im:
        return im.convert("RGB")


def test_night_ir_is_grey_in_three_equal_channels_with_less_contrast_and_the_same_noise_every_run(photo, tmp_path):
    a = degrade(STREET_SCENES / PHOTO, "night-ir", tmp_path / "a", PHOTO)
    b = degrade(STREET_SCENES / PHOTO, "night-ir", tmp_path / "b", PHOTO)
    assert a.suffix == ".png" and a.read_bytes() == b.read_bytes()  # seeded by the photo's name: the same copy every run
    x = np.asarray(Image.open(a)).astype(int)
    assert x.shape == (*photo.size[::-1], 3) and (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all()
    grey = np.asarray(photo.convert("L")).astype(float)
    assert 0.4 < x[..., 0].std() / grey.std() < 0.6  # contrast halved, plus noise of sigma 6
    residual = x[..., 0] - (128 + 0.5 * (grey - 128))
    assert 5 < residual.std() < 7


def test_grey_is_the_photo_without_its_colour_and_nothing_else(photo, tmp_path):
    x = np.asarray(Image.open(degrade(STREET_SCENES / PHOTO, "grey", tmp_path, PHOTO))).astype(int)
    assert (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all()
    assert (x[..., 0] == np.asarray(photo.convert("L"))).all()


def test_substream_and_small_are_scaled_down_and_messaging_is_recompressed_at_quality_50(photo, tmp_path):
    sub = Image.open(degrade(STREET_SCENES / PHOTO, "substream", tmp_path, PHOTO))
    assert sub.format == "JPEG" and max(sub.size) == SUBSTREAM_SIDE < max(photo.size)
    assert JpegImagePlugin.get_sampling(sub) == 2 and sub.quantization == _quantization_at(55, photo)  # 4:2:0, quality 55
    msg = Image.open(degrade(STREET_SCENES / PHOTO, "messaging", tmp_path, PHOTO))
    assert msg.size == photo.size and JpegImagePlugin.get_sampling(msg) == 2 and msg.quantization == _quantization_at(50, photo)
    little = Image.open(degrade(STREET_SCENES / PHOTO, "small", tmp_path, PHOTO))
    assert little.format == "PNG" and max(little.size) == SMALL_SIDE


@pytest.fixture(scope="module")
def travel_photos(tmp_path_factory):
    """Every eighth group of the travel photos of street-scenes (79 real photos, 11 with spillover), as a dataset folder
    of its own (labels.csv and boxes.csv filtered, the images linked)."""
    root = tmp_path_factory.mktemp("travel")
    rows = list(csv.DictReader((STREET_SCENES / "labels.csv").open(encoding="utf-8")))
    groups = set(sorted({r["group"] for r in rows if r["file"].startswith("images/mmj/")})[::8])
    files = {r["file"] for r in rows if r["group"] in groups}
    for name in ("labels.csv", "boxes.csv"):
        src = list(csv.DictReader((STREET_SCENES / name).open(encoding="utf-8")))
        with (root / name).open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(src[0]))
            w.writeheader()
            w.writerows(r for r in src if r["file"] in files)
    (root / "images").symlink_to(STREET_SCENES / "images")
    return root


@pytest.mark.slow  # ~40 s: extracts the features of 79 photos and 60 degraded copies, trains a head on 3 folds
def test_the_held_out_photos_are_scored_as_they_are_and_degraded_by_their_folds_heads(travel_photos, tmp_path):
    from benchmarks.verifier_robustness import main
    from pipelines.verifier.data import load_dataset
    from pipelines.verifier.metrics import figures
    from pipelines.verifier.options import TrainOptions
    from pipelines.verifier.run import features, train_heads

    cache, work, out = tmp_path / "cache", tmp_path / "work", tmp_path / "record.json"
    main(["--data", str(travel_photos), "--cache", str(cache), "--work", str(work), "--out", str(out), "--limit", "30",
          "--variants", "night-ir,substream", "--heads", "shopfront_spillover", "--folds", "3", "--synth", "0"])

    night = sorted((work / "night-ir").rglob("*.png"))
    sub = sorted((work / "substream").rglob("*.jpg"))
    assert len(night) == len(sub) == 30
    for path in night:
        x = np.asarray(Image.open(path))
        assert x.ndim == 3 and (x[..., 0] == x[..., 1]).all() and (x[..., 0] == x[..., 2]).all()
    assert all(max(Image.open(p).size) <= SUBSTREAM_SIDE for p in sub)

    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["environment"]["cpu_count"] and record["dataset"]["degraded"] == {"travel": 30}
    spill = record["heads"]["on the original photos"]["shopfront_spillover"]
    assert set(spill) == {"night-ir", "substream"}
    for variant in spill.values():
        assert set(variant["by_source"]) == {"all", "travel"} and len(variant["folds"]) == 3
        for key in ("original", "degraded"):
            assert {"AP", "F1", "tp", "fp", "photos", "positives"} <= set(variant["by_source"]["travel"][key])
        assert variant["by_source"]["travel"]["degraded"]["photos"] == variant["by_source"]["travel"]["original"]["photos"] == 30

    # The original figures are those of the heads `verifier train` fits, on the same 30 held-out photos.
    dataset = load_dataset(travel_photos)
    options = TrainOptions(folds=3, synth=0, heads=["shopfront_spillover"])
    _, feats = features(dataset, options, cache)
    result = train_heads(dataset, feats, options)[0]["shopfront_spillover"]
    copied = {str(p.relative_to(work / "night-ir").with_suffix("")) for p in night}
    m = np.array([str(p.file).rsplit(".", 1)[0] in copied for p in dataset.photos])
    y = dataset.labels("shopfront_spillover")
    alone = figures(result.oof_found[m], result.oof_scores[m], y[m], np.array(["travel"] * int(m.sum())),
                    np.array([p.group for p in dataset.photos])[m], 0)["all"]
    assert spill["night-ir"]["by_source"]["all"]["original"] == alone
    assert spill["substream"]["by_source"]["all"]["original"] == alone
