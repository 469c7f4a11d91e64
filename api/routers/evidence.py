"""Evidence files behind signed, expiring URLs (local evidence store; S3 uses presigned URLs).

The URL's signature is the permission (see api/signing.py): it was handed out by the case detail
to a caller whose role was checked. Only files listed in the case's signed manifest are served;
the path in the URL is looked up in that list, never joined onto a folder by itself.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Query, Response

from api.context import AppContext, get_ctx
from api.problems import Problem, problems
from detect.evidence import MANIFEST
from pipelines.evidence_store import StorageError

router = APIRouter(tags=["evidence"])


@router.get("/evidence/{case_id}/{path:path}", summary="One evidence file (signed URL from the case detail)",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}, **problems(403, 404)})
def evidence_file(case_id: str, path: str, exp: int = Query(ge=0, le=2**40), sig: str = Query(max_length=128),
                  ctx: AppContext = Depends(get_ctx)) -> Response:
    why = ctx.signer.check(case_id, path, exp, sig)
    if why is not None:
        raise Problem(403, f"evidence link refused: {why}; reload the case for a fresh link", slug="bad-link")
    case = ctx.store.get(case_id)
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
                    headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"})


@router.get("/attachments/{case_id}/{path:path}", summary="A dispatched case's attachment (for the dispatch platform)",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}, **problems(404)})
def attachment(case_id: str, path: str, ctx: AppContext = Depends(get_ctx)) -> Response:
    """What `evidence_store.public_base_url` points at for a local evidence store: the platform fetches the
    attachments named in the case payload. Only a case that was queued for dispatch, and only the files
    its manifest lists under `dispatch_attachments` (the blurred copies when privacy is on) are served."""
    case = ctx.store.get(case_id)
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
    return Response(data, media_type=kind or "application/octet-stream", headers={"X-Content-Type-Options": "nosniff"})
