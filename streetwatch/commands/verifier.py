"""`streetwatch verifier ...`: train, show and promote the verifier heads (docs/verifier.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.verifier.options import TrainOptions
from pipelines.wording import counted  # no import of its own
from streetwatch.commands.common import (BackendOpt, DeviceOpt, ModelOpt, SettingsOpt, fail, judged_with, judgement_or_fail, print_warning, settings_or_fail,
                                         setup_logging, writable_or_fail)

DEFAULTS = TrainOptions()
"""The training defaults the `train` and `crossval` options show (pipelines.verifier.options)."""


DataOpt = Annotated[list[Path], typer.Option("--data", help="Dataset folder with labels.csv (+ boxes.csv), e.g. ../shared/datasets/street-scenes; "
                                                         "repeat to add reviewed cases (`data from-cases --verifier`).")]
BackboneOpt = Annotated[str, typer.Option("--backbone", help="yolo11n-neck (the detector's own neck, no second network) or efficientnet-lite0.")]
ImgszOpt = Annotated[int, typer.Option("--imgsz", min=32, help="The detector's input size in pixels (multiple of 32): the heads judge only with a "
                                                               "detector run at this size (`triage --imgsz`, settings `imgsz`).")]
VerifierIdOpt = Annotated[str, typer.Option("--id", help="Verifier id (file names and --verifier).")]
TilesOpt = Annotated[str, typer.Option("--tiles", help="Tile grid COLSxROWS (half-overlapping tiles) the tile heads read; the card records it and the heads judge with it.")]
RegularisationOpt = Annotated[float | None, typer.Option(
    "--C", min=1e-6, help=f"Inverse L2 regularisation of every logistic head (smaller = stronger); default: {DEFAULTS.c_text[2:]}.")]
FoldsOpt = Annotated[int, typer.Option("--folds", min=3, help="Group folds for validation (crossval: also the parts the photos are split into, each judged by heads trained on the others).")]
SynthOpt = Annotated[int, typer.Option("--synth", min=0, help="Synthetic small-ad composites on training street photos (flyposting).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the splits and composites.")]
UncertainOpt = Annotated[bool, typer.Option("--uncertain/--no-uncertain", help="Keep rows marked uncertain.")]
HeadsOpt = Annotated[str, typer.Option("--heads", help="Comma-separated heads to train (default: every head with enough positives; a name that is no head, or has too few, is refused before any photo is read, listing the heads).")]
CacheOpt = Annotated[Path, typer.Option("--cache", file_okay=False, writable=True,  # checked before any photo is read
                                        help="Feature cache folder: each photo's features (by its content) and each "
                                             "dataset's; it grows with every photo read, and may be deleted at will.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v")]
OcrOpt = Annotated[str, typer.Option("--ocr", help="OCR as in triage: auto, all or off.")]
PhoneRegionOpt = Annotated[str, typer.Option("--phone-region", help="Region of phone numbers read without a country code.")]
JsonOutOpt = Annotated[Path | None, typer.Option("--out", help="Also write the figures as JSON here.")]
ValidationCsvOpt = Annotated[Path | None, typer.Option(
    "--validation-csv", help="Also write each photo's validation verdict per head (false findings first, with the labeller's notes) "
                             "to this CSV, to review labels.")]


def _options(backbone: str, imgsz: int, verifier_id: str, tiles: str, c: float | None, folds: int, synth: int, seed: int, heads: str):
    """TrainOptions from the shared command-line options (a bad --tiles or --imgsz is one error line)."""
    if imgsz % 32:
        fail(f"--imgsz {imgsz}: expected a multiple of 32 such as 640 or 960")
    try:
        grid = tuple(int(v) for v in tiles.lower().split("x"))
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError
    except ValueError:
        fail(f"--tiles {tiles!r}: expected COLSxROWS such as 5x3")
    return TrainOptions(backbone=backbone, imgsz=imgsz, tiles=grid, c=c, folds=folds, seed=seed, synth=synth,  # type: ignore[arg-type]
                        verifier_id=verifier_id, heads=[h for h in heads.split(",") if h])


def _reason(exc: Exception) -> str:
    """The error line; a photo that cannot be decoded says what to do about it, since nothing is trained
    around a missing picture (dropping it would change the data the card's digest names)."""
    from detect.imageio import ImageReadError

    if isinstance(exc, ImageReadError):
        return f"{exc} (a photo of the dataset: replace the file, or remove its row from labels.csv)"
    return str(exc)


def register(app: typer.Typer) -> None:
    verifier = typer.Typer(help="The verifier: per-type heads that judge stalls, spillover, postings and parking (those a card ships: `verifier show`).",
                           no_args_is_help=True)
    app.add_typer(verifier, name="verifier")

    @verifier.command("train")
    def train(data: DataOpt, out: Annotated[Path | None, typer.Option(
                  "--out", help="Folder for the card (<id>.yaml) and heads (<id>.npz). Default: verifiers/ of the first model folder "
                                "you may write ($STREETWATCH_MODELS' first, else the project's models/, else ./models), where "
                                "`verifier promote` writes.")] = None,
              backbone: BackboneOpt = DEFAULTS.backbone, imgsz: ImgszOpt = DEFAULTS.imgsz, verifier_id: VerifierIdOpt = DEFAULTS.verifier_id,
              tiles: TilesOpt = DEFAULTS.tiles_text,
              c: RegularisationOpt = DEFAULTS.c, folds: FoldsOpt = DEFAULTS.folds, synth: SynthOpt = DEFAULTS.synth, seed: SeedOpt = DEFAULTS.seed,
              uncertain: UncertainOpt = True, heads: HeadsOpt = "",
              cache: CacheOpt = Path(".cache/verifier"), validation_csv: ValidationCsvOpt = None, verbose: VerboseOpt = False) -> None:
        """Train the heads on labelled photos, validate them by group split, and write their card."""
        from rich.console import Console

        from detect.verifier import writable_verifier_dir
        from detect.verifier.heads import VerifierError
        from pipelines.verifier.data import DatasetError, load_datasets
        from pipelines.verifier.run import new_card
        from pipelines.verifier.run import train as run_train

        setup_logging(verbose)
        options = _options(backbone, imgsz, verifier_id, tiles, c, folds, synth, seed, heads)
        _outputs_or_fail(None, validation_csv)
        console = Console(stderr=True)
        out = out or writable_verifier_dir()
        try:
            new_card(out, options.verifier_id)  # before any photo is read
            dataset = load_datasets(data, uncertain=uncertain)
            _say_notes(dataset.notes)
            with console.status("training") as status:
                path, card = run_train(dataset, out, cache, options, progress=lambda msg: status.update(msg), validation_csv=validation_csv)
        except (DatasetError, VerifierError, ValueError) as exc:
            fail(_reason(exc))
        typer.echo(f"wrote {path} and {path.parent / card.weights}" + (f" and {validation_csv}" if validation_csv else ""))
        typer.echo(summary(card))

    @verifier.command("crossval")
    def crossval(data: DataOpt, backbone: BackboneOpt = DEFAULTS.backbone, imgsz: ImgszOpt = DEFAULTS.imgsz,
                 verifier_id: VerifierIdOpt = DEFAULTS.verifier_id,
                 tiles: TilesOpt = DEFAULTS.tiles_text, c: RegularisationOpt = DEFAULTS.c, folds: FoldsOpt = DEFAULTS.folds,
                 synth: SynthOpt = DEFAULTS.synth, seed: SeedOpt = DEFAULTS.seed, uncertain: UncertainOpt = True, heads: HeadsOpt = "",
                 cache: CacheOpt = Path(".cache/verifier"), ocr: OcrOpt = "auto", phone_region: PhoneRegionOpt = "CN", out: JsonOutOpt = None,
                 validation_csv: ValidationCsvOpt = None, verbose: VerboseOpt = False) -> None:
        """Judge every photo as triage does (detector, heads, OCR, rules) with heads trained without its group, and print
        per-type figures beside today's rules, and where the found photos' evidence boxes land against boxes.csv: the whole
        judgement on a group split of the training data (slow: one training per fold and a detector pass over every photo).
        Takes the options of `train`."""
        from rich.console import Console

        from detect.taxonomy import load_taxonomy
        from detect.verifier.heads import VerifierError
        from pipelines.verifier.crossval import cross_validate
        from pipelines.verifier.data import DatasetError, load_datasets
        from pipelines.verifier.localisation import localisation_table

        setup_logging(verbose)
        options = _options(backbone, imgsz, verifier_id, tiles, c, folds, synth, seed, heads)
        _outputs_or_fail(out, validation_csv)
        try:
            dataset = load_datasets(data, uncertain=uncertain)
            _say_notes(dataset.notes)
            with Console(stderr=True).status("cross-validating") as status:
                result = cross_validate(dataset, options, cache, load_taxonomy(), ocr=ocr, phone_region=phone_region,
                                        progress=lambda msg: status.update(msg))
        except (DatasetError, VerifierError, ValueError) as exc:
            fail(_reason(exc))
        for k, fold in enumerate(result.folds, 1):
            typer.echo(f"fold {k}: heads trained on {counted(fold['trained_on'], 'photo')} judged {fold['judged']}: {', '.join(fold['heads']) or 'none'}"
                       + (f" (not shipped: {', '.join(f'{h} F1 {f:.2f}' for h, f in fold['refused'].items())})" if fold["refused"] else ""))
        trained = {h for fold in result.folds for h in fold["heads"]}  # a head every fold refused judges nowhere too
        typer.echo(table(result.figures, {name for name in result.figures if name not in trained}, why="no head trained"))
        typer.echo(localisation_table(result.localisation))
        if validation_csv is not None:
            _write_verdicts(validation_csv, result.verdict_rows(dataset))
        if out is not None:
            _write_json(out, {**_run_record("crossval"), **result.describe()})

    @verifier.command("eval")
    def evaluate(
        data: Annotated[Path, typer.Option("--data", help="Labelled folder (labels.csv, as for train) of photos the heads never saw.")],
        verifier_id: Annotated[str | None, typer.Option("--verifier", help="Verifier id or card (default: the promoted one).")] = None,
        ocr: OcrOpt = "auto",
        phone_region: PhoneRegionOpt = "CN",
        out: JsonOutOpt = None,
        limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N photos (a quick look).")] = None,
        validation_csv: ValidationCsvOpt = None,
        backend: BackendOpt = "onnx",
        device: DeviceOpt = "cpu",
        model: ModelOpt = None,
    ) -> None:
        """Judge a labelled folder as triage does, with and without the verifier, and print per-type figures.

        `--backend torch --device cuda` judges on a GPU (fp16), `--model yolo11n-640-dyn-int8-rawbox` with an INT8
        export: compare its `--validation-csv` with the default run's (`verifier diff`) to see how many verdicts
        that detector changes."""
        from rich.console import Console

        from detect.engine import load_detector
        from detect.verifier.heads import VerifierError
        from pipelines.verifier.data import DatasetError, load_dataset
        from pipelines.verifier.evaluate import evaluate as run_eval

        _outputs_or_fail(out, validation_csv)
        judgement = judgement_or_fail(verifier_id)
        try:
            dataset = load_dataset(data)
            _say_notes(dataset.notes)
            total = len(dataset.photos)
            if limit:
                dataset.photos = dataset.photos[:limit]
            typer.echo(f"{judged_with(judgement)}: judging {len(dataset.photos)}"
                       + (f" of {total}" if len(dataset.photos) < total else "") + f" photos of {data}")
            imgsz = judgement.verifier.heads.card.imgsz if judgement.verifier else DEFAULTS.imgsz  # the size the heads read
            detector = load_detector(model, backend=backend, device=device, features=judgement.needs_features, imgsz=imgsz)
            judgement.check(detector)
            with Console(stderr=True).status("judging") as status:
                figures, rows = run_eval(dataset, detector, judgement, ocr=ocr, phone_region=phone_region, imgsz=imgsz,
                                         progress=lambda i, n: status.update(f"judging {i}/{n}"))
        except (DatasetError, VerifierError, ValueError) as exc:
            fail(_reason(exc))
        unjudged = _without_head(figures, judgement.verifier.heads.card.heads if judgement.verifier else {})
        who = f"no head in {judgement.verifier.heads.card.id}" if judgement.verifier else "verifier none"
        typer.echo(table(figures, unjudged, why=who))
        if validation_csv is not None:
            _write_verdicts(validation_csv, rows)
        if out is not None:
            from detect.evidence.builder import VerifierInfo
            from pipelines.verifier.operating_points import threshold_source

            card = judgement.verifier.heads if judgement.verifier else None
            _write_json(out, {**_run_record("eval"), "data": str(data.resolve()), "photos": len(dataset.photos), "of": total,
                              "verifier": {**VerifierInfo.of(judgement).to_json(), "card": str(card.path.resolve()) if card else None,
                                           "thresholds": threshold_source(card.card) if card else None,
                                           "judged_by_detector_classes": sorted(unjudged)},
                              "detector": detector.model_id, "backend": backend, "device": device, "imgsz": imgsz, "ocr": ocr,
                              "figures": figures})

    @verifier.command("diff")
    def diff(
        before: Annotated[Path, typer.Argument(help="Verdicts CSV (--validation-csv of train, crossval or eval).")],
        after: Annotated[Path, typer.Argument(help="Another run's verdicts CSV of the same photos (e.g. eval --device cuda).")],
    ) -> None:
        """Show which photos' verdicts changed between two runs, per type (e.g. CPU against GPU)."""
        from pipelines.verifier.validation_csv import VerdictsCsvError, read_verdicts, verdict_changes

        try:
            a, b = read_verdicts(before), read_verdicts(after)
        except VerdictsCsvError as exc:
            fail(str(exc))
        if not a.keys() & b.keys():
            fail(f"{before} and {after} share no (type, photo) verdict: not runs over the same photos")

        def shown(verdict: tuple[str, float | None]) -> str:
            return verdict[0] if verdict[1] is None else f"{verdict[0]} ({verdict[1]:.3f})"

        for head, entry in verdict_changes(a, b).items():
            moved = entry["max_probability_change"]
            typer.echo(f"{head}: {len(entry['changed'])} of {counted(entry['compared'], 'verdict')} changed"
                       + (f"; probabilities moved by {moved:.3f} at most" if moved is not None else ""))
            for file, was, now in entry["changed"]:
                typer.echo(f"  {file}: {shown(was)} -> {shown(now)}")
        only = len(a.keys() ^ b.keys())
        if only:
            typer.echo(f"({counted(only, 'verdict')} {'is' if only == 1 else 'are'} in one file only and {'was' if only == 1 else 'were'} not compared)")

    @verifier.command("to-label")
    def to_label(
        results: Annotated[Path, typer.Argument(help="A triage output folder (or its results.jsonl), run with a verifier.")],
        out: Annotated[Path, typer.Option("--out", help="New folder: labels.csv to fill in, the photos, README.md.")],
        count: Annotated[int, typer.Option("--count", min=1, help="Photos to pick.")] = 100,
        types: Annotated[str, typer.Option("--types", help="Comma-separated violation types or label columns (illegal_parking or parking_motor ...; default: every type the verifier judged).")] = "",
        per_group: Annotated[int, typer.Option("--per-group", min=1, help="At most this many photos of one place and day.")] = 2,
        source: Annotated[str, typer.Option("--source", help="Source name of these photos in the figures (default: the run folder's name).")] = "",
        skip: Annotated[list[Path] | None, typer.Option("--skip", help="A folder labelled before (its labels.csv): its photos are not picked again, "
                                                                        "and a photo picked within 100 m of one on its day takes its group. Repeatable.")] = None,
        config: SettingsOpt = None,
    ) -> None:
        """Pick the photos the verifier was least sure about in a triage run, per type, as a folder to label for `train --data`."""
        from collections import Counter

        from pipelines.verifier.to_label import Earlier, ToLabelError, pick, read_labelled, read_run, write_folder

        name = source or (results if results.is_dir() else results.parent).resolve().name
        try:
            records = read_run(results)
            # the settings only for --skip: the zone of its photos' EXIF times without an offset, as triage reads them
            earlier = read_labelled(skip, records, settings_or_fail(config).triage.tz) if skip else Earlier([])
            picks = pick(records, count, [t for t in types.split(",") if t], per_group, earlier.sha256)
            written, passed_over = write_folder(picks, out, name, earlier.photos)
        except ToLabelError as exc:
            fail(str(exc))
        for reason in passed_over:
            typer.secho(f"passed over {reason}", err=True, fg=typer.colors.YELLOW)
        if earlier.unread:
            print_warning(f"{counted(earlier.unread, 'photo')} labelled before (--skip) could not be read for their position: "
                          "a photo picked now near one of them may have another group")
        typer.echo(f"{len(written)} of {counted(len(records), 'judged photo')} to label in {out / 'labels.csv'} (source {name}):")
        picked, found = Counter(p.type for p in written), Counter(p.type for p in written if p.found)
        for t, n in picked.items():
            typer.echo(f"  {t}: {n} ({found[t]} found by the verifier, {n - found[t]} just missed)")
        typer.echo(f"look at {out / 'index.html'}, fill in the label columns (README.md there), then: "
                   f"streetwatch verifier train --data ../shared/datasets/street-scenes --data {out} --id NEW_ID")

    @verifier.command("show")
    def show(verifier_id: Annotated[str, typer.Argument(help="Verifier id or card path (default: the promoted one).")] = "") -> None:
        """Print a verifier's heads, thresholds and validation figures."""
        from detect.verifier import VerifierError, find_card
        from detect.verifier.heads import HeadSet

        try:
            heads = HeadSet.load(find_card(verifier_id or None))
        except VerifierError as exc:
            fail(str(exc))
        typer.echo(summary(heads.card))
        data = heads.card.dataset
        if data:  # what the figures were measured on, and the command that makes them again
            typer.echo(f"  trained on {data.get('root', '?')}: {data.get('photos', '?')} photos in {data.get('groups', '?')} groups "
                       f"(labels sha256 {str(data.get('labels_sha256', '?'))[:12]}), validated by group split")
        if heads.card.command:
            typer.echo(f"  command: {heads.card.command}")

    @verifier.command("promote")
    def promote(verifier_id: Annotated[str, typer.Argument(help="Verifier id (or its card in a verifier folder) to use by default.")]) -> None:
        """Make a verifier the default of detect, triage, watch, demo and serve; says which one it replaces, and how to
        go back to it (the record holds one id, no history)."""
        from detect.verifier import VerifierError, promote_verifier, promoted_id
        from detect.verifier.backbones import is_neck

        try:
            before = promoted_id()
        except VerifierError:  # an unreadable record: promoting replaces it
            before = None
        try:
            path, card = promote_verifier(verifier_id)
        except VerifierError as exc:
            fail(str(exc))
        if before == card.id:
            typer.echo(f"{card.id} is the promoted verifier already ({path}); nothing changed")
        else:
            typer.echo(f"promoted {card.id} ({path})" + (f", in place of {before}; to go back: streetwatch verifier promote {before}"
                                                         if before else ""))
        if is_neck(card.backbone) and card.imgsz != DEFAULTS.imgsz:  # else it steps aside on every default run, with a warning
            typer.echo(f"note: {card.id} reads the detector's neck at input {card.imgsz}: detect, triage and watch judge with it "
                       f"only when run at --imgsz {card.imgsz} (settings `imgsz`; default {DEFAULTS.imgsz})")

    @verifier.command("threshold")
    def threshold(
        source: Annotated[str, typer.Argument(help="Verifier id or card path to start from (default: the promoted one).")] = "",
        sets: Annotated[list[str] | None, typer.Option("--set", help="HEAD=PROBABILITY (e.g. street_stall=0.4) or HEAD=pTARGET, the card's operating point "
                                                              "for that validation precision (e.g. street_stall=p0.7); HEAD is a type or parking. Repeatable.")] = None,
        new_id: Annotated[str, typer.Option("--id", help="Id of the new card, written beside the source card.")] = "",
    ) -> None:
        """Write a card with stricter (or looser) thresholds: the same heads, weights and figures; name it with --verifier or promote it."""
        from detect.verifier import VerifierError, find_card, verifier_dirs
        from pipelines.verifier.operating_points import with_thresholds

        if not sets:
            fail("give at least one --set HEAD=PROBABILITY or HEAD=pTARGET (`streetwatch verifier show` lists the operating points)")
        try:
            path, changes = with_thresholds(find_card(source or None), sets, new_id)
        except VerifierError as exc:
            fail(str(exc))
        try:
            by_id = find_card(path.stem).resolve() == path.resolve()
        except VerifierError:
            by_id = False
        if by_id:
            typer.echo(f"wrote {path}; use it with --verifier {path.stem} or `streetwatch verifier promote {path.stem}`")
        else:  # beside a card outside the verifier folders: its id names nothing
            folders = ", ".join(str(d) for d in verifier_dirs())
            typer.echo(f"wrote {path}; use it with --verifier {path} (it is outside the verifier folders, {folders}: "
                       "move it there with the heads file it names to use it by id or promote it)")
        for change in changes:  # what the new thresholds find, before anyone promotes them
            typer.echo(f"  {change}")


def _say_notes(notes: list[str]) -> None:
    """What loading the data left out, and why (rows are never dropped silently)."""
    for note in notes:
        typer.secho(f"note: {note}", err=True, fg=typer.colors.YELLOW)


def _outputs_or_fail(out: Path | None, validation_csv: Path | None) -> None:
    """Refuse --out or --validation-csv naming a folder, or a path under a file, before the (slow) judging: found
    after it, the figures of minutes to hours of detector passes were lost with one error line."""
    writable_or_fail(out, "--out", example="figures.json")
    writable_or_fail(validation_csv, "--validation-csv", example="verdicts.csv")


def _run_record(command: str) -> dict:
    """The command line and date a JSON record of `verifier crossval` or `eval` starts with, so its figures say how
    to make them again."""
    import shlex
    import sys
    from datetime import UTC, datetime

    return {"command": f"streetwatch verifier {command} " + " ".join(shlex.quote(a) for a in sys.argv[3:]),
            "date": datetime.now(UTC).isoformat(timespec="seconds")}


def _write_json(path: Path, record) -> None:
    """`record` as JSON at `path`, its folder made as --validation-csv's is."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")


def _write_verdicts(path: Path, rows: list[dict]) -> None:
    from pipelines.verifier.validation_csv import write_validation_csv

    typer.echo(f"wrote {counted(write_validation_csv(path, rows), 'verdict')} to {path}")


def _without_head(names, heads) -> set[str]:
    """The label heads among `names` (`parking` for both parking types) none of whose types `heads`, a card's, judges:
    their types stay with the detector's classes."""
    from pipelines.verifier.run import RULE_TYPES

    return {name for name in names if not any(t in heads for t in RULE_TYPES.get(name, [name]))}


def summary(card) -> str:
    """The card's backbone, validation figures against today's rules, and thresholds."""
    from detect.verifier.backbones import is_neck

    size = f" at input {card.imgsz}" if is_neck(card.backbone) else ""
    unshipped = _without_head(card.metrics, card.heads)
    lines = [f"verifier {card.id}: backbone {card.backbone}{size}, tiles {card.tiles[0]}x{card.tiles[1]}", table(card.metrics, unshipped)]
    for type_id, spec in card.heads.items():
        how = f" (OCR gate {spec.ocr_gate})" if spec.ocr_gate else ""
        if spec.region == "objects":
            how += f" (each {', '.join(spec.classes)}" + (" plus the scene's best tile)" if spec.scene_intercept is not None else ")")
        elif spec.object_intercept is not None:
            how += f" (best tile plus the best of its {', '.join(spec.classes)})"
        lines.append(f"  threshold {type_id}: {spec.threshold}{how}")
    points = [(name, p) for name, m in card.metrics.items() if name not in unshipped for p in m.get("operating_points") or []]
    if points:
        lines.append("  operating points (validation; `streetwatch verifier threshold --set HEAD=pTARGET`):")
    for name, p in points:  # each point holds the sources with positives, as the figures above
        found = "; ".join(f"{src} P {f['P']:.2f} R {f['R']:.2f} ({f['tp']} found, {f['fp']} false)" for src, f in p["verifier"].items())
        th = "none reaches it" if p["threshold"] is None else f"threshold {p['threshold']}"
        lines.append(f"    {name} p{p['precision_target']}: {th}: {found}")
    return "\n".join(lines)


def _no_positive_line(m: dict) -> str:
    """What a head labelled only with 0s can say (its type was left as a bare name, as if nothing had been judged):
    how many photos, and how many of them the verifier and today's rules found the type on anyway."""
    f = m["verifier"].get("all") or next(iter(m["verifier"].values()))
    rules = m["rules_today"].get("all", {})
    return (f"    no photo labelled 1 among {f['photos']}: found on {f['fp']} (false findings)"
            f"   rules today: found on {rules.get('fp', 0)}")


def table(metrics: dict, unshipped: set[str] = frozenset(), why: str = "not shipped") -> str:
    """Per head and source: verifier P/R/F1 (95 % interval of F1) and AP, beside today's detector-only rules.
    `unshipped`: heads a card measured but does not judge with (their types stay with the detector's classes), or
    that `eval`'s verifier has none of; `why` says which, so their figures are not read as a head's."""
    lines = []
    for name, m in metrics.items():
        lines.append(f"  {name}" + (f" ({why}: judged by detector classes)" if name in unshipped else ""))
        if m["verifier"] and not any(f["positives"] for f in m["verifier"].values()):
            lines.append(_no_positive_line(m))
        for src, f in m["verifier"].items():
            if not f["positives"]:
                continue
            ci = f.get("ci95", {}).get("F1")
            rules = m["rules_today"].get(src, {})
            lines.append(f"    {src:<16} P {f['P']:.2f} R {f['R']:.2f} F1 {f['F1']:.2f}"
                         + (f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci else "") + f" AP {f['AP'] or 0:.2f}"
                         + f"  ({f['positives']} pos / {f['photos']})   rules today: P {rules.get('P', 0):.2f} R {rules.get('R', 0):.2f} F1 {rules.get('F1', 0):.2f}")
    return "\n".join(lines)
