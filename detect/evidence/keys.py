"""Ed25519 keys for evidence anyone can verify: the service signs, courts and platforms check.

The HMAC in `signature.json` proves a bundle to whoever holds the secret, which is why the
secret cannot be handed out. An Ed25519 signature over the same digest proves it to anyone
holding the *public* key, which the service publishes (`GET /api/v1/evidence/keys`) and
`streetwatch evidence public-keys` prints; a court or a dispatch platform verifies with
`streetwatch evidence verify --public-key FILE` and needs no secret.

Each signature names its key by id (first 16 hex digits of the SHA-256 of the 32 raw public-key
bytes). Rotation: generate a new pair (`streetwatch evidence keygen`), point `signing_key_file`
at the new private key and add the old public key to `published_keys`; old bundles keep their
old key id and stay verifiable with the old public key, which stays published.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from detect.evidence.config import EvidenceConfig, EvidenceKeyError, load_hmac_key, load_previous_hmac_keys

ALGORITHM = "Ed25519"


def public_key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


@dataclass(frozen=True)
class PublishedKey:
    """A public key as the service publishes it; `current` signs new bundles, the others signed older ones."""

    key_id: str
    key: Ed25519PublicKey
    current: bool

    def as_dict(self) -> dict[str, object]:
        return {"key_id": self.key_id, "algorithm": ALGORITHM, "current": self.current,
                "public_key_pem": public_key_pem(self.key)}


def load_signing_key(config: EvidenceConfig) -> Ed25519PrivateKey | None:
    """The configured Ed25519 private key (None when public-key signing is not set up)."""
    path = config.signing_key_file
    if path is None:
        return None
    field = "evidence.signing_key_file"
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise EvidenceKeyError(f"{field}: {path}: cannot read evidence signing key: {exc.strerror}", field) from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise EvidenceKeyError(f"{field}: {path}: not an unencrypted PEM private key: {exc}", field) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EvidenceKeyError(f"{field}: {path}: evidence signing key must be Ed25519, not {type(key).__name__}", field)
    return key


@dataclass(frozen=True)
class SigningKeys:
    """The keys a case writer signs bundles with, loaded once (`load_signing_keys`, or `check_key_files` at start-up)
    and handed to it: the HMAC key, those it replaced (`previous_hmac_key_files`) and the Ed25519 signer (None: not
    set up)."""

    hmac: bytes
    previous_hmac: list[bytes]
    signer: Ed25519PrivateKey | None


def load_signing_keys(config: EvidenceConfig) -> SigningKeys:
    """The keys `config` names; EvidenceKeyError naming the field when one cannot be used (an unset key variable too)."""
    return SigningKeys(load_hmac_key(config), load_previous_hmac_keys(config), load_signing_key(config))


def check_key_files(config: EvidenceConfig) -> SigningKeys | None:
    """Load the keys the settings name (`hmac_key_file` or the `hmac_key_env` variable, `previous_hmac_key_files`,
    `signing_key_file`, `published_keys`); EvidenceKeyError naming the field (the variable), the file and the reason when one cannot be
    used. A configured key that does not load is an admin's error, so `serve` and `triage` refuse to start on it (an
    unreadable published key answered 503 at /evidence/keys instead, a short key variable only warned of); an unset
    key variable passes here: they warn of it. The keys loaded, for the case writer, or None when that variable is
    unset (the writer says so when it opens)."""
    try:
        hmac: bytes | None = load_hmac_key(config)
    except EvidenceKeyError as exc:
        if exc.field is not None:
            raise
        hmac = None
    previous, signer = load_previous_hmac_keys(config), load_signing_key(config)
    _published(config, signer)
    return SigningKeys(hmac, previous, signer) if hmac is not None else None


def load_public_keys(path: Path, field: str | None = None) -> list[Ed25519PublicKey]:
    """Every Ed25519 public key (PEM) in one file; several may be concatenated. `field`: the settings field naming
    the file (`evidence.published_keys`), which errors then name first; None for a file given on the command line."""
    where = f"{field}: {path}" if field else str(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise EvidenceKeyError(f"{where}: cannot read public key: {exc.strerror}", field) from None
    marker = b"-----BEGIN PUBLIC KEY-----"
    blocks = [marker + part for part in text.split(marker)[1:]]
    if not blocks:
        raise EvidenceKeyError(f"{where}: no PEM public key in it (-----BEGIN PUBLIC KEY----- ...)", field)
    keys = []
    for block in blocks:
        try:
            key = serialization.load_pem_public_key(block)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise EvidenceKeyError(f"{where}: unreadable public key: {exc}", field) from None
        if not isinstance(key, Ed25519PublicKey):
            raise EvidenceKeyError(f"{where}: public key must be Ed25519, not {type(key).__name__}", field)
        keys.append(key)
    return keys


def published_keys(config: EvidenceConfig) -> list[PublishedKey]:
    """The current signing key's public half and every earlier public key, by id (no duplicates)."""
    return _published(config, load_signing_key(config))


def _published(config: EvidenceConfig, signer: Ed25519PrivateKey | None) -> list[PublishedKey]:
    """`published_keys` with the signing key `config` names already loaded."""
    out: dict[str, PublishedKey] = {}
    if signer is not None:
        pub = signer.public_key()
        out[public_key_id(pub)] = PublishedKey(public_key_id(pub), pub, current=True)
    for path in config.published_keys:
        for pub in load_public_keys(path, "evidence.published_keys"):
            out.setdefault(public_key_id(pub), PublishedKey(public_key_id(pub), pub, current=False))
    return list(out.values())


def generate_key_pair(folder: Path) -> tuple[Path, Path, str]:
    """A new Ed25519 pair in `folder`: private key (mode 0600) and public key, named by key id."""
    key = Ed25519PrivateKey.generate()
    kid = public_key_id(key.public_key())
    folder.mkdir(parents=True, exist_ok=True)
    private = folder / f"evidence-signing-{kid}.pem"
    public = folder / f"evidence-signing-{kid}.pub.pem"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public.write_text(public_key_pem(key.public_key()), encoding="ascii")
    return private, public, kid
