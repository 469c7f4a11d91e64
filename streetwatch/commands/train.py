"""`streetwatch train`, `eval` and `retrain`: fine-tuning, evaluation that counts cases, the whole loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from streetwatch.commands.common import BackendOpt, DeviceOpt, SettingsOpt, fail, require_case_store, settings_or_fail, setup_logging
from streetwatch.commands.data import open_dataset

DataOpt = Annotated[Path, typer.Option("--data", help="Dataset version folder (see `streetwatch data`).")]
EpochsOpt = Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")]
HoursOpt = Annotated[float | None, typer.Option(
    "--hours", min=0.001, help="Wall-clock budget; Ultralytics fits the epochs to it (overrides --epochs).")]
TrainImgszOpt = Annotated[int, typer.Option("--imgsz", min=32, help="Training input size (multiple of 32).")]
BatchOpt = Annotated[int, typer.Option("--batch", min=1, help="Images per training batch.")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=0, help="Data-loader worker processes (0 on small CPUs).")]
AllowOpt = Annotated[bool, typer.Option("--allow-check-failures", help="Train even when `data check` reports errors.")]
NameOpt = Annotated[str, typer.Option("--name", help="Id of the new model in the registry (letters, digits, . _ -); "
                                                      "not one a registered or promoted model already has.")]
BaseOpt = Annotated[str, typer.Option("--base", help="Checkpoint to fine-tune: model id or .pt file.")]


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(evaluate)
    app.command("retrain")(retrain)


def train(
    data: DataOpt,
    name: NameOpt,
    base: BaseOpt = "yolo11n",
    epochs: EpochsOpt = 50,
    imgsz: TrainImgszOpt = 640,
    device: DeviceOpt = "cpu",
    batch: BatchOpt = 16,
    workers: WorkersOpt = 0,
    patience: Annotated[int, typer.Option("--patience", min=1, help="Stop after this many epochs without improvement.")] = 50,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    hours: HoursOpt = None,
    allow_check_failures: AllowOpt = False,
) -> None:
    """Fine-tune a checkpoint with Ultralytics and register the best weights with a model card."""
    setup_logging()
    from detect.registry import ModelNotFoundError
    from pipelines.retrain.dataset import DatasetError
    from pipelines.retrain.train import train_model

    try:
        result = train_model(open_dataset(data), base, model_id=name, epochs=epochs, imgsz=imgsz, device=device,
                             batch=batch, workers=workers, patience=patience, seed=seed, hours=hours,
                             allow_check_failures=allow_check_failures)
    except (DatasetError, ModelNotFoundError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"trained {result.model_id}: weights {result.weights}, run folder {result.run_dir}")
    typer.echo("final validation: " + ", ".join(f"{k}={v:.3f}" for k, v in result.metrics.items()))


def evaluate(
    model: Annotated[str, typer.Option("--model", help="Model id or weights file to evaluate.")],
    data: DataOpt,
    compare: Annotated[str | None, typer.Option("--compare", help="A second model to evaluate side by side.")] = None,
    backend: BackendOpt = "onnx",
    device: DeviceOpt = "cpu",
    imgsz: Annotated[int | None, typer.Option("--imgsz", min=32, help="Input size (default: each model's card).")] = None,
    split: Annotated[str | None, typer.Option("--split", help="train, val or all (default: val when split, else all).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder under which the run's own folder, eval-<model>-<dataset digest>/, holds eval.json and plots (default: models/runs/).")] = None,
    record: Annotated[bool, typer.Option("--record/--no-record", help="Write the metrics into the registry card of each model trained here (--compare's too: a card with its training data), replacing its metrics.eval and thresholds; other cards (shipped models) are never written.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Box metrics per class and case precision/recall per violation type (after the photo rules)."""
    setup_logging()
    from detect.registry import ModelNotFoundError, runs_dir
    from pipelines.retrain.evaluate import evaluate_model

    ds = open_dataset(data)
    which = {None: "default", "all": None}.get(split, split)
    if which not in ("default", None, "train", "val"):
        fail(f"--split {split}: choose train, val or all")
    results = []
    try:
        for m in [model] + ([compare] if compare else []):
            folder = (out or runs_dir()) / f"eval-{Path(m).stem}-{ds.digest[:8]}"
            results.append(evaluate_model(m, ds, out_dir=folder, backend=backend, device=device, imgsz=imgsz, split=which))
    except (ModelNotFoundError, ValueError) as exc:
        fail(str(exc))
    if record:
        _record(results)
    if as_json:
        typer.echo(json.dumps([r.as_dict(per_image=False) for r in results], indent=1, default=str))
        return
    for r in results:
        _print_result(r)
    if compare:
        from rich.console import Console
        from rich.table import Table
        from pipelines.retrain.evaluate import comparison_rows

        table = Table("metric", results[0].model, results[1].model, f"{compare} − {model}", title=f"{model} vs {compare} on {ds.name}")
        for row in comparison_rows(*results):
            table.add_row(*row)
        Console().print(table)


def _record(results) -> None:
    """Store metrics in cards of models this project trained (shipped cards stay untouched)."""
    from detect.registry import get_card
    from pipelines.retrain.train import update_card

    for r in results:
        try:
            card = get_card(r.model)
        except FileNotFoundError:
            continue
        if card.dataset:
            update_card(r.model, metrics=r.card_metrics(), thresholds=r.cases.thresholds)


