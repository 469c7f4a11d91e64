"""`streetwatch data`: dataset versions for retraining (import, check, stats, split, merge, from-cases)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipelines.wording import counted  # no import of its own
from streetwatch.commands.common import SettingsOpt, existing_store_or_fail, fail, setup_logging, settings_or_fail

data_app = typer.Typer(help="Training datasets: import, check, stats, split, merge, export-reviews, from-cases "
                            "(docs/retraining.md).",
                       no_args_is_help=True)

OutOpt = Annotated[Path, typer.Option("--out", help="Folder of the new dataset version (must not exist or be empty).")]
NameOpt = Annotated[str | None, typer.Option("--name", help="Dataset name recorded in the manifest (default: from the input).")]
GroupOpt = Annotated[str | None, typer.Option(
    "--group-regex", help="Regex on file names whose first group is the location/camera group (e.g. 'img_(\\d*)\\d\\.').")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


def open_dataset(path: Path):
    """A dataset version, or a clean error naming the folder."""
    from pipelines.retrain.dataset import Dataset, DatasetError

    try:
        return Dataset(path)
    except DatasetError as exc:
        fail(str(exc))


def print_findings(findings, limit: int = 200) -> None:
    for f in findings[:limit]:
        typer.secho(str(f), err=True, fg=typer.colors.RED if f.severity == "error" else typer.colors.YELLOW)
    if len(findings) > limit:
        typer.echo(f"… and {len(findings) - limit} more", err=True)


def per_class(counts: dict) -> str:
    """`stall 12/30, garbage 4/9`: images and boxes per class of a version's (or a split's) counts."""
    return ", ".join(f"{k} {x['images']}/{x['boxes']}" for k, x in counts["per_class"].items())


def _counts(c: dict) -> str:
    """`120 images, 300 boxes, 1 negative, 40 groups`: a version's totals, each noun agreeing with its count."""
    return (f"{counted(c['images'], 'image')}, {counted(c['boxes'], 'box', 'boxes')}, {counted(c['negatives'], 'negative')}, "
            f"{counted(c['groups'], 'group')}")


def print_version(ds, verb: str) -> None:
    c = ds.manifest.counts
    typer.echo(f"{verb} {ds.root}: {_counts(c)}, classes {', '.join(ds.classes)}; digest {ds.digest[:16]}")
    typer.echo(f"  images/boxes per class: {per_class(c)}")
    for line in ds.manifest.left_out:
        typer.echo(f"left out: {line}")


@data_app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(help="YOLO folder (images/ + labels/ + data.yaml or classes.txt), a COCO JSON file, "
                                                "or a street-scenes folder (labels.csv + boxes.csv + the photos).")],
    out: OutOpt,
    fmt: Annotated[str, typer.Option("--format", help="yolo, coco or street-scenes (default: coco for a .json file, else yolo).")] = "",
    images: Annotated[Path | None, typer.Option("--images", help="COCO: folder the file_names are relative to.")] = None,
    classes: Annotated[Path | None, typer.Option("--classes", help="YOLO: class names file (data.yaml, classes.txt, obj.names).")] = None,
    types: Annotated[str | None, typer.Option(
        "--types", help="street-scenes: label columns to import, comma-separated (default all four: street_stall -> stall, "
                        "shopfront_spillover -> goods_display, flyposting -> small_ad, exposed_garbage -> garbage). Parking "
                        "imports no class: a parked car is a COCO vehicle; its obstruction is its place (rules, verifier).")] = None,
    uncertain: Annotated[bool, typer.Option(
        "--uncertain", help="street-scenes: import rows marked uncertain=1 by their labels (default: left out and counted).")] = False,
    name: NameOpt = None,
    group_regex: GroupOpt = None,
) -> None:
    """Import labelled pictures as a new dataset version (manifest with sha256 of every file).

    street-scenes: a photo positive for an imported type goes in with its boxes when it has boxes for every imported type
    it is positive for; a photo negative for all of them goes in as background (empty label); the rest (positive without
    boxes, uncertain=1) is left out and counted (docs/retraining.md). The `group` column is each picture's group."""
    setup_logging()
    from pipelines.retrain.check import check_dataset
    from pipelines.retrain.dataset import DatasetError
    from pipelines.retrain.importers import import_coco, import_yolo

    fmt = fmt or ("coco" if source.suffix.lower() == ".json" else "yolo")
    if fmt != "street-scenes" and (types or uncertain):
        fail("--types and --uncertain are for --format street-scenes")
    findings = []
    try:
        if fmt == "yolo":
            ds, findings = import_yolo(source, out, name=name, group_regex=group_regex, classes_file=classes)
        elif fmt == "coco":
            ds, findings = import_coco(source, out, images_dir=images, name=name, group_regex=group_regex)
        elif fmt == "street-scenes":
            from pipelines.verifier.to_detector import import_street_scenes, parse_types

            ds = import_street_scenes(source, out, types=parse_types(types), uncertain=uncertain, name=name, group_regex=group_regex)
        else:
            fail(f"--format {fmt}: choose yolo, coco or street-scenes")
    except DatasetError as exc:
        fail(str(exc))
    print_findings(findings)
    print_version(ds, "imported")
    report = check_dataset(ds)
    typer.echo(report.summary() + ("" if report.ok else f" (details: streetwatch data check {out})"))


