"""What the city and the data team choose by: operating points and cards that use them (`verifier threshold`),
and each photo's validation verdict (`verifier train --validation-csv`)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from detect.digests import sha256_file
from detect.frames import Frame
from detect.imageio import read_image
from detect.judgement import load_judgement
from detect.rules import PhotoRules
from detect.taxonomy import load_taxonomy
from detect.verifier import find_card
from pipelines.verifier.train import PRECISION_TARGETS, precision_threshold
from streetwatch.cli import app
from tests.test_verifier_judgement import STALL, WHEN


def test_the_precision_threshold_finds_the_most_photos_at_that_precision():
    scores = np.array([3.0, 2.0, 2.0, 1.0, 0.0, -np.inf])
    y = np.array([1, 0, 1, 1, 0, 1])  # precision down the ranking: 1, (tie) 2/3, 3/4, 3/5; -inf is never found
    assert precision_threshold(scores, y, 0.7) == 1.0  # 3 of the 4 photos at or above 1.0
    assert precision_threshold(scores, y, 0.8) == 3.0  # the tie at 2.0 comes whole, at 2/3
    assert precision_threshold(scores, y, 0.5) == 0.0
    assert precision_threshold(scores, np.array([0, 0, 0, 0, 0, 1]), 0.5) == np.inf  # nothing reaches it


def test_the_shipped_cards_operating_points_are_stricter_than_its_thresholds():
    card = yaml.safe_load(find_card("street-v7").read_text(encoding="utf-8"))
    for head, spec in card["heads"].items():
        name = "parking" if head in ("illegal_parking", "nonmotor_parking") else head
        points = card["metrics"][name]["operating_points"]
        assert [p["precision_target"] for p in points] == list(PRECISION_TARGETS)
        reached = [p["threshold"] for p in points if p["threshold"] is not None]
        assert reached == sorted(reached) and all(t >= spec["threshold"] for t in reached)
        for p in points:
            assert {"all"} <= set(p["verifier"]) and set(p["verifier"]["all"]) == {"P", "R", "tp", "fp"}


def _threshold(*args: str):
    return CliRunner().invoke(app, ["verifier", "threshold", *args], env={"COLUMNS": "250"})


def _types(path, judgement) -> set[str]:
    from detect.engine import load_detector

    image = read_image(path)
    dets, fmap = load_detector("yolo11n", backend="onnx").detect_with_features([image])[0]
    dets, verdicts = judgement.objects(image, dets, fmap)
    dets = judgement.photo(verdicts, dets, image.shape[1], image.shape[0])
    return {e.violation_type for e in PhotoRules(taxonomy=judgement.taxonomy).process(Frame(image, path.name, WHEN), dets,
                                                                                     verified=judgement.verified_types)}


def test_a_card_with_stricter_thresholds_changes_the_verdict_and_says_where_they_came_from(tmp_path):
    shipped = find_card("street-v7")
    for f in (shipped, shipped.with_suffix(".npz")):
        shutil.copy(f, tmp_path / f.name)
    result = _threshold(str(tmp_path / shipped.name), "--set", "parking=p0.7", "--set", "street_stall=0.99", "--id", "strict")
    assert result.exit_code == 0, result.output
    # outside the verifier folders the id names nothing: the message gives the card's path (it said --verifier strict)
    assert f"use it with --verifier {tmp_path / 'strict.yaml'} (it is outside the verifier folders" in " ".join(result.output.split())
    card = yaml.safe_load((tmp_path / "strict.yaml").read_text(encoding="utf-8"))
    point = next(p for p in card["metrics"]["parking"]["operating_points"] if p["precision_target"] == 0.7)
    shipped_card = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    found = point["verifier"]["all"]  # what the new threshold finds is said before anyone promotes it (one said nothing)
    assert (f"  illegal_parking {shipped_card['heads']['illegal_parking']['threshold']} -> {point['threshold']} (precision target "
            f"0.7: validation P {found['P']:.2f} R {found['R']:.2f})") in result.output.splitlines()
    assert f"  street_stall {shipped_card['heads']['street_stall']['threshold']} -> 0.99" in result.output.splitlines()
    assert card["id"] == "strict" and card["weights"] == "street-v7.npz"
    assert card["heads"]["illegal_parking"]["threshold"] == card["heads"]["nonmotor_parking"]["threshold"] == point["threshold"]
    assert card["heads"]["street_stall"]["threshold"] == 0.99
    assert "Thresholds set from street-v7" in card["notes"] and "street_stall" in card["notes"]
    taxonomy = load_taxonomy()
    assert "street_stall" in _types(STALL, load_judgement(str(shipped), taxonomy))
    assert "street_stall" not in _types(STALL, load_judgement(str(tmp_path / "strict.yaml"), taxonomy))


def test_a_stricter_card_in_a_verifier_folder_is_named_by_its_id(tmp_path, monkeypatch):
    shipped = find_card("street-v7")
    folder = tmp_path / "models" / "verifiers"
    folder.mkdir(parents=True)
    for f in (shipped, shipped.with_suffix(".npz")):
        shutil.copy(f, folder / f.name)
    monkeypatch.setenv("STREETWATCH_MODELS", str(tmp_path / "models"))
    result = _threshold(str(folder / shipped.name), "--set", "street_stall=0.9", "--id", "strict-here")
    assert result.exit_code == 0, result.output
    assert "use it with --verifier strict-here or `streetwatch verifier promote strict-here`" in " ".join(result.output.split())


@pytest.mark.parametrize(("setting", "reason"), [
    ("kiosk=0.5", "street-v7 has no head 'kiosk'"),  # the card it starts from, not the new id ('strict has no head')
    ("street_stall=p0.95", "street-v7 has no operating point for precision 0.95"),
    ("shopfront_spillover=p0.9", "no threshold of shopfront_spillover reached precision 0.9"),
    ("street_stall=1.5", "between 0 and 1"),
    ("street_stall", "expected HEAD=PROBABILITY"),
])
def test_a_bad_threshold_setting_is_refused_with_the_reason_and_writes_nothing(tmp_path, setting, reason):
    shipped = find_card("street-v7")
    for f in (shipped, shipped.with_suffix(".npz")):
        shutil.copy(f, tmp_path / f.name)
    result = _threshold(str(tmp_path / shipped.name), "--set", "street_stall=0.5", "--set", setting, "--id", "strict")
    assert result.exit_code == 2 and reason in result.output, result.output
    assert not (tmp_path / "strict.yaml").exists()
    assert _threshold(str(tmp_path / shipped.name), "--set", "street_stall=0.5", "--id", shipped.stem).exit_code == 2  # never overwrites
    elsewhere = _threshold(str(tmp_path / shipped.name), "--set", "street_stall=0.5", "--id", "../strict")  # the card's own id rule
    assert elsewhere.exit_code == 2 and "give the new card an id of letters" in elsewhere.output
    assert not (tmp_path.parent / "strict.yaml").exists()


@pytest.mark.slow  # 9 s: trains heads
def test_training_writes_each_photos_validation_verdict_for_review(tmp_path):
    """`verifier train --validation-csv`: one row per photo and head, the card's counts, false findings first
    (most confident first), with the labeller's notes (real photos of `street-scenes`: its Chinese streets
    and every stall photo). Trained at detector input 320 (`--imgsz`), which also makes it quicker: the card says
    so, and its heads judge only with a detector run at 320."""
    import csv

    from detect.engine import load_detector
    from detect.judgement import load_judgement
    from detect.taxonomy import load_taxonomy
    from detect.verifier.heads import VerifierError
    from pipelines.verifier.data import Dataset, load_datasets
    from pipelines.verifier.run import TrainOptions, train
    from tests.test_verifier_parts import STREET_SCENES

    full = load_datasets([STREET_SCENES])
    ds = Dataset(full.root, [p for p in full.photos if p.source == "cn2" or p.labels.get("street_stall") == 1], full.digest)
    out = tmp_path / "review.csv"
    path, card = train(ds, tmp_path / "heads", tmp_path / "cache",
                       TrainOptions(heads=["street_stall"], synth=0, verifier_id="t", imgsz=320), validation_csv=out)
    assert card.imgsz == 320
    load_judgement(str(path), load_taxonomy()).check(load_detector("yolo11n", features=True, imgsz=320))
    with pytest.raises(VerifierError, match="trained on the detector's neck at input 320, but the detector runs at 640"):
        load_judgement(str(path), load_taxonomy()).check(load_detector("yolo11n", features=True, imgsz=640))
    with out.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(ds.photos) and {r["head"] for r in rows} == {"street_stall"}
    figures = card.metrics["street_stall"]["verifier"]["all"]
    counts = {o: sum(r["outcome"] == o for r in rows) for o in ("found", "false finding", "missed")}
    assert counts == {"found": figures["tp"], "false finding": figures["fp"], "missed": figures["fn"]}
    false = [float(r["probability"]) for r in rows if r["outcome"] == "false finding"]
    assert rows[0]["outcome"] == "false finding" and false == sorted(false, reverse=True)
    assert sum(bool(r["notes"]) for r in rows) > len(rows) // 2 and any("close call" in r["notes"] for r in rows)
    assert {r["source"] for r in rows} == {"cn2", "mmj", "stk"}


@pytest.mark.slow  # 18 s: judges a labelled folder in a subprocess
def test_eval_on_a_labelled_folder_writes_the_figures_and_each_photos_verdict(tmp_path):
    """`verifier eval` (a city's own held-out photos; here the Chinese street photos of `street-scenes`, which the
    promoted heads did train on, so only the bookkeeping is under test): the printed and JSON figures, and a CSV
    whose verdicts add up to them."""
    import csv
    import json

    rows = _cn2_folder(tmp_path, None)
    result = CliRunner().invoke(app, ["verifier", "eval", "--data", str(tmp_path), "--ocr", "off", "--out", str(tmp_path / "f.json"),
                                      "--validation-csv", str(tmp_path / "review.csv")], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "f.json").read_text(encoding="utf-8"))["figures"]
    with (tmp_path / "review.csv").open(encoding="utf-8-sig", newline="") as fh:
        verdicts = list(csv.DictReader(fh))
    assert f"wrote {len(verdicts)} verdicts to" in result.output
    for head in ("street_stall", "shopfront_spillover", "parking"):
        mine = [v for v in verdicts if v["head"] == head]
        f = figures[head]["verifier"]["all"]
        assert len(mine) == f["photos"] == len(rows)
        assert [sum(v["outcome"] == o for v in mine) for o in ("found", "false finding", "missed")] == [f["tp"], f["fp"], f["fn"]]
        assert all(0 <= float(v["probability"]) <= 1 for v in mine)  # the verifier's, for the heads it judges
    assert {v["probability"] for v in verdicts if v["head"] == "exposed_garbage"} <= {""}  # a head it does not ship
    assert figures["shopfront_spillover"]["verifier"]["all"]["tp"] >= 1  # the heads saw these photos: they find spillover

    # The same photos judged by the torch backend (on a GPU: --device cuda), then `verifier diff` of the two runs.
    result = CliRunner().invoke(app, ["verifier", "eval", "--data", str(tmp_path), "--ocr", "off", "--backend", "torch",
                                      "--validation-csv", str(tmp_path / "torch.csv")], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["verifier", "diff", str(tmp_path / "review.csv"), str(tmp_path / "torch.csv")])
    assert result.exit_code == 0, result.output
    changed = re.findall(r"^(\w+): (\d+) of (\d+) verdicts changed(?:; probabilities moved by ([\d.]+) at most)?$", result.output, re.M)
    moved = {h: m for h, _, _, m in changed}
    assert set(moved) >= {"street_stall", "shopfront_spillover", "parking"} and moved["exposed_garbage"] == ""  # not shipped
    assert all(int(n) == len(rows) and int(c) <= 1 for _, c, n, _ in changed), result.output  # same network in fp32
    assert all(float(moved[h]) < 0.01 for h in ("street_stall", "shopfront_spillover", "flyposting", "parking")), result.output
    flipped = dict(verdicts[0], outcome="found" if verdicts[0]["outcome"] == "false finding" else "false finding")
    with (tmp_path / "edited.csv").open("w", newline="", encoding="utf-8-sig") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(verdicts[0]))
        writer.writeheader()
        writer.writerows([flipped, *verdicts[1:-1]])  # one verdict changed, the last one left out
    result = CliRunner().invoke(app, ["verifier", "diff", str(tmp_path / "review.csv"), str(tmp_path / "edited.csv")])
    assert result.exit_code == 0, result.output
    p = f" ({float(verdicts[0]['probability']):.3f})" if verdicts[0]["probability"] else ""
    assert f"  {verdicts[0]['file']}: {verdicts[0]['outcome']}{p} -> {flipped['outcome']}{p}" in result.output
    assert "(1 verdict is in one file only and was not compared)" in result.output
    result = CliRunner().invoke(app, ["verifier", "diff", str(tmp_path / "review.csv"), str(tmp_path / "labels.csv")])
    assert result.exit_code == 2 and "not a verdicts CSV" in result.output
    with (tmp_path / "other.csv").open("w", newline="", encoding="utf-8-sig") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(verdicts[0]))
        writer.writeheader()
        writer.writerow(dict(verdicts[0], file="images/elsewhere.jpg"))
    result = CliRunner().invoke(app, ["verifier", "diff", str(tmp_path / "review.csv"), str(tmp_path / "other.csv")])
    assert result.exit_code == 2 and "share no (type, photo) verdict" in result.output


def test_eval_says_which_verifier_and_thresholds_it_judged_with_and_how_many_photos(tmp_path):
    """`verifier eval` printed figures without saying which verifier made them (the promoted one unless --verifier),
    where its thresholds came from (a `verifier threshold` card judges otherwise) or how many photos it judged."""
    _cn2_folder(tmp_path, 3)
    shipped = find_card("street-v7")
    for f in (shipped, shipped.with_suffix(".npz")):
        shutil.copy(f, tmp_path / f.name)
    assert _threshold(str(tmp_path / shipped.name), "--set", "street_stall=0.99", "--id", "strict").exit_code == 0

    result = CliRunner().invoke(app, ["verifier", "eval", "--data", str(tmp_path), "--ocr", "off", "--limit", "1"],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert (f"verifier street-v7 ({shipped}, the promoted one; thresholds as trained (each head's best F1 on validation, "
            f"F0.5 for parking)): judging 1 of 3 photos of {tmp_path}") in result.output
    result = CliRunner().invoke(app, ["verifier", "eval", "--data", str(tmp_path), "--ocr", "off", "--verifier",
                                      str(tmp_path / "strict.yaml")], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert (f"verifier strict ({tmp_path / 'strict.yaml'}; thresholds set from street-v7 by `streetwatch verifier threshold`): "
            f"judging 3 photos of {tmp_path}") in result.output


def _shipped_copy(out: Path) -> Path:
    """`out` holding a copy of the shipped street-v7 card and heads."""
    shipped = find_card("street-v7")
    out.mkdir(parents=True)
    for f in (shipped, shipped.with_suffix(".npz")):
        shutil.copy(f, out / f.name)
    return out


def _stall_sheet(sheet: Path) -> Path:
    """A labelled folder of six real street photos, every other one a stall."""
    from pipelines.verifier.data import write_rows
    from tests.test_verifier_parts import STREET_SCENES

    photos = sorted((STREET_SCENES / "images" / "cn2").glob("*.jpg"))[:6]
    (sheet / "images").mkdir(parents=True)
    for p in photos:
        shutil.copy(p, sheet / "images" / p.name)
    write_rows(sheet / "labels.csv", ["file", "group", "street_stall"],
               [{"file": f"images/{p.name}", "group": f"g{i}", "street_stall": i % 2} for i, p in enumerate(photos)])
    return sheet


def test_training_without_out_writes_where_promote_writes_not_under_the_current_folder(tmp_path, monkeypatch):
    """`verifier train --out` defaulted to models/verifiers under the current folder, ignoring $STREETWATCH_MODELS, so a
    deployment's heads went into the checkout (or wherever the command ran) while `verifier promote` and every reader
    looked in $STREETWATCH_MODELS. It defaults to verifiers/ of the first writable model folder: a street-v7 there is
    the one training refuses to overwrite, before any photo is read."""
    models = tmp_path / "models"
    monkeypatch.setenv("STREETWATCH_MODELS", str(models))
    out = _shipped_copy(models / "verifiers")
    result = CliRunner().invoke(app, ["verifier", "train", "--data", str(_stall_sheet(tmp_path / "sheet")), "--synth", "0",
                                      "--cache", str(tmp_path / "cache")], env={"COLUMNS": "250"})
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{out / 'street-v7.yaml'}: verifier 'street-v7' exists already" in " ".join(result.stderr.split())
    assert not (tmp_path / "cache").exists()


def test_training_never_overwrites_a_verifier_and_says_which_id_is_free(tmp_path):
    """`--out` and `--id` default to models/verifiers and street-v7, and the next steps `data from-cases --verifier` and
    `verifier to-label` printed named no --id: following them trained over the shipped (promoted) heads and their card.
    A card or heads of the id in --out are refused before any photo is read, naming the file and a free id."""
    out = _shipped_copy(tmp_path / "verifiers")
    (out / "street-v7-2.npz").write_bytes(b"")  # heads of street-v7-2 left by a run: that id is taken too
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    sheet = _stall_sheet(tmp_path / "sheet")

    result = CliRunner().invoke(app, ["verifier", "train", "--data", str(sheet), "--out", str(out), "--synth", "0",
                                      "--cache", str(tmp_path / "cache")], env={"COLUMNS": "250"})
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (f"{out / 'street-v7.yaml'}: verifier 'street-v7' exists already, and training would overwrite it: choose "
            "another --id (e.g. --id street-v7-3), or another --out") in " ".join(result.stderr.split())
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before and not (tmp_path / "cache").exists()


def test_detect_and_triage_say_which_verifier_judged_after_a_promotion_and_going_back(tmp_path, monkeypatch, bus_jpg):
    """After `verifier promote` of new heads (and of the shipped ones again) nothing but `verifier eval` said which heads
    judged: detect printed verdicts, triage its counts and a report naming the detector alone, so a data clerk could not
    tell whether a promotion was taken. detect says it on stderr, triage beside its summary and in the report's header."""
    from detect.verifier.heads import HeadSet, write_card

    models = tmp_path / "models"
    monkeypatch.setenv("STREETWATCH_MODELS", str(models))
    shipped = find_card("street-v7")
    folder = models / "verifiers"
    folder.mkdir(parents=True)
    write_card(HeadSet.load(shipped).card.model_copy(update={"id": "city-v8", "weights": "city-v8.npz"}), folder / "city-v8.yaml")
    shutil.copy(shipped.with_suffix(".npz"), folder / "city-v8.npz")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(bus_jpg, photos / bus_jpg.name)
    runner = CliRunner()

    def triage(out: str) -> str:
        result = runner.invoke(app, ["triage", str(photos), "--out", str(tmp_path / out), "--no-cases", "--ocr", "off",
                                     "--workers", "1", "--no-progress"], env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
        assert f"核验模型 verifier {out}" in (tmp_path / out / "report.html").read_text(encoding="utf-8")
        [record] = [json.loads(line) for line in (tmp_path / out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
        card = folder / "city-v8.yaml" if out == "city-v8" else shipped  # the same heads file, two cards: the card's digest tells
        assert record["verifier_model"] == {"id": out, "card_sha256": sha256_file(card),
                                            "heads_sha256": sha256_file(shipped.with_suffix(".npz"))}
        return " ".join(result.stdout.split())

    assert runner.invoke(app, ["verifier", "promote", "city-v8"]).exit_code == 0
    assert f"judged with verifier city-v8 ({folder / 'city-v8.yaml'}, the promoted one; thresholds as trained" in triage("city-v8")
    detect = runner.invoke(app, ["detect", "--json", str(bus_jpg)], env={"COLUMNS": "250"})
    assert detect.exit_code == 0 and json.loads(detect.stdout)
    assert f"judging with verifier city-v8 ({folder / 'city-v8.yaml'}, the promoted one;" in " ".join(detect.stderr.split())

    assert runner.invoke(app, ["verifier", "promote", "street-v7"]).exit_code == 0  # going back to the shipped heads
    assert f"judged with verifier street-v7 ({shipped}, the promoted one;" in triage("street-v7")


def test_training_into_an_out_that_is_a_file_is_refused_before_any_photo_is_read(tmp_path):
    """`verifier train --out models/verifiers/h48a.yaml` (the card's path, not its folder) read every photo and trained
    every head, then stopped with `exists and is not a folder` when the card was written: minutes of training (six on the
    whole street-scenes) lost. Such an --out, or one under a file, is refused first, with nothing read or cached."""
    card = _shipped_copy(tmp_path / "verifiers") / "street-v7.yaml"
    sheet = _stall_sheet(tmp_path / "sheet")
    for out in (card, card / "sub"):
        result = CliRunner().invoke(app, ["verifier", "train", "--data", str(sheet), "--out", str(out), "--id", "mine", "--synth", "0",
                                          "--cache", str(tmp_path / "cache")], env={"COLUMNS": "250"})
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert f"--out {out}: {card} exists and is not a folder" in " ".join(result.stderr.split())
        assert not (tmp_path / "cache").exists()


def test_promoting_a_card_by_path_records_its_id_and_says_how_to_go_back(tmp_path, monkeypatch):
    """`verifier promote vout/h48a.yaml` (its help said an id; a card path is what `show` and `--verifier` take) wrote
    `id: vout/h48a.yaml` into promoted.yaml: every run from another folder, `serve`'s too, then stopped at `verifier
    card not found`. A card in a verifier folder is recorded by its id; one outside them is refused, saying where to
    copy it. And promote said nothing of the verifier it replaced, the one id a data engineer needs to undo it."""
    from detect.verifier import promoted_id
    from detect.verifier.heads import HeadSet, write_card

    models = tmp_path / "models"
    monkeypatch.setenv("STREETWATCH_MODELS", str(models))
    monkeypatch.chdir(tmp_path)
    shipped = find_card("street-v7")
    outside = _shipped_copy(tmp_path / "vout")
    write_card(HeadSet.load(shipped).card.model_copy(update={"id": "city-v8"}), outside / "city-v8.yaml")
    runner = CliRunner()

    refused = runner.invoke(app, ["verifier", "promote", "vout/city-v8.yaml"], env={"COLUMNS": "250"})
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert (f"vout/city-v8.yaml: a promotion names a verifier by its id ('city-v8'), which finds another card or none, as this card lies "
            f"outside the verifier folders ({models / 'verifiers'}") in " ".join(refused.stderr.split())
    assert f"copy it and its heads (street-v7.npz) into {models / 'verifiers'}, then promote 'city-v8'" in " ".join(refused.stderr.split())
    assert promoted_id() == "street-v7" and not (models / "verifiers" / "promoted.yaml").exists()

    shutil.copytree(outside, models / "verifiers")
    monkeypatch.chdir(models)
    result = runner.invoke(app, ["verifier", "promote", "verifiers/city-v8.yaml"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    record = models / "verifiers" / "promoted.yaml"
    assert " ".join(result.stdout.split()) == (f"promoted city-v8 ({record}), in place of street-v7; to go back: "
                                               "streetwatch verifier promote street-v7")
    monkeypatch.chdir(tmp_path)  # read from another folder, as serve and triage do
    assert promoted_id() == "city-v8" and find_card() == models / "verifiers" / "city-v8.yaml"
    again = runner.invoke(app, ["verifier", "promote", "city-v8"], env={"COLUMNS": "250"})
    assert again.exit_code == 0 and "city-v8 is the promoted verifier already" in again.stdout


def test_eval_labels_the_types_its_verifier_has_no_head_for_and_its_json_says_what_judged(tmp_path):
    """`verifier eval --verifier h48a.yaml` (heads for stalls and spillover only) printed flyposting, garbage and parking
    figures under the same heading as the heads' (AP and all), though the detector's classes judged them; and its
    `--out` JSON held the figures alone: two runs' files (fp32 and INT8, two cards) could not be told apart or made
    again. The table says which types no head judged, and the JSON starts with the command, the verifier (id, card,
    digests, thresholds), the detector, the data and how many of its photos were judged."""
    from detect.digests import sha256_file
    from detect.verifier.heads import HeadSet, write_card

    _cn2_folder(tmp_path, 2)
    shipped = find_card("street-v7")
    full = HeadSet.load(shipped).card
    card = tmp_path / "stalls-only.yaml"
    write_card(full.model_copy(update={"id": "stalls-only", "weights": "street-v7.npz",
                                       "heads": {"street_stall": full.heads["street_stall"]}}), card)
    shutil.copy(shipped.with_suffix(".npz"), tmp_path / "street-v7.npz")

    result = CliRunner().invoke(app, ["verifier", "eval", "--data", str(tmp_path), "--ocr", "off", "--limit", "1",
                                      "--verifier", str(card), "--out", str(tmp_path / "f.json")], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    headings = [line.strip() for line in result.stdout.splitlines() if line.startswith("  ") and not line.startswith("    ")]
    assert headings == ["street_stall", *(f"{t} (no head in stalls-only: judged by detector classes)"
                                          for t in ("shopfront_spillover", "flyposting", "exposed_garbage", "parking"))]
    record = json.loads((tmp_path / "f.json").read_text(encoding="utf-8"))
    assert record["command"].startswith("streetwatch verifier eval ") and record["date"]
    assert record["verifier"] == {"id": "stalls-only", "card": str(card), "card_sha256": sha256_file(card),
                                  "heads_sha256": sha256_file(tmp_path / "street-v7.npz"),
                                  "thresholds": "thresholds as trained (each head's best F1 on validation, F0.5 for parking)",
                                  "judged_by_detector_classes": ["exposed_garbage", "flyposting", "parking", "shopfront_spillover"]}
    assert (record["data"], record["photos"], record["of"], record["ocr"], record["backend"]) == (str(tmp_path), 1, 2, "off", "onnx")
    assert record["detector"].startswith("yolo11n") and record["figures"]["street_stall"]["verifier"]["all"]["photos"] == 1


def _cn2_folder(folder: Path, count: int | None) -> list[dict]:
    """`folder` as a labelled folder of street-scenes' Chinese street photos (the first `count`; None: all 68): their
    labels.csv rows, the images linked. Returns the rows."""
    import csv

    from tests.test_verifier_parts import STREET_SCENES

    rows = [r for r in csv.DictReader((STREET_SCENES / "labels.csv").open(encoding="utf-8")) if r["file"].startswith("images/cn2/")][:count]
    with (folder / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / "images").symlink_to(STREET_SCENES / "images")
    return rows


@pytest.mark.parametrize("command", ["train", "crossval"])
def test_data_too_small_for_any_head_is_refused_before_any_photo_is_read(tmp_path, command):
    """`verifier train --data cver` (four reviewed cases from `data from-cases --verifier`, no --heads) warned that
    each head had too few photos, then wrote a card with no head at all and exited 0: promoted, a verifier that judges
    nothing. Data no head can be trained from is refused before any photo is read, saying what each head has."""
    sheet = _stall_sheet(tmp_path / "sheet")  # six real photos, three of them stalls
    result = CliRunner().invoke(app, ["verifier", command, "--data", str(sheet), "--synth", "0", "--cache", str(tmp_path / "cache"),
                                      *(["--out", str(tmp_path / "heads"), "--id", "tiny"] if command == "train" else [])],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert ("no head can be trained from --data: each needs at least 8 positive and 8 negative photos, and these have only: "
            "street_stall 3 positive, shopfront_spillover 0 positive") in " ".join(result.stderr.split())
    assert not (tmp_path / "cache").exists() and not (tmp_path / "heads").exists()
