"""`streetwatch evidence verify|fetch|keygen|public-keys`: prove a bundle's images are the ones that were signed,
with the HMAC secret or with a published public key (no secret needed); hand cases' bundles over as checked files."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NamedTuple
from urllib.parse import urlparse
from urllib.request import url2pathname

import typer

from pipelines.wording import counted  # no import of its own
from streetwatch.commands.common import SettingsOpt, fail, require_case_store, settings_or_fail

KeyFileOpt = Annotated[
    Path | None,
    typer.Option("--key-file", help="File holding the HMAC secret (default: $STREETWATCH_EVIDENCE_KEY, or the config's key, with the "
                            "earlier keys of evidence.previous_hmac_key_files for bundles signed before a rotation)."),
]


def register(app: typer.Typer) -> None:
    evidence = typer.Typer(help="Evidence bundles: check that frames, crops and manifest are unaltered (verify); copy cases' bundles out, checked, to hand over (fetch); the Ed25519 keys that sign them (keygen, public-keys).", no_args_is_help=True)
    app.add_typer(evidence, name="evidence")

    @evidence.command("verify")
    def verify(
        bundles: Annotated[list[str], typer.Argument(
            help="Bundle directories (each with manifest.json and signature.json), or stored references "
            "(s3://bucket/prefix/<case>, file:///...) fetched through the configured evidence store.")],
        key_file: KeyFileOpt = None,
        public_key: Annotated[list[Path] | None, typer.Option(
            "--public-key", help="PEM file with the service's Ed25519 public key(s) (GET /api/v1/evidence/keys, or "
            "`streetwatch evidence public-keys`); repeat it, or concatenate keys, to cover a rotation. With it, no "
            "secret is needed: the HMAC is checked only when --key-file is given too.")] = None,
        case: Annotated[str | None, typer.Option(
            "--case", help="The case the bundle must belong to (default: the bundle folder's or reference's name, "
            "when it is a case id).")] = None,
        digest: Annotated[str | None, typer.Option(
            "--digest", help="The manifest digest the bundle must have, e.g. from the platform's case record: 64 hex "
            "digits, upper or lower case, spaces ignored (default: the one the case store recorded when the bundle was sealed).")] = None,
        use_store: Annotated[bool, typer.Option(
            "--store/--no-store", help="Compare with the digest the case store (--config) recorded for the case, "
            "when that store exists (a case it does not hold fails). --no-store: the signature and the case id alone, "
            "for a copy checked away from its deployment.")] = True,
        config: SettingsOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON report per bundle.")] = False,
    ) -> None:
        """Check every artifact's SHA-256, look for missing and unlisted files, check the signature (HMAC with
        the secret, or Ed25519 with --public-key), and check that the bundle is its case's: the manifest names
        the case and has the digest recorded when it was sealed.

        Exits 0 only when every bundle passes; otherwise lists what is wrong and exits 1.
        """
        from detect.evidence.signing import VerifyReport
        from pipelines.evidence_store import StorageError

        settings = settings_or_fail(config)
        if (case or digest) and len(bundles) > 1:
            fail("--case and --digest name one bundle: give one bundle with them")
        if digest is not None:  # as a platform's record or a printout may show it: upper case, spaced out
            digest = "".join(digest.split()).lower()
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                fail(f"--digest: {digest!r} is not a SHA-256 digest (64 hexadecimal digits)")
        keys = _keys(settings, key_file, public_key)
        failed = 0
        store = _store(settings) if use_store else None
        evidence_store = _evidence_store(settings, bundles, config)
        for bundle in bundles:
            expected_case = case or _case_of(bundle)
            expected_digest, store_problem = digest, None
            if expected_digest is None and store is not None and expected_case is not None:
                expected_digest, store_problem = _recorded_digest(store, expected_case)
            try:
                with _local_copy(bundle, evidence_store) as path:
                    report = _checked(path, keys, expected_case, expected_digest)
            except StorageError as exc:  # this bundle is not readable: it fails, the others are still checked
                report = VerifyReport(bundle=bundle, problems=[str(exc)])
            report.bundle = bundle
            if store_problem:
                report.problems.append(store_problem)
            if not report.ok and (removed := _removed(store, expected_case)):
                report.problems.append(removed)
            failed += not report.ok
            if as_json:
                typer.echo(json.dumps(report.as_dict(), ensure_ascii=False))
            else:
                _say(report, expected_case, expected_digest)
        if failed:
            raise typer.Exit(1)

    @evidence.command("fetch")
    def fetch(
        cases: Annotated[list[str], typer.Argument(
            metavar="CASE_ID|REFERENCE...", help="Case ids (their bundles found through the case store of --config), "
            "or stored references (s3://bucket/prefix/<case>, file:///...).")],
        out: Annotated[Path, typer.Option("--out", help="Folder to copy each bundle into, as <out>/<case id>/ (created).")],
        force: Annotated[bool, typer.Option("--force", help="Replace a case's folder already in --out (by default it "
                                                             "is refused and left as it is).")] = False,
        key_file: KeyFileOpt = None,
        public_key: Annotated[list[Path] | None, typer.Option(
            "--public-key", help="PEM file with the service's Ed25519 public key(s), as for `evidence verify`: "
            "checks the copies without the HMAC secret.")] = None,
        config: SettingsOpt = None,
    ) -> None:
        """Hand cases' evidence over (a court, an appeal office): copy each case's bundle, wherever the evidence store
        keeps it (local or S3), into --out/<case id>/ and verify the copy as `evidence verify` does (signature, every
        file's hash, the case id and the digest recorded at sealing). Prints a line per case as it goes, numbered
        (2/40), with the folder, the result and the manifest digest.

        A copy that fails verification is still written, and marked: <out>/<case id>.VERIFICATION-FAILED.txt says
        what is wrong. A case that is not in the case store, whose bundle is still in the spool or was never built or
        was removed by the retention, or whose folder --out already holds (without --force), is not fetched.

        Exit codes: 0 every case fetched and verified; 1 a copy failed verification (written and marked); 3 a case
        not fetched, every copy made verified; 2 nothing done (settings, keys, --out not a folder).
        """
        from pipelines.evidence_handover import NotStored, copy_bundle, stored_bundle
        from pipelines.evidence_store import StorageError

        settings = settings_or_fail(config)
        if out.exists() and not out.is_dir():
            fail(f"--out {out}: not a folder")
        keys = _keys(settings, key_file, public_key)
        store = _store(settings)
        wanted: dict[str, _Wanted] = {}  # by the folder each goes to, in the order given
        for item in dict.fromkeys(cases):
            if "://" in item:  # a reference: tied to its case, and to the case's recorded digest, as verify ties it
                digest, problem = _recorded_digest(store, case) if store and (case := _case_of(item)) else (None, None)
                wanted[item.rstrip("/").rsplit("/", 1)[-1]] = _Wanted(item, digest, problem=problem)
            elif not CASE_ID.match(item):
                wanted[item] = _Wanted(refusal=f"{item}: neither a case id (SW<date>-<12 hex digits>) nor a stored reference")
            elif store is None:
                require_case_store(settings.cases.url)
            else:
                try:
                    wanted[item] = _Wanted(*stored_bundle(store, item, settings.evidence_store.spool_dir))
                except NotStored as exc:
                    wanted[item] = _Wanted(refusal=str(exc))
        evidence_store = _evidence_store(settings, [w.ref for w in wanted.values() if w.ref], config)
        out.mkdir(parents=True, exist_ok=True)
        counts = {"verified": 0, "failed": 0, "not fetched": 0}
        for n, (name, w) in enumerate(wanted.items(), 1):
            prefix, folder, marker, refusal = f"[{n}/{len(wanted)}] ", out / name, out / f"{name}.{FAILED_MARK}", w.refusal
            if refusal is None:
                try:
                    copy_bundle(evidence_store, w.ref, folder, replace=force)
                except FileExistsError:
                    refusal = f"{folder} already holds case {name}: left as it is (--force replaces it)"
                except StorageError as exc:
                    refusal = str(exc)
            if refusal is not None:
                counts["not fetched"] += 1
                typer.secho(f"{prefix}NOT FETCHED {name}: {refusal}", fg=typer.colors.RED)
                continue
            report = _checked(folder, keys, _case_of(name), w.digest)
            report.bundle = str(folder)
            report.problems += [w.problem] if w.problem else []
            _say(report, _case_of(name), w.digest, prefix)
            marker.unlink(missing_ok=True)  # a --force copy's earlier mark goes with the copy it was about
            counts["verified" if report.ok else "failed"] += 1
            if not report.ok:
                typer.echo(f"  manifest digest: {report.digest or 'none (no readable manifest)'}\n  marked: {marker}")
                marker.write_text(f"{name}: this copy of {w.ref} failed verification (streetwatch evidence fetch)\n"
                                  f"manifest digest: {report.digest}\n" + "\n".join(_problems(report)) + "\n", encoding="utf-8")
        typer.echo(f"{counted(len(wanted), 'case')} to {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if counts["failed"] or counts["not fetched"]:
            raise typer.Exit(1 if counts["failed"] else NOT_FETCHED_EXIT)

    @evidence.command("keygen")
    def keygen(
        out: Annotated[Path, typer.Option("--out", help="Folder for the new key pair (the private key is written with mode 0600).")],
    ) -> None:
        """Make a new Ed25519 signing key pair; then set `evidence.signing_key_file` to the private key (and, when
        rotating, add the previous public key to `evidence.published_keys`)."""
        from detect.evidence.keys import generate_key_pair

        private, public, kid = generate_key_pair(out)
        typer.echo(f"key id {kid}\n  private {private}  (keep it secret: evidence.signing_key_file)\n  public  {public}")

    @evidence.command("public-keys")
    def public_keys(
        config: SettingsOpt = None,
        out: Annotated[Path | None, typer.Option("--out", help="Write the PEM keys to this file instead of printing them.")] = None,
    ) -> None:
        """The public keys bundles are signed with (the current one and those kept after rotations), as PEM:
        what `evidence verify --public-key` needs, and what the service publishes at /api/v1/evidence/keys."""
        from detect.evidence.config import EvidenceKeyError
        from detect.evidence.keys import published_keys

        try:
            keys = published_keys(settings_or_fail(config).evidence)
        except EvidenceKeyError as exc:
            fail(str(exc))
        if not keys:
            fail("no public signing key configured (evidence.signing_key_file; make one with `streetwatch evidence keygen`)")
        text = "".join(k.as_dict()["public_key_pem"] for k in keys)
        if out is None:
            for k in keys:
                typer.echo(f"# key id {k.key_id}{' (current)' if k.current else ''}", err=True)
            typer.echo(text, nl=False)
        else:
            out.write_text(text, encoding="ascii")
            typer.echo(f"{counted(len(keys), 'public key')} written to {out}: " + ", ".join(k.key_id for k in keys))


@dataclass
class _Wanted:
    """A bundle `evidence fetch` was asked for: its stored reference and the digest recorded at sealing, or why it
    is not fetched (`refusal`), or what its check must report beside its own findings (`problem`)."""

    ref: str | None = None
    digest: str | None = None
    refusal: str | None = None
    problem: str | None = None


class _Keys(NamedTuple):
    """What a bundle is checked with: the HMAC secret (None: not given), the earlier secrets kept after a rotation,
    and the Ed25519 public keys given."""

    hmac: bytes | None
    earlier: list[bytes]
    public: list


def _keys(settings, key_file: Path | None, public_key: list[Path] | None) -> _Keys:
    """The keys `--key-file`, `--public-key` and the settings give (verify's and fetch's options alike); stops the
    command naming the option or setting at fault, or, with no key at all, naming `--public-key`."""
    from detect.evidence.config import EvidenceKeyError, load_hmac_key, load_previous_hmac_keys
    from detect.evidence.keys import load_public_keys

    cfg = settings.evidence
    key, earlier, publics = None, [], []
    try:
        for path in public_key or []:
            publics += load_public_keys(path)
        if key_file is not None:
            cfg = cfg.model_copy(update={"hmac_key_file": key_file})
        if key_file is not None or not publics:
            key = load_hmac_key(cfg)
        if key_file is None and key is not None:  # the settings' key: and those it replaced, for older bundles
            earlier = load_previous_hmac_keys(cfg)
    except EvidenceKeyError as exc:  # a --key-file is no settings field: named as given
        if key_file is not None:
            fail(str(exc).replace(f"{exc.field}:", "--key-file:", 1))
        # no key at all: an auditor away from the deployment has no secret, and the way that needs none is named
        fail(f"{exc}; without the secret, check the public-key signature: --public-key FILE (the service's "
             "GET /api/v1/evidence/keys, or `streetwatch evidence public-keys` where the settings are)"
             if exc.field is None else str(exc))
    return _Keys(key, earlier, publics)


def _checked(path: Path, keys: _Keys, case_id: str | None, digest: str | None):
    """`verify_bundle` of the bundle folder `path` with `keys` (the HMAC key whose id its signature names, of the
    current and earlier ones), tied to `case_id` and `digest` when given."""
    from detect.evidence.signing import hmac_key_for, verify_bundle

    hmac = None if keys.hmac is None else hmac_key_for(path, [keys.hmac, *keys.earlier]) or keys.hmac  # unknown id: said as such
    return verify_bundle(path, hmac, public_keys=keys.public, case_id=case_id, digest=digest)


def _say(report, expected_case: str | None, expected_digest: str | None, prefix: str = "") -> None:
    """A verify report as `evidence verify` prints it: `OK`, the bundle, its manifest digest, the signatures and the
    case it is tied to; or `FAIL` with what is wrong, a line each (`_problems`). `prefix`: fetch's `[2/40] `."""
    signatures = ", ".join(f"{name} {state}" for name, state in ((f"HMAC key {report.key_id}" if report.key_id else "HMAC",
                                                                  report.signature),
                           (f"Ed25519 key {report.public_key_id}" if report.public_key_id else "Ed25519",
                            report.public_signature)) if state != "unchecked")
    if report.ok:
        # a copy under another folder name (a court's, an archive's) is tied to no case: the line still says
        # which case its manifest names, and that nothing checked it, where it said nothing of a case at all
        tied = (f"  case {report.case_id}" + (" (digest as recorded at sealing)" if expected_digest else "")
                if expected_case else f"  manifest names case {report.case_id} (not checked: give --case)")
        typer.secho(f"{prefix}OK  {report.bundle}  digest {report.digest}  signature valid ({signatures}){tied}",
                    fg=typer.colors.GREEN)
        return
    typer.secho(f"{prefix}FAIL {report.bundle}  signature: {signatures or 'none checked'}", fg=typer.colors.RED)
    for line in _problems(report):
        typer.echo(line)


def _problems(report) -> list[str]:
    """What is wrong with a bundle that failed, a line each (`  tampered (hash differs): crops/00_bus.jpg`)."""
    return [f"  {label}: {item}" for label, items in (
        ("tampered (hash differs)", report.tampered), ("missing", report.missing),
        ("extra (not in manifest)", report.extra), ("problem", report.problems)) for item in items]


CASE_ID = re.compile(r"^SW\d{8}-[0-9a-f]{12}$")

#: `evidence fetch`: the mark beside a copy that failed verification (<out>/<case id>.VERIFICATION-FAILED.txt), and the
#: exit code when some case was not fetched and every copy made verified (docs/cases-and-dispatch.md).
FAILED_MARK, NOT_FETCHED_EXIT = "VERIFICATION-FAILED.txt", 3


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


def _removed(store, case_id: str | None) -> str | None:
    """Why a case's bundle is gone, when the rejected cases' evidence retention removed it (`evidence_removed_on`):
    a failing check of such a bundle says so beside its 'does not exist', not as if the evidence were lost."""
    from pipelines.cases.store import evidence_removed_on

    if store is None or case_id is None or (at := store.evidence_removal(case_id)) is None:
        return None
    return evidence_removed_on(at)


def _evidence_store(settings, bundles: list[str], config: Path | None):
    """The configured evidence store when a bundle is given as a stored reference (None otherwise); a reference
    the other backend wrote (S3 with the local backend configured, file:// with s3), or S3 credentials missing,
    stop the command naming the fix."""
    from pipelines.evidence_store import StorageError, open_evidence_store, other_backends_reference
    from pipelines.settings import CONFIG_ENV

    refs = [b for b in bundles if "://" in b]
    if not refs:
        return None
    for ref in refs:
        if (why := other_backends_reference(ref, settings.evidence_store.backend)) is not None:
            where = config or os.environ.get(CONFIG_ENV) or "no settings file (--config, $STREETWATCH_CONFIG): the defaults"
            fail(f"{why} (settings: {where}); {_fix_for(ref)}")
    try:
        return open_evidence_store(settings.evidence_store)
    except StorageError as exc:
        fail(str(exc))


def _fix_for(ref: str) -> str:
    """What to do about a reference the configured backend cannot fetch (`_evidence_store`)."""
    if ref.startswith("s3://"):
        return "to fetch it, set evidence_store.backend: s3 and evidence_store.s3 (endpoint, bucket) in the settings given with --config"
    return (f"to verify it, give its folder ({url2pathname(urlparse(ref).path)}) instead, or set evidence_store.backend: "
            "local in the settings given with --config")


@contextmanager
def _local_copy(bundle: str, evidence_store) -> Iterator[Path]:
    """A bundle directory as given, or a temporary copy of a stored bundle reference (StorageError when it
    cannot be fetched)."""
    if "://" not in bundle:
        yield Path(bundle)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sw-verify-") as tmp:
        yield evidence_store.fetch_bundle(bundle, Path(tmp) / "bundle")