@data_app.command("check")
def check(
    dataset: Annotated[Path, typer.Argument(help="Dataset version folder.")],
    as_json: JsonOpt = False,
) -> None:
    """Report every problem per file with its reason; exit 1 when there are errors."""
    from pipelines.retrain.check import check_dataset

    report = check_dataset(open_dataset(dataset))
    if as_json:
        typer.echo(json.dumps({"dataset": report.dataset, "ok": report.ok, "images": report.images,
                               "findings": [f.__dict__ for f in report.findings]}, indent=1))
    else:
        print_findings(report.findings, limit=10_000)
        typer.echo(report.summary())
    raise typer.Exit(0 if report.ok else 1)


@data_app.command("stats")
def stats(
    dataset: Annotated[Path, typer.Argument(help="Dataset version folder.")],
    out: Annotated[Path | None, typer.Option("--out", help="Folder for contact sheets and stats.json (default: DATASET/stats).")] = None,
    per_class: Annotated[int, typer.Option("--per-class", min=1, help="Crops per contact sheet.")] = 24,
    as_json: JsonOpt = False,
) -> None:
    """Images and boxes per class and split, box sizes, and a contact sheet of crops per class."""
    from rich.console import Console
    from rich.table import Table

    from pipelines.retrain.stats import contact_sheets, dataset_stats

    ds = open_dataset(dataset)
    out = out or ds.root / "stats"
    s = dataset_stats(ds)
    s["contact_sheets"] = {c: str(p) for c, p in contact_sheets(ds, out, per_class=per_class).items()}
    (out / "stats.json").write_text(json.dumps(s, indent=1))
    if as_json:
        typer.echo(json.dumps(s, indent=1))
        return
    c = s["counts"]
    splits = c.get("splits", {})
    table = Table("class", "images", "boxes", *[f"{sp} boxes" for sp in splits], *s["box_size_bins"],
                  title=f"{s['name']} ({s['digest'][:12]}): {_counts(c)}")
    for name in s["classes"]:
        pc = c["per_class"][name]
        table.add_row(name, str(pc["images"]), str(pc["boxes"]), *[str(v["per_class"][name]["boxes"]) for v in splits.values()],
                      *map(str, s["box_size_histogram"][name]))
    Console().print(table)
    typer.echo("box sizes: sqrt(box area / image area); contact sheets and stats.json in " + str(out))


@data_app.command("split")
def split(
    dataset: Annotated[Path, typer.Argument(help="Dataset version folder.")],
    out: OutOpt,
    val: Annotated[float, typer.Option("--val", min=0.01, max=0.99, help="Share of images for validation.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same split).")] = 0,
    group_regex: GroupOpt = None,
    name: NameOpt = None,
) -> None:
    """New version with a train/val split stratified by class and grouped by location/camera."""
    from pipelines.retrain.dataset import DatasetError
    from pipelines.retrain.split import split_dataset

    try:
        ds = split_dataset(open_dataset(dataset), out, val_fraction=val, seed=seed, group_regex=group_regex, name=name)
    except DatasetError as exc:
        fail(str(exc))
    print_version(ds, "split")
    for sp, v in ds.manifest.counts["splits"].items():
        typer.echo(f"  {sp}: {counted(v['images'], 'image')} in {counted(v['groups'], 'group')}; images/boxes per class: {per_class(v)}")


