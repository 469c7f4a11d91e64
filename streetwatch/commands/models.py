"""`streetwatch models`: list registered models, export them to ONNX, promote one through the gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.wording import counted  # no import of its own
from streetwatch.commands.common import fail, setup_logging

models_app = typer.Typer(help="Model registry: list, export and promote models.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


@models_app.command("list")
def list_models() -> None:
    """List model cards (models/cards, models/registry, $STREETWATCH_MODELS) and whether files exist; a card that
    cannot be used is listed as broken, with its file and the reason."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from detect.registry import broken_cards, find_file, list_cards, model_dirs

    table = Table("id", "format", "imgsz", "from", "file", "source")
    for card in list_cards():
        found = find_file(card)
        table.add_row(card.id, card.format + (" int8" if card.int8 else " fp16" if card.half else ""),
                      str(card.imgsz), card.exported_from or "-", str(found) if found else "[red]missing[/red]",
                      card.source)
    for broken in broken_cards():  # one hand-edited card: its file, field and reason, the other models still listed
        table.add_row(escape(broken.id), "[red]broken card[/red]", "-", "-", escape(str(broken.path)),
                      "[red]" + escape(broken.reason) + "[/red]")
    Console().print(table)
    typer.echo("searched: " + ", ".join(str(d) for d in model_dirs()))


@models_app.command("export")
def export(
    model: Annotated[str, typer.Option("--model", help="Model id or .pt file to export.")] = "yolo11n",
    fmt: Annotated[str, typer.Option("--format", help="Export format (onnx).")] = "onnx",
    imgsz: Annotated[int, typer.Option("--imgsz", min=32, help="Input size (multiple of 32).")] = 640,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic batch and image size.")] = False,
    half: Annotated[bool, typer.Option("--half", help="FP16 weights (needs a CUDA GPU to export).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Static QDQ INT8 with calibration images.")] = False,
    calib: Annotated[Path | None, typer.Option("--calib", help="Folder of real calibration images (for --int8).")] = None,
    calib_max: Annotated[int, typer.Option("--calib-max", min=1, help="Calibration images used at most, spread evenly over the folder (every k-th file in sorted order).")] = 64,
) -> None:
    """Export a model to ONNX and register it; --int8 also reports accuracy change against fp32.

    Writes the standard export <id>.onnx (runs in Ultralytics and any ONNX tool) and, for YOLOv8/11,
    the engine variant <id>-rawbox.onnx (box decoding cut off: faster in streetwatch's engine, which
    prefers it; other tools refuse it by its metadata).
    """
    setup_logging()
    from detect.engine import ModelNotFoundError
    from detect.export import export_onnx

    if fmt != "onnx":
        fail(f"unknown format '{fmt}' (supported: onnx)")
    try:
        exported = export_onnx(model, imgsz=imgsz, dynamic=dynamic, half=half, int8=int8, calib=calib,
                               calib_max=calib_max)
    except (ModelNotFoundError, ValueError) as exc:
        fail(str(exc))
    path, card = exported.path, exported.card
    typer.echo(f"exported {card.id} -> {path} (sha256 {card.sha256[path.name][:16]}…): standard graph, runs in "
               "Ultralytics and other ONNX tools")
    if exported.engine_path is not None and exported.engine_card is not None:
        typer.echo(f"exported {exported.engine_card.id} -> {exported.engine_path}: raw-box head, streetwatch's engine "
                   "only (used by default: box decoding done for the few boxes that pass the threshold)")
    if "int8_vs_fp32" in card.metrics:
        m = card.metrics["int8_vs_fp32"]
        typer.echo(
            f"INT8 vs fp32 on {counted(m['images'], 'calibration image')}: recall {m['recall']:.3f}, precision "
            f"{m['precision']:.3f} at IoU 0.5 ({m['matched']}/{m['ref_boxes']} fp32 boxes matched, "
            f"max confidence change {m['max_conf_diff']:.3f})"
        )


@models_app.command("promote")
def promote(
    model: Annotated[str, typer.Argument(help="Registered model id to promote.")],
    data: Annotated[Path, typer.Option("--data", help="Evaluation dataset version both models are compared on.")],
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, max=1.0, help="Allowed drop of case precision/recall per violation type.")] = 0.02,
    force: Annotated[bool, typer.Option("--force", help="Promote even if the gate refuses (needs --reason; recorded).")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why the gate is overridden.")] = "",
    backend: Annotated[str, typer.Option("--backend", help="Backend both models are evaluated with.")] = "onnx",
    device: Annotated[str, typer.Option("--device", help="cpu or cuda[:N].")] = "cpu",
    imgsz: Annotated[int | None, typer.Option("--imgsz", min=32, help="Input size for both (default: each model's card).")] = None,
) -> None:
    """Make MODEL the one pipelines load, if it is not worse than the current one per violation type.

    Exit 0 when promoted (or MODEL is the promoted one already: nothing to do), 3 when the gate refuses (the decision
    is recorded either way).
    """
    setup_logging()
    from detect.engine import ModelNotFoundError
    from pipelines.retrain.promote import promote as run_gate
    from streetwatch.commands.data import open_dataset

    try:
        d = run_gate(model, open_dataset(data), tolerance=tolerance, force=force, reason=reason, backend=backend,
                     device=device, imgsz=imgsz)
    except (ModelNotFoundError, ValueError) as exc:
        fail(str(exc))
    if d.current == model:  # a repeated promotion (a nightly script's second run) is not a refusal to alert on
        typer.echo(f"{model} is the promoted model already; nothing changed")
        return
    for t, row in d.per_type.items():
        cand, cur = row.get("candidate", {}), row.get("current", {})
        figures = "" if not cand else (f": precision {_f(cand.get('precision'))} vs {_f(cur.get('precision'))}, "
                                       f"recall {_f(cand.get('recall'))} vs {_f(cur.get('recall'))}")
        typer.echo(f"  {t}: {row['verdict']}{figures}")
    verdict = "passed" if d.passed else "refused" + "".join(f"\n  {r}" for r in d.reasons)
    typer.echo(f"gate {model} vs {d.current} (tolerance {tolerance}): {verdict}")
    if d.promoted:
        typer.echo(f"promoted {model}" + (f" (FORCED: {d.reason})" if d.forced else ""))
        # going back is a promotion like any other: the gate judges it, and a model without the new one's classes
        # needs --force --reason (recorded), which nobody looking for the way back would guess
        typer.echo(f"  in place of {d.current}; to go back: streetwatch models promote {d.current} --data {data}"
                   " (--force --reason \"...\" where its gate refuses it)")
    else:
        raise typer.Exit(3)


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"
