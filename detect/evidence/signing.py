"""Bundle integrity: SHA-256 of every artifact in `manifest.json`, an HMAC over the manifest.

The digest is the SHA-256 of the manifest file's bytes, and the manifest lists the SHA-256 of
every artifact, so one signature covers every image: change a byte anywhere and either an artifact
hash or the digest no longer matches. `signature.json` holds the digest, the HMAC-SHA256 of the
digest under the configured secret, and a key id (a hash of the key, never the key) so a reviewer
knows which secret to ask for.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from detect.digests import sha256_bytes, sha256_file

MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
FORMAT = "streetwatch-evidence/1"


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"streetwatch-key-id:" + key).hexdigest()[:16]


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """Stable serialisation (sorted keys, UTF-8 kept readable for 中文 names)."""
    return (json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_signed_manifest(bundle: Path, manifest: dict[str, Any], key: bytes) -> str:
    """Write `manifest.json` and `signature.json`; returns the bundle digest."""
    data = manifest_bytes(manifest)
    (bundle / MANIFEST).write_bytes(data)
    digest = sha256_bytes(data)
    signature = {
        "algorithm": "HMAC-SHA256",
        "digest_algorithm": "SHA-256 of manifest.json bytes",
        "digest": digest,
        "key_id": key_id(key),
        "signature": hmac.new(key, digest.encode(), hashlib.sha256).hexdigest(),
        "signed_at": datetime.now(UTC).isoformat(),
    }
    (bundle / SIGNATURE).write_bytes(manifest_bytes(signature))
    return digest


def read_manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))


@dataclass
class VerifyReport:
    """What `evidence verify` found; `ok` only when every check passed."""

    bundle: str
    digest: str | None = None
    case_id: str | None = None  # the case the manifest says it belongs to
    signature: str = "unchecked"  # valid | invalid | missing | unchecked (no key given)
    tampered: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.signature == "valid" and not self.tampered and not self.missing and not self.extra
                and not self.problems)

    def as_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "ok": self.ok, "digest": self.digest, "case_id": self.case_id, "signature": self.signature,
                "tampered": self.tampered, "missing": self.missing, "extra": self.extra, "problems": self.problems}


def verify_bundle(bundle: str | Path, key: bytes | None, *, case_id: str | None = None,
                  digest: str | None = None) -> VerifyReport:
    """Check every listed artifact's hash, look for files not listed, and check the signature.

    Without `key` the signature is reported `unchecked` and the bundle is not `ok`: hashes alone
    prove nothing against someone who can rewrite the manifest too. A valid signature only says
    the bundle is one we signed, not that it is *this case's* bundle: `case_id` (the case it is
    filed under) and `digest` (the digest the case store recorded when the case's bundle was
    sealed) tie it to its case, so another case's bundle, or an older one of the same case,
    copied into its place is refused.
    """
    bundle = Path(bundle)
    report = VerifyReport(bundle=str(bundle))
    if not bundle.is_dir():
        report.problems.append(f"{bundle}: not a directory")
        return report
    try:
        data = (bundle / MANIFEST).read_bytes()
        manifest = json.loads(data)
        artifacts = manifest["artifacts"]
    except FileNotFoundError:
        report.problems.append(f"{MANIFEST} is missing")
        return report
    except (ValueError, KeyError, TypeError) as exc:
        report.problems.append(f"{MANIFEST} is unreadable: {exc}")
        return report
    report.digest = sha256_bytes(data)
    report.case_id = manifest.get("case_id") if isinstance(manifest, dict) else None
    if case_id is not None and report.case_id != case_id:
        report.problems.append(f"bundle belongs to case {report.case_id}, not to case {case_id} it is filed under")
    if digest is not None and report.digest != digest:
        report.problems.append(f"digest {report.digest} is not the one recorded when case {case_id or report.case_id}'s "
                               f"bundle was sealed ({digest}): an older or another bundle")

    listed = set()
    for item in artifacts:
        rel = PurePosixPath(str(item.get("path", "")))
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            report.problems.append(f"artifact path {str(rel)!r} points outside the bundle")
            continue
        listed.add(str(rel))
        path = bundle / rel
        if not path.is_file():
            report.missing.append(str(rel))
        elif sha256_file(path) != item.get("sha256"):
            report.tampered.append(str(rel))
    present = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    report.extra = sorted(present - listed - {MANIFEST, SIGNATURE})

    try:
        signature = json.loads((bundle / SIGNATURE).read_bytes())
    except FileNotFoundError:
        report.signature = "missing"
        return report
    except ValueError as exc:
        report.signature = "invalid"
        report.problems.append(f"{SIGNATURE} is unreadable: {exc}")
        return report
    if signature.get("digest") != report.digest:
        report.signature = "invalid"
        report.problems.append(f"{MANIFEST} was changed after signing (digest differs)")
    elif key is not None:
        if signature.get("key_id") != key_id(key):
            report.problems.append(f"signed with key id {signature.get('key_id')}, verifying with {key_id(key)}")
        expected = hmac.new(key, report.digest.encode(), hashlib.sha256).hexdigest()
        report.signature = "valid" if hmac.compare_digest(expected, str(signature.get("signature"))) else "invalid"
    return report
