"""Evidence settings: signing key source, local time zone, image quality, privacy, frame strip."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from detect.config_io import ConfigModel
from detect.scenes import TimeZoneName

MIN_KEY_BYTES = 16


class EvidenceKeyError(ValueError):
    """No usable HMAC key: the message says where it was looked for. `field` names the settings field of a key that
    is configured but cannot be used (a key file, or a key variable holding too short a key: an admin's error, which
    `serve` and `triage` refuse at start-up); None when no key is set where one is looked for (a choice, which they
    only warn of)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class EvidenceConfig(ConfigModel):
    hmac_key_env: str = Field(
        "STREETWATCH_EVIDENCE_KEY", title="HMAC key variable",
        description="Environment variable holding the secret that signs bundle digests (used when no key file is set).",
        min_length=1)
    hmac_key_file: Path | None = Field(
        None, title="HMAC key file", description="File whose bytes (trailing newline removed) are the signing secret.")
    previous_hmac_key_files: list[Path] = Field(
        default_factory=list, title="Earlier HMAC key files",
        description="Files holding HMAC secrets used before a rotation (one key a file, as `hmac_key_file`): bundles "
        "they signed that still wait in the spool are uploaded, and `evidence verify` checks the bundles they signed. "
        "New bundles are signed with the current key only.")
    signing_key_file: Path | None = Field(
        None, title="Public-key signing key",
        description="Ed25519 private key (unencrypted PEM; `streetwatch evidence keygen`) that also signs every bundle's "
        "digest, so anyone holding its public key (published by the service) can verify a bundle without a secret "
        "(`evidence verify --public-key`). Unset: HMAC only.")
    published_keys: list[Path] = Field(
        default_factory=list, title="Earlier public keys",
        description="Public keys (PEM) of signing keys used before a rotation; the service keeps publishing them so the "
        "bundles they signed stay verifiable.")
    timezone: TimeZoneName = Field(
        "Asia/Shanghai", title="Local time zone",
        description="IANA zone for the local times written next to UTC times in the manifest; in the settings file, default: "
        "the settings' `timezone`.")
    city: str = Field(
        "default", title="City code table", description="Which city's 大类/小类 codes of the taxonomy the manifest records.",
        min_length=1)
    jpeg_quality: int = Field(92, title="JPEG quality", description="Quality of written frames and crops.", ge=50, le=100)
    crop_margin: float = Field(
        0.1, title="Crop margin", description="Extra context around each crop, as a fraction of the box size.", ge=0, le=1)
    privacy_blur: bool = Field(
        False, title="Blur shared copies",
        description="Also write `shared/` copies with heads of people and licence-plate regions of vehicles blurred; "
        "originals are kept untouched.")
    strip_max_frames: int = Field(
        8, title="Frame strip length", description="Most frames kept from the ring buffer around the opening.", ge=0, le=64)
    strip_width: int = Field(640, title="Frame strip width", description="Width in pixels of strip frames.", ge=64)

    def key_files(self) -> list[tuple[str, Path]]:
        """(settings field, file) of every key file set: what the API names by its field, never by its server path,
        when one becomes unreadable after start-up (`Settings.named_by_setting`)."""
        files = [("evidence.hmac_key_file", self.hmac_key_file), ("evidence.signing_key_file", self.signing_key_file),
                 *(("evidence.previous_hmac_key_files", path) for path in self.previous_hmac_key_files),
                 *(("evidence.published_keys", path) for path in self.published_keys)]
        return [(field, path) for field, path in files if path is not None]


def load_hmac_key(config: EvidenceConfig) -> bytes:
    """The signing secret from the key file or the environment variable; refuses short keys (a short HMAC key can be
    guessed, and every bundle signed with it forged)."""
    if config.hmac_key_file is not None:
        return _read_key_file(config.hmac_key_file, "evidence.hmac_key_file")
    key = os.environ.get(config.hmac_key_env, "").encode()
    where = f"environment variable {config.hmac_key_env}"
    if not key:
        raise EvidenceKeyError(f"{where} is not set: evidence bundles are signed with an HMAC key from it")
    return _long_enough(key, where, "evidence.hmac_key_env")  # a short key is set, not unset: refused like a bad file


def load_previous_hmac_keys(config: EvidenceConfig) -> list[bytes]:
    """The secrets of `previous_hmac_key_files` (earlier keys, kept to check what they signed), refused as the current
    key's file is when one cannot be read or is short."""
    return [_read_key_file(path, "evidence.previous_hmac_key_files") for path in config.previous_hmac_key_files]


def _read_key_file(path: Path, field: str) -> bytes:
    where = f"{field}: {path}"
    try:
        key = path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise EvidenceKeyError(f"{where}: cannot read evidence key: {exc.strerror}", field) from None
    return _long_enough(key, where, field)


def _long_enough(key: bytes, where: str, field: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise EvidenceKeyError(f"{where}: evidence key has {len(key)} bytes; use at least {MIN_KEY_BYTES}", field)
    return key
