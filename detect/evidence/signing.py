"""Bundle integrity: SHA-256 of every artifact in `manifest.json`, signatures over the manifest.

The digest is the SHA-256 of the manifest file's bytes, and the manifest lists the SHA-256 of
every artifact, so one signature covers every image: change a byte anywhere and either an artifact
hash or the digest no longer matches. `signature.json` holds the digest and two signatures of it:

- `signature`: HMAC-SHA256 of the digest under the configured secret, with a key id (a hash of
  the key, never the key). Only who holds the secret can check it.
- `public_key_signature` (when a signing key is configured): Ed25519 over the digest's 64 hex
  characters, with the key id of its public key (`detect.evidence.keys`). Anyone holding the
  public key can check it: a court, a dispatch platform.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from detect.digests import sha256_bytes, sha256_file
from detect.evidence import MANIFEST, SIGNATURE
from detect.evidence.keys import ALGORITHM, public_key_id



def key_id(key: bytes) -> str:
    return hashlib.sha256(b"streetwatch-key-id:" + key).hexdigest()[:16]


def signed_key_id(bundle: Path) -> str | None:
    """The HMAC key id the bundle's `signature.json` names; None when it names none (unsigned, unreadable)."""
    try:
        named = json.loads((bundle / SIGNATURE).read_bytes()).get("key_id")
    except (OSError, ValueError, AttributeError):
        return None
    return str(named) if named else None


