"""Signed, expiring URLs for evidence files served by the API from a local evidence store.

Two kinds of URL carry their own permission, because their reader cannot send a token: the case
detail's image links (`/evidence/...`: an `<img src>` sends no Authorization header) and the
attachment URLs a dispatched case sends to a city platform (`public_base_url/<case>/<path>`,
served by `/attachments/...`). Both carry an expiry time and an HMAC over the scope, the case id,
the file's bundle path and that time, so a URL cannot be edited to reach another file, live
longer or be used on the other route. With S3 storage the store's presigned URLs are used
instead (same idea, signed by the storage server's credentials).

It lives in `pipelines` (not `api`) because `streetwatch dispatch run`, a process of its own,
signs the attachment URLs that `streetwatch serve` checks: both build a signer from the same
settings (`service.url_key_env`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from enum import StrEnum
from urllib.parse import quote

EVIDENCE = "evidence"
"""Scope of the case detail's links (`/evidence/<case>/<path>`)."""
ATTACHMENT = "attachment"
"""Scope of the attachment URLs sent with a dispatched case (`/attachments/<case>/<path>`)."""
SIGNED_ROUTES = ("/evidence/", "/attachments/")
"""Where the URLs served carry their own permission (`sig`): a log that keeps their query hands it out."""
_SIG = re.compile(r"(?<=[?&])sig=[^&#]*")


class LinkRefusal(StrEnum):
    """Why a signed URL is refused: the value in English (what clients parse), `zh` for the staff who see it."""

    NOT_SIGNED = "link not signed (no exp and sig)"
    EXPIRED = "link expired"
    BAD_SIGNATURE = "bad signature"

    @property
    def zh(self) -> str:
        return {"NOT_SIGNED": "链接未签名（缺少 exp 和 sig）", "EXPIRED": "链接已过期", "BAD_SIGNATURE": "签名无效"}[self.name]


class UrlSigner:
    """Signs and checks `exp` + `sig` query parameters with one key.

    No key given: a random one, so only this process can check what it signed (fine for the case
    detail of one server, useless across processes)."""

    def __init__(self, key: bytes | None, expiry_s: int):
        self.key = key or secrets.token_bytes(32)
        self.expiry_s = expiry_s

    def _sig(self, scope: str, case_id: str, path: str, exp: int) -> str:
        return hmac.new(self.key, f"{scope}\n{case_id}\n{path}\n{exp}".encode(), hashlib.sha256).hexdigest()

    def query(self, case_id: str, path: str, *, scope: str = EVIDENCE, expiry_s: float | None = None,
              now: float | None = None) -> str:
        """`exp=<unix time>&sig=<hex>` for one file, valid `expiry_s` seconds (default: the signer's)."""
        exp = int((now or time.time()) + (self.expiry_s if expiry_s is None else expiry_s))
        return f"exp={exp}&sig={self._sig(scope, case_id, path, exp)}"

    def url(self, case_id: str, path: str, now: float | None = None) -> str:
        """The case detail's link to one evidence file."""
        return f"/evidence/{quote(case_id)}/{quote(path)}?{self.query(case_id, path, now=now)}"

    def check(self, case_id: str, path: str, exp: int | None, sig: str | None, *, scope: str = EVIDENCE,
              now: float | None = None) -> LinkRefusal | None:
        """None when the URL is valid, else why not."""
        if exp is None or not sig:
            return LinkRefusal.NOT_SIGNED
        if exp < (now or time.time()):
            return LinkRefusal.EXPIRED
        if not hmac.compare_digest(sig.encode(), self._sig(scope, case_id, path, exp).encode()):  # bytes: any text is comparable
            return LinkRefusal.BAD_SIGNATURE
        return None


def mask_signature(target: str) -> str:
    """A request target (path and query) as a log may keep it: the `sig` of a signed route's URL written `***`.
    A signed attachment link opens its file for days (`attachment_expiry_s`) to whoever reads the access log; the
    expiry is kept (when a 403 says the link expired, the log shows when it did). Other routes' queries are kept."""
    if not target.startswith(SIGNED_ROUTES):
        return target
    return _SIG.sub("sig=***", target)
