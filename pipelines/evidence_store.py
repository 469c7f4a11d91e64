"""Where evidence bundles live once built: a local directory (default) or S3-compatible storage.

One interface, two backends. A bundle is stored whole under its case id, manifest last, so a
reader that finds the manifest finds every artifact it lists. A bundle reference (`file:///...`
or `s3://bucket/prefix/<case id>`) is what the case store keeps; attachments for dispatch systems
are handed out as URLs (`url()`): presigned GET URLs with an expiry on S3, `public_base_url` +
path for a local store served by the API (signed with an expiry when the deployment has a URL key,
`service.url_key_env`: the API's `/attachments` route checks it), else `file://` URLs for a single
machine.

Network trouble on S3 is retried by the HTTP client the `minio` client runs on (urllib3 `Retry`
with back-off, on connection errors and 5xx); what still fails raises `StorageError`, and the
caller (intake) keeps the bundle in its spool and tries again later.
"""

from __future__ import annotations

import mimetypes
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import quote, urlparse
from urllib.request import url2pathname

from pydantic import Field, model_validator

from detect.config_io import ConfigModel
from detect.evidence import MANIFEST, SIGNATURE
from pipelines.url_signing import ATTACHMENT, UrlSigner

MAX_PRESIGN = timedelta(days=7)  # SigV4 presigned URLs cannot live longer


class StorageError(RuntimeError):
    """A bundle could not be written or read; the message names the bundle and the cause."""


