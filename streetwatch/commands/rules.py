"""`streetwatch rules`: show the violation taxonomy and check scene / city-zone files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.wording import counted  # no import of its own
from streetwatch.commands.common import SettingsOpt, fail, print_warning, settings_or_fail

rules_app = typer.Typer(help="Violation taxonomy, scene files and city zones (see docs/rules.md).", no_args_is_help=True)

TaxonomyOpt = Annotated[Path | None, typer.Option("--taxonomy", help="Taxonomy YAML to use instead of the settings' (taxonomy.path and taxonomy.city_codes of --config; without either, the shipped detect/taxonomy.yaml).")]
CITY_CODES_EXAMPLE = "docs/examples/city-codes-hangzhou.yaml"
CityFileOpt = Annotated[list[Path] | None, typer.Option("--city-file", help="City code file(s) to merge (city + codes).")]


def register(app: typer.Typer) -> None:
    app.add_typer(rules_app, name="rules")


def _taxonomy(taxonomy: Path | None, config: Path | None, city_files: list[Path] | None = None):
    """The taxonomy these commands judge by: `--taxonomy` with `--city-file`s, else the deployment's as `watch` and
    `triage` load it (`Settings.load_taxonomy`: its `taxonomy.path` and `taxonomy.city_codes`), plus `--city-file`s. A
    scene file was checked against the shipped taxonomy where the deployment's own defines other types, zones or grades."""
    from detect.taxonomy import load_taxonomy

    if taxonomy is not None:
        return load_taxonomy(taxonomy, city_files=city_files)
    return settings_or_fail(config).load_taxonomy(city_files or [])


@rules_app.command("taxonomy")
def show_taxonomy(
    taxonomy: TaxonomyOpt = None,
    city_file: CityFileOpt = None,
    city: Annotated[str, typer.Option("--city", help="City whose 大类/小类 codes to show.")] = "default",
    config: SettingsOpt = None,
) -> None:
    """List violation types with their event-tree codes, Open311 code, zones and thresholds, then the class roles."""
    from rich.console import Console
    from rich.table import Table

    from detect.config_io import ConfigError

    try:
        tax = _taxonomy(taxonomy, config, city_file)
        tax.require_city(city, "--city", f"pass its code file with --city-file (example: {CITY_CODES_EXAMPLE})")
    except ConfigError as exc:
        fail(str(exc))
    table = Table("id", "名称", "大类/小类", f"codes ({city})", "open311", "zones", "dwell/clear/cooldown s")
    for t in tax.types.values():
        code = t.city_codes.get(city)
        table.add_row(t.id, t.name_zh, f"{t.major_class}/{t.minor_class}", f"{code.major_code}/{code.minor_code}" if code else "-",
                      t.open311_service_code, ", ".join(k.value for k in t.zone_kinds), f"{t.dwell_s:g}/{t.clear_s:g}/{t.cooldown_s:g}")
    Console().print(table)
    roles = Table("class", "text", "OCR trigger", "signboard", "privacy", "tracker family", "zone anchor", title="class roles")
    for name, r in tax.classes.items():
        roles.add_row(name, "yes" if r.text else "", "yes" if r.triggers_ocr else "", "yes" if r.signboard else "",
                      r.privacy or "", r.family or "", str(r.zone_anchor))
    Console().print(roles)


@rules_app.command("check")
def check(
    files: Annotated[list[Path], typer.Argument(help="Scene files (.yaml/.json) and city zone files (.geojson).")],
    taxonomy: TaxonomyOpt = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when a file has warnings (e.g. a reference snapshot "
                                                          "that is missing: no moved-camera check).")] = False,
    config: SettingsOpt = None,
) -> None:
    """Validate scene and city-zone files; exit 2 naming file, field and reason on the first bad one.

    A valid scene whose reference snapshot is missing or unreadable is warned about (the watcher runs the camera
    without its moved-camera check, and refuses it where it reads text); with --strict that exits 1."""
    from detect.cityzones import load_city_zones
    from detect.config_io import ConfigError
    from detect.scenes import load_scene, read_reference

    warnings = 0
    try:
        tax = _taxonomy(taxonomy, config)
        for path in files:
            if path.suffix.lower() == ".geojson":
                zones = load_city_zones(path, tax)
                typer.echo(f"ok {path}: {counted(len(zones.zones), 'city zone')}")
                continue
            scene = load_scene(path, tax)
            try:
                read_reference(scene)
            except ConfigError as exc:
                warnings += 1
                print_warning(f"{path}: reference_snapshot: {exc}: the moved-camera check will not run for camera "
                              f"{scene.camera_id} (and watch refuses it where its ocr_interval_s is set)")
                typer.echo(f"checked {path}: camera {scene.camera_id}, {counted(len(scene.zones), 'zone')}, 1 warning")
                continue
            typer.echo(f"ok {path}: camera {scene.camera_id}, {counted(len(scene.zones), 'zone')}")
    except ConfigError as exc:
        fail(str(exc))
    if strict and warnings:
        fail(f"{warnings} of {counted(len(files), 'file')} with warnings (--strict)", code=1)
