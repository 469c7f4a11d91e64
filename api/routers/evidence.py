"""Evidence files behind signed, expiring URLs (local evidence store; S3 uses presigned URLs), and
the public keys that let anyone verify a bundle.

The URL's signature is the permission (see pipelines/url_signing.py): an evidence link was handed
out by the case detail to a caller whose role was checked, an attachment URL was sent with a
dispatched case to its platform. Only files listed in the case's signed manifest are served;
the path in the URL is looked up in that list, never joined onto a folder by itself.

The public signing keys (`keys_router`, under /api/v1) need no token: they are public by nature,
and a court or a dispatch platform checks bundles with them (`streetwatch evidence verify
--public-key`) without any secret of ours.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, Field

from api.context import AppContext, get_ctx
from api.problems import Problem, problems
from detect.evidence import MANIFEST
from detect.evidence.config import EvidenceKeyError
from detect.evidence.keys import published_keys
from pipelines.cases.store import evidence_removed
from pipelines.evidence_store import StorageError
from pipelines.url_signing import ATTACHMENT, LinkRefusal

router = APIRouter(tags=["evidence"])
keys_router = APIRouter(tags=["evidence"])


class PublicKeyDoc(BaseModel):
    key_id: str = Field(description="First 16 hex digits of the SHA-256 of the raw public key; signature.json names it.")
    algorithm: str = Field(description="Ed25519.")
    current: bool = Field(description="True for the key signing new bundles; false for keys kept after a rotation.")
    public_key_pem: str = Field(description="The public key, PEM (SubjectPublicKeyInfo).")


class PublicKeysDoc(BaseModel):
    keys: list[PublicKeyDoc] = Field(description="Every key bundles may be signed with; empty when none is configured.")
    signed: str = Field(description="What the public-key signature in signature.json covers.")


#: Headers of every evidence or attachment file served: never typed by the browser from its bytes, kept by no browser,
#: and opened as a page, in a sandbox of no origin, without scripts: a bundle stored before disposal photos were named by
#: their format kept one sent as `after.html` (a JPEG holding a script) as text/html, which opened in the service's own
#: origin, where the pages keep the token.
FILE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}


def _refused(link_zh: str, link_en: str, why: LinkRefusal, then_zh: str = "", then_en: str = "") -> Problem:
    """403 for a signed link that does not hold, in Chinese and English as `authorize` words its 403 (staff see the
    detail on the pages as it comes); the English part, `<link> link refused: <why>`, stays what clients parse."""
    return Problem(403, f"{link_zh}被拒绝：{why.zh}{then_zh} {link_en} link refused: {why}{then_en}", slug="bad-link")


def _keys(ctx: AppContext) -> list:
    try:
        return published_keys(ctx.settings.evidence)
    except EvidenceKeyError as exc:
        # public: the key file named by its setting, never by its server path
        raise Problem(503, f"evidence signing keys unavailable: {ctx.settings.named_by_setting(str(exc))}",
                      slug="keys-unavailable") from None


@keys_router.get("/evidence/keys", summary="Public keys that verify evidence bundles (no token needed)",
                 response_model=PublicKeysDoc, responses=problems(503))
def public_keys(ctx: AppContext = Depends(get_ctx)) -> PublicKeysDoc:
    return PublicKeysDoc(keys=[PublicKeyDoc(**k.as_dict()) for k in _keys(ctx)],
                         signed="Ed25519 over the 64 hex characters (ASCII) of the SHA-256 of manifest.json")


@keys_router.get("/evidence/keys/{key_id}.pem", summary="One public key as a PEM file (for `evidence verify --public-key`)",
                 response_class=Response, responses={200: {"content": {"application/x-pem-file": {}}}, **problems(404, 503)})
def public_key_pem(key_id: str = Path(pattern="^[0-9a-f]{16}$"), ctx: AppContext = Depends(get_ctx)) -> Response:
    for key in _keys(ctx):
        if key.key_id == key_id:
            return Response(str(key.as_dict()["public_key_pem"]), media_type="application/x-pem-file",
                            headers={"Content-Disposition": f'attachment; filename="streetwatch-evidence-{key_id}.pem"'})
    raise Problem(404, f"no evidence signing key {key_id} is published here")


@router.get("/evidence/{case_id}/{path:path}", summary="One evidence file (signed URL from the case detail)",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}, **problems(403, 404)})
def evidence_file(case_id: str, path: str, exp: int = Query(ge=0, le=2**40), sig: str = Query(max_length=128),
                  ctx: AppContext = Depends(get_ctx)) -> Response:
    why = ctx.signer.check(case_id, path, exp, sig)
    if why is not None:
        raise _refused("证据链接", "evidence", why, "，请重新打开案件获取新链接", "; reload the case for a fresh link")
    case = ctx.store.get(case_id)
    if case.evidence_removed_at is not None:
        raise Problem(404, f"case {case_id}: {evidence_removed(case)}")
    if case.evidence_ref is None:
        raise Problem(404, f"case {case_id} has no stored evidence yet")
    try:
        manifest = json.loads(ctx.evidence.read_bytes(case.evidence_ref, MANIFEST))
        listed = {a["path"]: a for a in manifest.get("artifacts", [])}
        if path not in listed:
            raise Problem(404, f"{path!r} is not a file of case {case_id}'s evidence")
        data = ctx.evidence.read_bytes(case.evidence_ref, path)
    except StorageError as exc:
        raise Problem(404, f"evidence of case {case_id} unreadable: {exc}") from None
    return Response(data, media_type=listed[path].get("content_type") or "application/octet-stream",
                    headers=FILE_HEADERS)


@router.get("/attachments/{case_id}/{path:path}", summary="A dispatched case's attachment (signed URL from the case payload)",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}, **problems(403, 404)})
def attachment(case_id: str, path: str, exp: int | None = Query(None, ge=0, le=2**40), sig: str | None = Query(None, max_length=128),
               ctx: AppContext = Depends(get_ctx)) -> Response:
    """What `evidence_store.public_base_url` points at for a local evidence store: the platform fetches the
    attachments named in the case payload. Only a case that was queued for dispatch, and only the files
    its manifest lists under `dispatch_attachments` (the blurred copies when privacy is on) are served.

    The URL's expiry and signature (`service.url_key_env`'s key, which `dispatch run` signs with) are
    required: a missing, bad or expired one is 403, so a case id alone opens nothing. The one exception is
    a deployment that hands out unsigned URLs (`Settings.unsigned_attachments`: `public_base_url` set, no
    URL key, so no process could check another's signature): they are served as before, and the service
    says so at start-up. Without `public_base_url` nobody was given such URLs and none is served unsigned."""
    if ctx.settings.unsigned_attachments() is None:
        why = ctx.signer.check(case_id, path, exp, sig, scope=ATTACHMENT)
        if why is not None:
            raise _refused("附件链接", "attachment", why)
    case = ctx.store.get(case_id)
    if case.evidence_removed_at is not None:
        raise Problem(404, f"case {case_id}: {evidence_removed(case)}")
    if case.dispatch_target is None or case.evidence_ref is None:
        raise Problem(404, f"case {case_id} has no dispatch attachments")
    try:
        manifest = json.loads(ctx.evidence.read_bytes(case.evidence_ref, MANIFEST))
        if path not in manifest.get("dispatch_attachments", []):
            raise Problem(404, f"{path!r} is not a dispatch attachment of case {case_id}")
        data = ctx.evidence.read_bytes(case.evidence_ref, path)
    except StorageError as exc:
        raise Problem(404, f"evidence of case {case_id} unreadable: {exc}") from None
    kind = next((a.get("content_type") for a in manifest.get("artifacts", []) if a["path"] == path), None)
    return Response(data, media_type=kind or "application/octet-stream", headers=FILE_HEADERS)