def hmac_key_for(bundle: Path, keys: list[bytes]) -> bytes | None:
    """Of `keys` (the current HMAC key first, then earlier ones kept after a rotation), the one whose id the bundle's
    `signature.json` names; the first when it names none (`verify_bundle` then says why the bundle fails); None when
    it names a key not among them (signed with a key since rotated away and not kept)."""
    named = signed_key_id(bundle)
    return keys[0] if named is None else {key_id(key): key for key in keys}.get(named)


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """Stable serialisation (sorted keys, UTF-8 kept readable for 中文 names)."""
    return (json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_signed_manifest(bundle: Path, manifest: dict[str, Any], key: bytes,
                          signer: Ed25519PrivateKey | None = None) -> str:
    """Write `manifest.json` and `signature.json`; returns the bundle digest."""
    data = manifest_bytes(manifest)
    (bundle / MANIFEST).write_bytes(data)
    digest = sha256_bytes(data)
    signature: dict[str, Any] = {
        "algorithm": "HMAC-SHA256",
        "digest_algorithm": "SHA-256 of manifest.json bytes",
        "digest": digest,
        "key_id": key_id(key),
        "signature": hmac.new(key, digest.encode(), hashlib.sha256).hexdigest(),
        "signed_at": datetime.now(UTC).isoformat(),
    }
    if signer is not None:
        signature["public_key_signature"] = {
            "algorithm": ALGORITHM,
            "signed": "the 64 hex characters of `digest` (ASCII)",
            "key_id": public_key_id(signer.public_key()),
            "signature": base64.b64encode(signer.sign(digest.encode("ascii"))).decode("ascii"),
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
    signature: str = "unchecked"  # HMAC: valid | invalid | missing | unchecked (no key given)
    public_signature: str = "unchecked"  # Ed25519: valid | invalid | missing | unknown key | unchecked (no public key given)
    public_key_id: str | None = None  # the key id the Ed25519 signature names
    key_id: str | None = None  # the HMAC key id `signature.json` names: which key of a rotation signed it
    tampered: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every file as listed, no problem, and every signature checked (HMAC, public key, or both) valid."""
        checked = [s for s in (self.signature, self.public_signature) if s != "unchecked"]
        return (bool(checked) and all(s == "valid" for s in checked) and not self.tampered and not self.missing
                and not self.extra and not self.problems)

    def why(self) -> str:
        """What is wrong, in one line: the problems, the files that differ from the manifest and a signature that is
        not valid (an unchecked one is not said: the caller knows which keys it gave)."""
        return "; ".join(self.problems + [f"{k}: {', '.join(v)}" for k, v in
                                          (("tampered", self.tampered), ("missing", self.missing), ("extra", self.extra)) if v]
                         + ([] if self.signature in ("valid", "unchecked") else [f"signature {self.signature}"]))

    def as_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "ok": self.ok, "digest": self.digest, "case_id": self.case_id, "signature": self.signature,
                "public_signature": self.public_signature, "public_key_id": self.public_key_id, "key_id": self.key_id,
                "tampered": self.tampered, "missing": self.missing, "extra": self.extra, "problems": self.problems}


def verify_bundle(bundle: str | Path, key: bytes | None, *, public_keys: list[Ed25519PublicKey] | None = None,
                  case_id: str | None = None, digest: str | None = None) -> VerifyReport:
    """Check every listed artifact's hash, look for files not listed, and check the signature.

    `key` checks the HMAC, `public_keys` the Ed25519 signature (whichever key has the id it names:
    after a rotation, give the old and the new public key). With neither, nothing is `ok`: hashes
    alone prove nothing against someone who can rewrite the manifest too. A valid signature only says
    the bundle is one we signed, not that it is *this case's* bundle: `case_id` (the case it is
    filed under) and `digest` (the digest the case store recorded when the case's bundle was
    sealed) tie it to its case, so another case's bundle, or an older one of the same case,
    copied into its place is refused.
    """
    bundle = Path(bundle)
    report = VerifyReport(bundle=str(bundle))
    if not bundle.is_dir():
        report.problems.append(f"{bundle}: {'not a directory' if bundle.exists() else 'does not exist'}")
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

    if not isinstance(artifacts, list):  # an edited manifest: report it, do not trip over it
        report.problems.append(f"{MANIFEST}: `artifacts` is a JSON {type(artifacts).__name__}, not a list")
        artifacts = []
    listed = set()
    for item in artifacts:
        if not isinstance(item, dict):
            report.problems.append(f"{MANIFEST}: artifact entry {json.dumps(item, ensure_ascii=False)[:80]} is not an object")
            continue
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
    # We never write links. A linked folder hides unlisted files from the `extra` check (the walk does not enter
    # it), and a linked file makes the bundle's content depend on something outside it: both fail the bundle.
    for link in sorted(p for p in bundle.rglob("*") if p.is_symlink()):
        report.problems.append(f"{link.relative_to(bundle).as_posix()} is a symbolic link (to {os.readlink(link)}); "
                               "a bundle holds its files itself")

    try:
        signature = json.loads((bundle / SIGNATURE).read_bytes())
    except FileNotFoundError:
        # Unsigned: said in words, and the signature asked for (HMAC with a key, Ed25519 with public keys) is the one
        # missing; "HMAC missing" alone, for an auditor who gave only a public key, named neither file nor key.
        report.problems.append(f"{SIGNATURE} is missing: the bundle is not signed, so nothing shows its files unaltered")
        if key is not None or not public_keys:
            report.signature = "missing"
        if public_keys:
            report.public_signature = "missing"
        return report
    except ValueError as exc:
        report.signature = "invalid"
        report.problems.append(f"{SIGNATURE} is unreadable: {exc}")
        return report
    if not isinstance(signature, dict):
        report.signature = "invalid"
        report.problems.append(f"{SIGNATURE} is unreadable: a JSON {type(signature).__name__}, not an object")
        return report
    report.key_id = str(signature["key_id"]) if signature.get("key_id") else None
    if signature.get("digest") != report.digest:
        # Only the signature checked is said invalid: "HMAC invalid" to an auditor who gave a public key alone
        # claimed a check of a secret they never had.
        report.signature = "invalid" if key is not None or not public_keys else report.signature
        report.public_signature = "invalid" if public_keys else report.public_signature
        report.problems.append(f"{MANIFEST} was changed after signing (digest differs)")
        return report
    if key is not None:
        if signature.get("key_id") != key_id(key):
            report.problems.append(f"signed with key id {signature.get('key_id')}, verifying with {key_id(key)}")
        expected = hmac.new(key, report.digest.encode(), hashlib.sha256).hexdigest()
        report.signature = "valid" if hmac.compare_digest(expected, str(signature.get("signature"))) else "invalid"
    if public_keys:
        _check_public_signature(report, signature.get("public_key_signature"), public_keys)
    return report


def _check_public_signature(report: VerifyReport, signed: Any, public_keys: list[Ed25519PublicKey]) -> None:
    if not isinstance(signed, dict) or not signed.get("signature"):
        report.public_signature = "missing"
        report.problems.append(f"{SIGNATURE} has no public-key signature (signed before a signing key was configured?)")
        return
    report.public_key_id = str(signed.get("key_id"))
    by_id = {public_key_id(k): k for k in public_keys}
    public = by_id.get(report.public_key_id)
    if public is None:
        report.public_signature = "unknown key"
        # the key named may be older or newer than those given (a bundle from after a rotation checked with the key
        # kept from before): say which one to fetch, not "the earlier one"
        report.problems.append(f"signed with public key id {report.public_key_id}; the keys given are "
                               f"{', '.join(sorted(by_id))}: give that key too (the service's "
                               f"GET /api/v1/evidence/keys/{report.public_key_id}.pem)")
        return
    try:
        public.verify(base64.b64decode(str(signed["signature"]), validate=True), str(report.digest).encode("ascii"))
        report.public_signature = "valid"
    except (InvalidSignature, binascii.Error, ValueError):
        report.public_signature = "invalid"