@data_app.command("merge")
def merge(
    datasets: Annotated[list[Path], typer.Argument(help="Dataset version folders to merge.")],
    out: OutOpt,
    mapping: Annotated[list[str] | None, typer.Option("--map", help="SOURCE=TARGET class mapping (TARGET a project class, - drops). Repeatable.")] = None,
    drop_unmapped: Annotated[bool, typer.Option("--drop-unmapped", help="Drop boxes of classes that match no project class.")] = False,
    name: Annotated[str, typer.Option("--name", help="Name of the merged dataset.")] = "merged",
) -> None:
    """Merge versions onto the project classes (./datasets/classes.yaml, else the project's), names and aliases matched."""
    from pipelines.retrain.classes import load_classes
    from pipelines.retrain.dataset import DatasetError
    from pipelines.retrain.merge import merge_datasets, parse_mapping

    try:
        ds = merge_datasets([open_dataset(d) for d in datasets], out, mapping=parse_mapping(mapping or [], load_classes()),
                            drop_unmapped=drop_unmapped, name=name)
    except DatasetError as exc:
        fail(str(exc))
    print_version(ds, "merged")


@data_app.command("from-cases")
def from_cases(
    export: Annotated[Path, typer.Argument(help="Review export (JSON Lines, one reviewed case per line; see docs/retraining.md).")],
    out: OutOpt,
    name: Annotated[str, typer.Option("--name", help="Dataset name.")] = "cases",
    verifier: Annotated[bool, typer.Option("--verifier", help="Write a verifier dataset (labels.csv + boxes.csv, docs/verifier.md) "
                                                              "for `streetwatch verifier train --data` instead of a detector dataset.")] = False,
) -> None:
    """Confirmed cases -> positives with their boxes; rejected cases -> hard negatives with the reason."""
    from pipelines.retrain.dataset import DatasetError
    from pipelines.retrain.from_cases import dataset_from_cases, skipped_summary

    if verifier:
        from pipelines.verifier.from_cases import verifier_dataset_from_cases

        try:
            labels, n, findings = verifier_dataset_from_cases(export, out)
        except (FileNotFoundError, FileExistsError, DatasetError) as exc:
            fail(str(exc))
        print_findings(findings)
        typer.echo(f"wrote {counted(n, 'labelled picture')} to {labels}; next: streetwatch verifier train --data <street-scenes> --data {out} --id NEW_ID")
        return

    try:
        ds, findings = dataset_from_cases(export, out, name=name)
    except DatasetError as exc:
        fail(str(exc))
    print_findings(findings)
    print_version(ds, "built")
    if findings:
        typer.echo(skipped_summary(findings))


@data_app.command("export-reviews")
def export_reviews_cmd(
    out: Annotated[Path, typer.Option("--out", help="New folder for review.jsonl and the pictures.")],
    since: Annotated[str | None, typer.Option("--since", help="Only cases reviewed at or after this ISO time (UTC if no zone).")] = None,
    config: SettingsOpt = None,
) -> None:
    """Reviewed cases from the case store (with their evidence pictures) -> review.jsonl for from-cases."""
    from datetime import datetime, timezone

    from pipelines.evidence_store import StorageError, open_evidence_store
    from pipelines.retrain.dataset import DatasetError
    from pipelines.retrain.reviews import Skip, export_reviews, skips_summary

    settings = settings_or_fail(config)
    try:
        when = datetime.fromisoformat(since) if since else None
    except ValueError:
        fail(f"--since {since!r}: not an ISO date/time")
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        path, n, findings = export_reviews(existing_store_or_fail(settings.cases.url), open_evidence_store(settings.evidence_store), out,
                                           since=when)
    except (FileExistsError, StorageError, DatasetError) as exc:
        fail(str(exc))
    print_findings([f for f in findings if not isinstance(f, Skip)])  # faults, case by case
    if skipped := skips_summary(findings):
        typer.echo(skipped)
    typer.echo(f"exported {counted(n, 'reviewed case')} to {path}; next: streetwatch data from-cases {path} --out DIR")