def _print_result(r) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    c = r.cases
    if "per_class" in r.box:
        table = Table("class", "images", "boxes", "P", "R", "mAP50", "mAP50-95", title=f"{r.model}: box metrics")
        for name, m in r.box["per_class"].items():
            table.add_row(name, str(m["images"]), str(m["instances"]), *(f"{m[k]:.3f}" for k in ("precision", "recall", "mAP50", "mAP50-95")))
        o = r.box["overall"]
        table.add_row("all", "", "", *(f"{o[k]:.3f}" for k in ("precision", "recall", "mAP50", "mAP50-95")))
        console.print(table)
    else:
        console.print(f"{r.model}: box metrics skipped: {r.box.get('skipped')}")
    table = Table("violation type", "cases", "predicted", "TP", "FP", "FN", "precision", "recall",
                  title=f"{r.model}: case metrics on {c.images} images ({c.dataset}, split {c.split or 'all'})")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for t, m in c.per_type.items():
        table.add_row(t, str(m["positives"]), str(m["predicted"]), str(m["tp"]), str(m["fp"]), str(m["fn"]),
                      fmt(m["precision"]), fmt(m["recall"]))
    console.print(table)
    if not c.evaluable:
        console.print("no violation type is evaluable: the dataset labels none of the taxonomy's evidence classes")
    labels = list(c.confusion)
    conf = Table("truth \\ predicted", *labels, title="case confusion (images)")
    for g in labels:
        conf.add_row(g, *(str(c.confusion[g][p]) for p in labels))
    console.print(conf)
    console.print(f"details: {r.out_dir / 'eval.json'}")


def retrain(
    name: NameOpt,
    cases: Annotated[Path | None, typer.Option("--cases", help="Review export of reviewed cases (JSON Lines).")] = None,
    from_store: Annotated[bool, typer.Option("--from-store", help="Export the reviewed cases from the case store (--config) first (instead of --cases).")] = False,
    data: Annotated[list[Path] | None, typer.Option("--data", help="Labelled dataset version(s) to train on as well. Repeatable.")] = None,
    mapping: Annotated[list[str] | None, typer.Option("--map", help="SOURCE=TARGET class mapping for the merge. Repeatable.")] = None,
    drop_unmapped: Annotated[bool, typer.Option("--drop-unmapped", help="Drop classes that match no project class.")] = False,
    base: BaseOpt = "yolo11n",
    epochs: EpochsOpt = 30,
    hours: HoursOpt = None,
    imgsz: TrainImgszOpt = 640,
    device: DeviceOpt = "cpu",
    batch: BatchOpt = 16,
    workers: WorkersOpt = 0,
    val: Annotated[float, typer.Option("--val", min=0.01, max=0.99, help="Validation share of the split.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Random seed for split and training.")] = 0,
    eval_data: Annotated[Path | None, typer.Option("--eval-data", help="Fixed evaluation set for the gate (default: the new val split).")] = None,
    backend: BackendOpt = "onnx",
    int8: Annotated[bool, typer.Option("--int8", help="Also quantise the export to INT8 with the dataset's pictures.")] = False,
    promote: Annotated[bool, typer.Option("--promote", help="Promote the model when it passes the gate.")] = False,
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, max=1.0, help="Allowed drop per type and metric.")] = 0.02,
    work: Annotated[Path | None, typer.Option("--work", help="Folder for the dataset versions (default: datasets/versions/NAME in the current folder).")] = None,
    allow_check_failures: AllowOpt = False,
    config: SettingsOpt = None,
) -> None:
    """Whole loop for a scheduled job: cases -> dataset -> train -> export -> eval -> register -> gate.

    Exit 0 when done (promoted, or not asked to promote), 3 when --promote was asked and the gate refused.
    """
    setup_logging()
    from detect.registry import ModelNotFoundError
    from pipelines.evidence_store import StorageError
    from pipelines.retrain.classes import load_classes
    from pipelines.retrain.dataset import DatasetError
    from pipelines.retrain.loop import retrain as run_loop
    from pipelines.retrain.merge import parse_mapping

    if from_store and cases is not None:  # the loop would read the file and never open the store
        fail(f"--from-store and --cases {cases} both name the reviewed cases: give one (export the store with "
             "`streetwatch data export-reviews`, or pass the file)")
    work = work or Path.cwd() / "datasets" / "versions" / name  # never beside a pip install's code in site-packages
    settings = settings_or_fail(config) if from_store else None
    if settings is not None:
        require_case_store(settings.cases.url)  # an empty store would export no reviews and train without them
    try:
        result = run_loop(
            name=name, base_model=base, work_dir=work, cases=cases, settings=settings, datasets=[open_dataset(d) for d in data or []],
            mapping=parse_mapping(mapping or [], load_classes()), drop_unmapped=drop_unmapped, val_fraction=val, seed=seed,
            epochs=epochs, hours=hours, imgsz=imgsz, batch=batch, device=device, workers=workers,
            eval_data=open_dataset(eval_data) if eval_data else None, backend=backend, int8=int8, do_promote=promote,
            tolerance=tolerance, allow_check_failures=allow_check_failures,
        )
    except (DatasetError, ModelNotFoundError, ValueError, StorageError) as exc:
        fail(str(exc))
    except FileExistsError as exc:  # the store's export of an earlier run (the nightly job run again): never overwritten
        fail(f"{exc}; --work {work} holds an earlier run: give another --work (or --name)")
    d = result.decision
    typer.echo(f"model {name} registered; gate vs {d.current}: {'passed' if d.passed else 'refused'}"
               + "".join(f"\n  {r}" for r in d.reasons))
    typer.echo(("promoted " + name) if d.promoted else "not promoted")
    typer.echo(f"summary: {work / 'retrain.json'}")
    if promote and not d.promoted:
        raise typer.Exit(3)
