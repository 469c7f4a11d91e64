"""`streetwatch evidence verify BUNDLE...`: prove a bundle's images are the ones that were signed."""

from __future__ import annotations

import json
import re
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
        case: Annotated[str | None, typer.Option(
            "--case", help="The case the bundle must belong to (default: the bundle folder's or reference's name, "
            "when it is a case id).")] = None,
        digest: Annotated[str | None, typer.Option(
            "--digest", help="The manifest digest the bundle must have, e.g. from the platform's case record "
            "(default: the one the case store recorded when the bundle was sealed).")] = None,
        use_store: Annotated[bool, typer.Option(
            "--store/--no-store", help="Compare with the digest the case store (--config) recorded for the case, "
            "when that store exists.")] = True,
        config: SettingsOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON report per bundle.")] = False,
    ) -> None:
        """Check every artifact's SHA-256, look for missing and unlisted files, check the HMAC signature, and
        check that the bundle is its case's: the manifest names the case and has the digest recorded when it was sealed.

        Exits 0 only when every bundle passes; otherwise lists what is wrong and exits 1.
        """
        from detect.evidence import EvidenceKeyError, load_hmac_key, verify_bundle

        settings = settings_or_fail(config)
        if (case or digest) and len(bundles) > 1:
            fail("--case and --digest name one bundle: give one bundle with them")
        cfg = settings.evidence
        try:
            if key_file is not None:
                cfg = cfg.model_copy(update={"hmac_key_file": key_file})
            key = load_hmac_key(cfg)
        except EvidenceKeyError as exc:
            fail(str(exc))
        failed = 0
        store = _store(settings) if use_store else None
        for bundle in bundles:
            expected_case = case or _case_of(bundle)
            expected_digest, store_problem = digest, None
            if expected_digest is None and store is not None and expected_case is not None:
                expected_digest, store_problem = _recorded_digest(store, expected_case)
            with _local_copy(bundle, settings) as path:
                report = verify_bundle(path, key, case_id=expected_case, digest=expected_digest)
            report.bundle = bundle
            if store_problem:
                report.problems.append(store_problem)
            failed += not report.ok
            if as_json:
                typer.echo(json.dumps(report.as_dict(), ensure_ascii=False))
                continue
            if report.ok:
                tied = (f"  case {report.case_id}" + (" (digest as recorded at sealing)" if expected_digest else "")
                        if expected_case else "")
                typer.secho(f"OK  {bundle}  digest {report.digest}  signature valid{tied}", fg=typer.colors.GREEN)
                continue
            typer.secho(f"FAIL {bundle}  signature {report.signature}", fg=typer.colors.RED)
            for label, items in (("tampered (hash differs)", report.tampered), ("missing", report.missing),
                                 ("extra (not in manifest)", report.extra), ("problem", report.problems)):
                for item in items:
                    typer.echo(f"  {label}: {item}")
        if failed:
            raise typer.Exit(1)


CASE_ID = re.compile(r"^SW\d{8}-[0-9a-f]{12}$")


def _case_of(bundle: str) -> str | None:
    """The case a bundle is filed under: its folder's (or reference's) last name, when that is a case id."""
    name = bundle.rstrip("/").rsplit("/", 1)[-1]
    return name if CASE_ID.match(name) else None


def _store(settings):
    """The configured case store, read-only (never created or migrated by a check); None when there is none."""
    from pipelines.cases import CaseStore

    url = settings.cases.url
    return CaseStore(url, migrate_schema=False) if CaseStore.exists(url) else None


def _recorded_digest(store, case_id: str) -> tuple[str | None, str | None]:
    """(digest recorded at sealing, or None; a problem to report, or None)."""
    from pipelines.cases import CaseNotFound

    try:
        recorded = store.sealed_digest(case_id)
    except CaseNotFound:
        return None, f"case {case_id} is not in the case store {store.url}"
    return recorded, None if recorded else f"the case store has no sealed digest for case {case_id}"


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
