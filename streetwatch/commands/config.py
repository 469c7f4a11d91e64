"""`streetwatch config schema`: the JSON schema of every configuration file kind, for editors and the UI.

The schemas come from the same pydantic models that validate the files at load, so they cannot
drift from what streetwatch accepts. Point an editor at them (for example VS Code's YAML
extension: `# yaml-language-server: $schema=cameras.schema.json`) to get completion and checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from streetwatch.commands.common import fail

config_app = typer.Typer(help="Configuration files: JSON schemas for editors and the UI.", no_args_is_help=True)

#: File kind -> (module, model, what the file is). One entry per kind of configuration file.
FILE_KINDS: dict[str, tuple[str, str, str]] = {
    "settings": ("pipelines.settings", "Settings", "Deployment settings (--config / $STREETWATCH_CONFIG)"),
    "cameras": ("pipelines.cctv.config", "CamerasFile", "Cameras file (streetwatch watch --cameras)"),
    "scene": ("detect.scenes", "Scene", "Scene file of one camera (zones, schedules, thresholds)"),
    "taxonomy": ("detect.taxonomy", "Taxonomy", "Violation taxonomy and class roles (detect/taxonomy.yaml)"),
    "city-codes": ("detect.taxonomy", "CityCodeFile", "City code table (大类/小类 codes of one city)"),
    "scoring-sheet": ("pipelines.analytics.sheet", "Sheet", "Assessment sheet (考核评分细则; analytics.sheet, streetwatch score --sheet)"),
    "grades": ("detect.grades", "Grades", "Road grades file (道路分级; detect/grades.yaml, or the cameras file's `grades`)"),
}


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


def file_schemas() -> dict[str, dict]:
    """Kind -> JSON schema of every configuration file kind."""
    import importlib

    from detect.config_io import json_schema

    return {kind: json_schema(getattr(importlib.import_module(module), model), title)
            for kind, (module, model, title) in FILE_KINDS.items()}


@config_app.command("schema")
def schema(
    kind: Annotated[str | None, typer.Argument(help=f"One file kind ({', '.join(FILE_KINDS)}); default: all.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write <kind>.schema.json files into this folder instead of printing.")] = None,
) -> None:
    """Write the JSON schema (draft 2020-12) of each configuration file kind: settings, cameras, scene, taxonomy, city-codes, scoring-sheet, grades.

    Without --out, one kind's schema is printed, or all of them as one JSON object keyed by kind.
    """
    if kind is not None and kind not in FILE_KINDS:
        fail(f"unknown file kind {kind!r} (known: {', '.join(FILE_KINDS)})")
    schemas = file_schemas()
    if kind is not None:
        schemas = {kind: schemas[kind]}
    if out is None:
        typer.echo(json.dumps(schemas[kind] if kind else schemas, ensure_ascii=False, indent=1))
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, body in schemas.items():
        path = out / f"{name}.schema.json"
        path.write_text(json.dumps(body, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        typer.echo(str(path))
