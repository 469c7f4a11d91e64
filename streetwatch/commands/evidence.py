"""`streetwatch evidence verify BUNDLE...`: prove a bundle's images are the ones that were signed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from streetwatch.commands.common import fail

KeyFileOpt = Annotated[
    Path | None,
    typer.Option("--key-file", help="File holding the HMAC secret (default: $STREETWATCH_EVIDENCE_KEY, or the config's key)."),
]
EvidenceConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Evidence settings file (YAML/JSON, see docs/cases-and-dispatch.md).")
]


def register(app: typer.Typer) -> None:
    evidence = typer.Typer(help="Evidence bundles: check that frames, crops and manifest are unaltered.", no_args_is_help=True)
    app.add_typer(evidence, name="evidence")

    @evidence.command("verify")
    def verify(
        bundles: Annotated[list[Path], typer.Argument(help="Bundle directories (each with manifest.json and signature.json).")],
        key_file: KeyFileOpt = None,
        config: EvidenceConfigOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON report per bundle.")] = False,
    ) -> None:
        """Check every artifact's SHA-256, look for missing and unlisted files, and check the HMAC signature.

        Exits 0 only when every bundle passes; otherwise lists what is wrong and exits 1.
        """
        from detect.config_io import ConfigError, load_model
        from detect.evidence import EvidenceConfig, EvidenceKeyError, load_hmac_key, verify_bundle

        try:
            cfg = load_model(EvidenceConfig, config) if config else EvidenceConfig()
            if key_file is not None:
                cfg = cfg.model_copy(update={"hmac_key_file": key_file})
            key = load_hmac_key(cfg)
        except (ConfigError, EvidenceKeyError) as exc:
            fail(str(exc))
        failed = 0
        for bundle in bundles:
            report = verify_bundle(bundle, key)
            failed += not report.ok
            if as_json:
                typer.echo(json.dumps(report.as_dict(), ensure_ascii=False))
                continue
            if report.ok:
                typer.secho(f"OK  {bundle}  digest {report.digest}  signature valid", fg=typer.colors.GREEN)
                continue
            typer.secho(f"FAIL {bundle}  signature {report.signature}", fg=typer.colors.RED)
            for label, items in (("tampered (hash differs)", report.tampered), ("missing", report.missing),
                                 ("extra (not in manifest)", report.extra), ("problem", report.problems)):
                for item in items:
                    typer.echo(f"  {label}: {item}")
        if failed:
            raise typer.Exit(1)
