"""`streetwatch models`: list registered models and export them to ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streetwatch.commands.common import fail, setup_logging

models_app = typer.Typer(help="Model registry: list and export models.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


@models_app.command("list")
def list_models() -> None:
    """List model cards (models/cards, models/registry, $STREETWATCH_MODELS) and whether files exist."""
    from rich.console import Console
    from rich.table import Table

    from detect.registry import find_file, list_cards, model_dirs

    table = Table("id", "format", "imgsz", "from", "file", "source")
    for card in list_cards():
        found = find_file(card)
        table.add_row(card.id, card.format + (" int8" if card.int8 else " fp16" if card.half else ""),
                      str(card.imgsz), card.exported_from or "-", str(found) if found else "[red]missing[/red]",
                      card.source)
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
    calib_max: Annotated[int, typer.Option("--calib-max", min=1, help="Calibration images used at most.")] = 64,
) -> None:
    """Export a model to ONNX and register it; --int8 also reports accuracy change against fp32."""
    setup_logging()
    from detect.engine import ModelNotFoundError
    from detect.export import export_onnx

    if fmt != "onnx":
        fail(f"unknown format '{fmt}' (supported: onnx)")
    try:
        path, card = export_onnx(model, imgsz=imgsz, dynamic=dynamic, half=half, int8=int8, calib=calib,
                                 calib_max=calib_max)
    except (ModelNotFoundError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"exported {card.id} -> {path} (sha256 {card.sha256[path.name][:16]}…)")
    if "int8_vs_fp32" in card.metrics:
        m = card.metrics["int8_vs_fp32"]
        typer.echo(
            f"INT8 vs fp32 on {m['images']} calibration images: recall {m['recall']:.3f}, precision "
            f"{m['precision']:.3f} at IoU 0.5 ({m['matched']}/{m['ref_boxes']} fp32 boxes matched, "
            f"max confidence change {m['max_conf_diff']:.3f})"
        )
