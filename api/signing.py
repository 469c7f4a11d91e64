"""Signed, expiring URLs for evidence files served by the API (local evidence store).

An `<img src>` cannot send an Authorization header, so the case detail (which did check the
caller's role) hands out URLs that carry their own permission: an expiry time and an HMAC over
the case id, the file's bundle path and that time. Nothing else is accepted, so a URL cannot be
edited to reach another file or live longer. With S3 storage the store's presigned URLs are used
instead (same idea, signed by the storage server's credentials).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import quote


class UrlSigner:
    def __init__(self, key: bytes | None, expiry_s: int):
        # No configured key: a random one per process (URLs die with the process; fine for one server).
        self.key = key or secrets.token_bytes(32)
        self.expiry_s = expiry_s

    def _sig(self, case_id: str, path: str, exp: int) -> str:
        return hmac.new(self.key, f"{case_id}\n{path}\n{exp}".encode(), hashlib.sha256).hexdigest()

    def url(self, case_id: str, path: str, now: float | None = None) -> str:
        exp = int((now or time.time()) + self.expiry_s)
        return f"/evidence/{quote(case_id)}/{quote(path)}?exp={exp}&sig={self._sig(case_id, path, exp)}"

    def check(self, case_id: str, path: str, exp: int, sig: str, now: float | None = None) -> str | None:
        """None when the URL is valid, else why not."""
        if exp < (now or time.time()):
            return "link expired"
        if not hmac.compare_digest(sig.encode(), self._sig(case_id, path, exp).encode()):  # bytes: any text is comparable
            return "bad signature"
        return None
