"""`streetwatch evidence verify BUNDLE...`: prove a bundle's images are the ones that were signed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from streetwatch.commands.common import SettingsOpt, fail, settings_or_fail

KeyFileOpt = Annotated[
    Path | None,
    typer.Option("--key-file", help="File holding the HMAC secret (default: $STREETWATCH_EVIDENCE_KEY, or the config's key)."),
]


def register(app: typer.Typer) -> None:
    evidence = typer.Typer(help="Evidence bundles: check that frames, crops and manifest are unaltered.", no_args_is_help=True)
    app.add_typer(evidence, name="evidence")

    @evidence.command("verify")
    def verify(
        bundles: Annotated[list[str], typer.Argument(
            help="Bundle directories (each with manifest.json and signature.json), or stored references "
            "(s3://bucket/prefix/<case>, file:///...) fetched through the configured evidence store.")],
        key_file: KeyFileOpt = None,
        config: SettingsOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON report per bundle.")] = False,
    ) -> None:
        """Check every artifact's SHA-256, look for missing and unlisted files, and check the HMAC signature.

        Exits 0 only when every bundle passes; otherwise lists what is wrong and exits 1.
        """
        from detect.evidence import EvidenceKeyError, load_hmac_key, verify_bundle

        settings = settings_or_fail(config)
        cfg = settings.evidence
        try:
            if key_file is not None:
                cfg = cfg.model_copy(update={"hmac_key_file": key_file})
            key = load_hmac_key(cfg)
        except EvidenceKeyError as exc:
            fail(str(exc))
        failed = 0
        for bundle in bundles:
            with _local_copy(bundle, settings) as path:
                report = verify_bundle(path, key)
            report.bundle = bundle
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


@contextmanager
def _local_copy(bundle: str, settings) -> Iterator[Path]:
    """A bundle directory as given, or a temporary copy of a stored bundle reference."""
    if "://" not in bundle:
        yield Path(bundle)
        return
    import tempfile

    from pipelines.evidence_store import StorageError, open_evidence_store

    with tempfile.TemporaryDirectory(prefix="sw-verify-") as tmp:
        try:
            path = open_evidence_store(settings.evidence_store).fetch_bundle(bundle, Path(tmp) / "bundle")
        except StorageError as exc:
            fail(str(exc))
        yield path