class S3Settings(ConfigModel):
    endpoint: str = Field(title="Endpoint", description="host:port of the S3-compatible server (MinIO, Ceph, AWS, ...).", min_length=1)
    secure: bool = Field(True, title="HTTPS", description="Use HTTPS to reach the endpoint.")
    bucket: str = Field("streetwatch-evidence", title="Bucket", description="Bucket for bundles; created when missing.",
                        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = Field("cases", title="Key prefix", description="Object key prefix; bundles go to <prefix>/<case id>/.")
    region: str = Field("us-east-1", title="Region", description="Region the bucket lives in (set to skip a location lookup).")
    access_key_env: str = Field("STREETWATCH_S3_ACCESS_KEY", title="Access key variable",
                                description="Environment variable holding the access key.")
    secret_key_env: str = Field("STREETWATCH_S3_SECRET_KEY", title="Secret key variable",
                                description="Environment variable holding the secret key.")
    url_expiry_s: int = Field(7 * 24 * 3600, title="URL expiry",
                              description="Lifetime in seconds of a presigned GET URL asked for without one; streetwatch's "
                                          "own give theirs (the review pages' images service.url_expiry_s, a dispatch "
                                          "target's attachments its attachment_expiry_s), so it reads none: a settings "
                                          "file that sets it (the release before gave the review pages' images this "
                                          "lifetime) is warned of at serve's start-up.",
                              gt=0, le=int(MAX_PRESIGN.total_seconds()))
    retries: int = Field(3, title="Retries", description="Retries per request on connection errors and 5xx answers.", ge=0, le=10)
    backoff_s: float = Field(0.2, title="Back-off", description="Base of the exponential back-off between retries.", ge=0)
    connect_timeout_s: float = Field(5.0, title="Connect timeout", description="Seconds to wait for a connection.", gt=0)
    read_timeout_s: float = Field(30.0, title="Read timeout", description="Seconds to wait for an answer.", gt=0)


class EvidenceStoreConfig(ConfigModel):
    backend: Literal["local", "s3"] = Field("local", title="Backend", description="`local` directory or `s3`-compatible storage.")
    local_root: Path = Field(Path("streetwatch-data/evidence"), title="Local root",
                             description="Folder of bundles for the local backend (one sub-folder per case).")
    spool_dir: Path = Field(Path("streetwatch-data/spool"), title="Spool folder",
                            description="Local folder where bundles are built and kept until the store has them (storage outages).")
    public_base_url: str | None = Field(
        None, title="Public base URL",
        description="Local backend: URL under which the API serves `local_root` (attachment URLs are this + <case>/<path>, "
                    "signed with an expiry by the key of `service.url_key_env`; point it at <api>/attachments).")
    s3: S3Settings | None = Field(None, title="S3 settings", description="Required when backend is s3.")

    @model_validator(mode="after")
    def _s3_needs_settings(self) -> EvidenceStoreConfig:
        if self.backend == "s3" and self.s3 is None:
            raise ValueError("backend s3 needs an `s3:` section (endpoint, bucket, ...)")
        return self


def paths_named_by_setting(text: str, paths: Iterable[tuple[str, Path]], named: Callable[[str], str] = str) -> str:
    """`text` with each path (absolute, as a `file://` URI, or as configured) replaced by the setting that names it;
    `setting: path` (how the key files' errors read) becomes the setting once."""
    forms: dict[str, str] = {}
    for setting, path in paths:
        absolute = path.resolve()
        for form in (absolute.as_uri(), str(absolute), str(path)):  # the intake names the spool as configured
            forms.setdefault(str(named(form)), setting)
    pattern = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
    # whole paths only: not /srv/evidence in /srv/evidence2, nor a relative spool inside another path; a setting that
    # already stands before its path is not said twice
    return re.sub(rf"(?:([\w.]+): )?(?<![\w./-])({pattern})(?![\w.-])",
                  lambda m: forms[m.group(2)] if m.group(1) == forms[m.group(2)] else
                  (f"{m.group(1)}: " if m.group(1) else "") + forms[m.group(2)], text)


def endpoint_named_by_setting(text: str, endpoint: str, setting: str = "evidence_store.s3.endpoint") -> str:
    """`text` with the S3 server's `endpoint` (host:port) named by its setting, in the forms the HTTP client's errors
    give it (`HTTPConnection(host='10.0.0.5', port=9000): Failed to establish ...`, `10.0.0.5:9000`): an upload job's
    case reason, shown to inspectors, named the evidence server's address where the folders of a local store are
    named by their settings."""
    host, _, port = endpoint.rpartition(":") if ":" in endpoint else (endpoint, "", "")
    any_port = r"\d+"
    forms = [rf"host='{re.escape(host)}', port={re.escape(port) if port else any_port}", re.escape(endpoint)]
    return re.sub(rf"(?<![\w.-])(?:{'|'.join(forms)})(?![\w-])", setting, text)


class EvidenceStore(Protocol):
    """What intake, review and dispatch need from evidence storage."""

    def put_bundle(self, case_id: str, bundle_dir: Path) -> str:
        """Store (or replace) a case's bundle; returns its reference."""

    def fetch_bundle(self, ref: str, dest: Path) -> Path:
        """Copy a stored bundle into `dest` (created); returns `dest`."""

    def url(self, ref: str, rel_path: str, expires: timedelta | None = None) -> str:
        """A URL from which a dispatch system can GET one artifact of the bundle."""

    def read_bytes(self, ref: str, rel_path: str) -> bytes:
        """One file of a stored bundle (e.g. its manifest)."""

    def bundle_bytes(self, ref: str) -> int:
        """The bytes a stored bundle holds, every file of it (0 when none is stored there)."""

    def remove_bundle(self, ref: str) -> int:
        """Delete a stored bundle whole, every file of it (the blurred `shared/` copies, which dispatch attachments are,
        included); returns the bytes freed, 0 when it was gone already."""


#: The backend that writes each reference scheme, and what to call its references.
REFERENCE_KINDS = {"file": ("local", "a local reference"), "s3": ("s3", "an S3 reference")}


def other_backends_reference(ref: str, backend: str) -> str | None:
    """Why the `backend` store cannot take `ref` when the other backend wrote it (an S3 reference while
    evidence_store.backend is local, a file:// one while it is s3), or None: said so, not as a malformed reference,
    the settings being what to change."""
    written_by, kind = REFERENCE_KINDS.get(urlparse(ref).scheme, (backend, ""))
    return None if written_by == backend else f"{ref} is {kind}, but evidence_store.backend is {backend}"


def content_type(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def _files(bundle_dir: Path) -> list[str]:
    """Relative POSIX paths of a bundle's files, manifest and signature last."""
    if not (bundle_dir / MANIFEST).is_file():
        raise StorageError(f"{bundle_dir}: not an evidence bundle (no {MANIFEST})")
    files = [p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()]
    return sorted(files, key=lambda p: (p in (MANIFEST, SIGNATURE), p == MANIFEST, p))


class LocalEvidenceStore:
    """Bundles under `root/<case id>/`; a replaced bundle is swapped in with renames.

    `url_key` (the deployment's `service.url_key()`) signs the `public_base_url` URLs with their expiry,
    as the API's `/attachments` route requires when it has the same key; without it they carry none."""

    def __init__(self, root: Path, public_base_url: str | None = None, url_key: bytes | None = None):
        self.root = Path(root).resolve()
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.signer = UrlSigner(url_key, int(MAX_PRESIGN.total_seconds())) if url_key else None

    def put_bundle(self, case_id: str, bundle_dir: Path) -> str:
        files = _files(Path(bundle_dir))
        final = self.root / case_id
        tmp = self.root / f".{case_id}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            tmp.mkdir(parents=True)
            for rel in files:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(bundle_dir) / rel, tmp / rel)
            old = None
            if final.exists():
                old = self.root / f".{case_id}.{uuid.uuid4().hex[:8]}.old"
                final.rename(old)
            tmp.rename(final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StorageError(f"case {case_id}: cannot write evidence to {final}: {exc}") from exc
        return final.as_uri()

    def path(self, ref: str) -> Path:
        parsed = urlparse(ref)
        if parsed.scheme != "file":
            raise StorageError(other_backends_reference(ref, "local") or f"{ref}: not a local evidence reference")
        return Path(url2pathname(parsed.path))

    def fetch_bundle(self, ref: str, dest: Path) -> Path:
        src = self.path(ref)
        try:
            shutil.copytree(src, dest, dirs_exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{ref}: cannot read evidence: {exc}") from exc
        return dest

    def read_bytes(self, ref: str, rel_path: str) -> bytes:
        try:
            return (self.path(ref) / rel_path).read_bytes()
        except OSError as exc:
            raise StorageError(f"{ref}: cannot read {rel_path}: {exc}") from exc

    def bundle_bytes(self, ref: str) -> int:
        folder = self.path(ref)
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0

    def remove_bundle(self, ref: str) -> int:
        folder = self.path(ref)
        if not folder.is_dir():
            return 0
        size = self.bundle_bytes(ref)
        # renamed aside first, as `put_bundle` swaps bundles: a reader finds the whole bundle or none
        trash = self.root / f".{folder.name}.{uuid.uuid4().hex[:8]}.old"
        try:
            folder.rename(trash)
            shutil.rmtree(trash)
        except OSError as exc:
            raise StorageError(f"{ref}: cannot remove evidence: {exc}") from exc
        return size

    def url(self, ref: str, rel_path: str, expires: timedelta | None = None) -> str:
        path = self.path(ref)
        if not self.public_base_url:
            return (path / rel_path).as_uri()
        url = f"{self.public_base_url}/{quote(path.name)}/{quote(rel_path)}"
        if self.signer is None:
            return url
        seconds = None if expires is None else expires.total_seconds()
        return f"{url}?{self.signer.query(path.name, rel_path, scope=ATTACHMENT, expiry_s=seconds)}"


class S3EvidenceStore:
    """Bundles as objects `<prefix>/<case id>/<path>` in one bucket, through the `minio` client."""

    def __init__(self, settings: S3Settings, access_key: str | None = None, secret_key: str | None = None):
        import urllib3
        from minio import Minio

        self.settings = settings
        access_key = access_key if access_key is not None else os.environ.get(settings.access_key_env)
        secret_key = secret_key if secret_key is not None else os.environ.get(settings.secret_key_env)
        if not access_key or not secret_key:
            raise StorageError(f"evidence_store.s3: set the environment variables {settings.access_key_env} and "
                               f"{settings.secret_key_env} (access_key_env, secret_key_env) to the S3 access key and secret key")
        retry = urllib3.Retry(total=settings.retries, backoff_factor=settings.backoff_s,
                              status_forcelist=[500, 502, 503, 504])
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=settings.connect_timeout_s,
                                                           read=settings.read_timeout_s), retries=retry)
        self.client = Minio(settings.endpoint, access_key=access_key, secret_key=secret_key, secure=settings.secure,
                            region=settings.region, http_client=http)
        self.bucket = settings.bucket
        self._bucket_ready = False

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        if not self.client.bucket_exists(self.bucket):
            from minio.error import S3Error

            try:
                self.client.make_bucket(self.bucket, location=self.settings.region)
            except S3Error as exc:  # created by another process meanwhile
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        self._bucket_ready = True

    def _prefix(self, case_id: str) -> str:
        return f"{self.settings.prefix.strip('/')}/{case_id}/".lstrip("/")

    def _key(self, ref: str, rel_path: str = "") -> str:
        parsed = urlparse(ref)
        if parsed.scheme != "s3" or parsed.netloc != self.bucket:
            raise StorageError(other_backends_reference(ref, "s3") or f"{ref}: not a reference into s3://{self.bucket}")
        return parsed.path.lstrip("/").rstrip("/") + "/" + rel_path

    def put_bundle(self, case_id: str, bundle_dir: Path) -> str:
        files = _files(Path(bundle_dir))
        prefix = self._prefix(case_id)
        try:
            self._ensure_bucket()
            for rel in files:
                self.client.fput_object(self.bucket, prefix + rel, str(Path(bundle_dir) / rel), content_type=content_type(rel))
            # A re-stored (updated) bundle may have dropped artifacts: remove them after the new manifest is in.
            stale = [o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                     if o.object_name[len(prefix):] not in files]
            for name in stale:
                self.client.remove_object(self.bucket, name)
        except Exception as exc:  # minio raises S3Error, urllib3 MaxRetryError, OSError ...
            raise StorageError(f"case {case_id}: cannot store evidence in s3://{self.bucket}/{prefix}: {_reason(exc)}") from exc
        return f"s3://{self.bucket}/{prefix.rstrip('/')}"

    def fetch_bundle(self, ref: str, dest: Path) -> Path:
        prefix = self._key(ref)
        try:
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                rel = obj.object_name[len(prefix):]
                if unsafe := _unsafe_key(rel):
                    raise StorageError(f"{ref}: object {obj.object_name!r} {unsafe}: not a file of a bundle we store; "
                                       "nothing fetched")
                self.client.fget_object(self.bucket, obj.object_name, str(Path(dest) / rel))
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"{ref}: cannot fetch evidence: {_reason(exc)}") from exc
        if not (Path(dest) / MANIFEST).is_file():
            raise StorageError(f"{ref}: no bundle stored there")
        return Path(dest)

    def read_bytes(self, ref: str, rel_path: str) -> bytes:
        key = self._key(ref, rel_path)
        try:
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()
        except Exception as exc:
            raise StorageError(f"{ref}: cannot read {rel_path}: {_reason(exc)}") from exc

    def _objects(self, ref: str) -> list[tuple[str, int]]:
        """The (key, size) of each object of the bundle at `ref`."""
        prefix = self._key(ref)
        return [(o.object_name, o.size or 0) for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)]

    def bundle_bytes(self, ref: str) -> int:
        try:
            return sum(size for _, size in self._objects(ref))
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"{ref}: cannot list evidence: {_reason(exc)}") from exc

    def remove_bundle(self, ref: str) -> int:
        try:
            objects = self._objects(ref)
            # the manifest first: a reader that finds no manifest finds no bundle, never a half of one
            for key, _ in sorted(objects, key=lambda o: (not o[0].endswith("/" + MANIFEST), o[0])):
                self.client.remove_object(self.bucket, key)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"{ref}: cannot remove evidence: {_reason(exc)}") from exc
        return sum(size for _, size in objects)

    def url(self, ref: str, rel_path: str, expires: timedelta | None = None) -> str:
        expires = expires or timedelta(seconds=self.settings.url_expiry_s)
        if expires > MAX_PRESIGN:
            raise StorageError(f"presigned URLs live at most {MAX_PRESIGN.days} days, asked for {expires}")
        return self.client.presigned_get_object(self.bucket, self._key(ref, rel_path), expires=expires)


def _unsafe_key(rel: str) -> str | None:
    """Why an object's path inside a bundle cannot be a file of it (a `..`, `.` or empty segment: written by
    someone else, it would land outside the fetched bundle, and minio refuses it with a bare ValueError); None if fine."""
    for segment in ("..", ".", ""):
        if segment in rel.split("/"):
            return f"has a {segment!r} path segment" if segment else "has an empty path segment (a leading or doubled /)"
    return None


def _reason(exc: Exception) -> str:
    """The root cause in one line (urllib3's MaxRetryError wraps the connection error)."""
    cause = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {cause or exc}"


def open_evidence_store(config: EvidenceStoreConfig | None = None, url_key: bytes | None = None) -> EvidenceStore:
    """The configured store; `url_key` (`settings.service.url_key()`) signs a local store's attachment URLs."""
    config = config or EvidenceStoreConfig()
    if config.backend == "s3":
        assert config.s3 is not None
        return S3EvidenceStore(config.s3)
    return LocalEvidenceStore(config.local_root, config.public_base_url, url_key)
