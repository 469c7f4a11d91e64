"""Where the evidence boxes land (`pipelines.verifier.localisation`): the arithmetic, on real photos' labelled boxes."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tests.conftest import SHARED

STREET_SCENES = SHARED / "datasets" / "street-scenes"
STALLS = "images/mmj/IMG_0017.jpg"  # two street_stall boxes: E1-F3 (0, .5, .25, .75) and E3-G6 (.1667, .5, .5, .875)
BIKES = "images/mmj/IMG_0014.jpg"  # a parking_nonmotor box E7-F10 (.5, .5, .8333, .75) and a flyposting box F9


@pytest.fixture(scope="module")
def two_photos(tmp_path_factory):
    """The two real travel photos with their labels.csv and boxes.csv rows, loaded as `train --data` loads a folder."""
    from pipelines.verifier.data import load_dataset

    root = tmp_path_factory.mktemp("two")
    for name in ("labels.csv", "boxes.csv"):
        src = list(csv.DictReader((STREET_SCENES / name).open(encoding="utf-8")))
        with (root / name).open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(src[0]))
            w.writeheader()
            w.writerows(r for r in src if r["file"] in (STALLS, BIKES))
    (root / "images").symlink_to(STREET_SCENES / "images")
    return load_dataset(root)


def test_a_finding_hits_when_its_box_covers_a_third_of_a_labelled_box_or_holds_its_centre():
    from pipelines.verifier.localisation import hits

    stall = np.array([[0.0, 0.5, 0.25, 0.75]])
    assert hits(stall, stall, "covers") and hits(stall, stall, "centre")
    left_third = np.array([[0.0, 0.5, 0.0834, 0.75]])  # a third of its width: covers, but not its centre
    assert hits(left_third, stall, "covers") and not hits(left_third, stall, "centre")
    centre_only = np.array([[0.1, 0.6, 0.15, 0.65]])  # a sliver round its centre: 4 % of it
    assert not hits(centre_only, stall, "covers") and hits(centre_only, stall, "centre")
    assert not hits(np.array([[0.6, 0.0, 1.0, 0.4]]), stall, "covers")  # another part of the photo
    assert not hits(np.zeros((0, 4)), stall, "centre")  # a finding without a box hits nothing


def test_the_area_counts_overlapping_boxes_once():
    from pipelines.verifier.localisation import union_area

    assert union_area(np.array([[0.0, 0.0, 1.0, 1.0]])) == pytest.approx(1.0)
    assert union_area(np.array([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]])) == pytest.approx(0.25 + 0.25 - 0.0625)
    assert union_area(np.array([[-0.1, 0.5, 0.5, 1.2]])) == pytest.approx(0.25)  # clipped to the photo
    assert union_area(np.zeros((0, 4))) == 0.0


def test_localisation_counts_found_photos_with_labelled_boxes_against_a_random_tile(two_photos):
    from detect.verifier.pooling import tile_boxes
    from pipelines.verifier.localisation import localisation, localisation_table

    files = [p.file for p in two_photos.photos]
    evidence = {STALLS: {"street_stall": [(0.0, 0.5, 0.2, 0.75)]},  # on the first stall
                BIKES: {"nonmotor_parking": [(0.0, 0.0, 0.1, 0.1)],  # a corner, not the bikes
                        "shopfront_spillover": [(0.0, 0.0, 1.0, 1.0)]}}  # a false finding: no spillover box to hit or miss
    loc = localisation(two_photos, [evidence[f] for f in files], tile_boxes(5, 3))

    assert set(loc["heads"]) == {"street_stall", "parking"}  # flyposting has a box but was not found
    stall = loc["heads"]["street_stall"]["all"]
    assert stall["photos"] == 1 and stall["hit_rate"] == {"covers": 1.0, "centre": 1.0}
    assert stall["area_median"] == pytest.approx(0.05, abs=1e-3) and stall["whole_photo"] == 0.0
    # 5 x 3 half-overlapping tiles (1/3 x 1/2 of the photo, steps of 1/6 and 1/4), counted by hand: of the 15, 4 cover a
    # third of the first stall box and 2 hold its centre (columns 1-2, rows 2-3 and column 1, rows 2-3); 6 and 4 for the
    # second (.1667-.5 x .5-.875: columns 1-3, rows 2-3 and columns 2-3, rows 2-3); 6 tiles hit either by each rule
    tiles = loc["heads"]["street_stall"]["mmj"]["random_tile"]
    assert tiles == {"hit_rate": {"covers": 0.4, "centre": 0.4}, "area": pytest.approx(1 / 6, abs=1e-3)}
    parking = loc["heads"]["parking"]["mmj"]
    assert parking["photos"] == 1 and parking["hit_rate"] == {"covers": 0.0, "centre": 0.0}
    assert "street_stall" in localisation_table(loc) and "1 photo  hit 1.00 / 1.00" in localisation_table(loc)

