"""Cameras and scenes: list with health, get/put a scene (validated like the files), latest snapshot."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from api.accounts import Principal
from api.auth import ADMIN, READ_CAMERAS
from api.cameras import CameraNotFound
from api.context import AppContext, get_ctx
from api.problems import Problem, invalid, problems
from api.uploads import CappedBodyRoute
from detect.config_io import ConfigError, FieldError, json_schema
from detect.scenes import Scene

router = APIRouter(prefix="/cameras", tags=["cameras"], route_class=CappedBodyRoute)


class HealthCondition(BaseModel):
    kind: str = Field(description="frozen, black, covered, moved, infrared, view_lost, resolution_changed ...")
    since: str | None = Field(description="When it became active (ISO 8601).")
    detail: str | None


class CameraHealth(BaseModel):
    status: str = Field(description="The watcher's last status (running, reconnecting, offline, refused ...), or unknown.")
    detail: str | None
    since: str | None
    conditions: list[HealthCondition] = Field(description="Active health conditions.")


class CameraSummary(BaseModel):
    id: str
    enabled: bool
    analysis_fps: float
    health: CameraHealth
    scene_error: str | None = Field(description="Why the camera's scene file is refused (None when valid).")
    name: str | None
    zones: int = Field(description="Zones in its scene.")
    grid_cell: str | None = None
    address: str | None = None
    has_snapshot: bool = Field(description="A snapshot (latest frame or reference image) can be fetched.")


class SceneFile(BaseModel):
    text: str | None = Field(description="The scene file as written (None: it cannot be read as UTF-8 text, e.g. missing).")
    scene: dict[str, Any] | None = Field(
        description="The file read as a mapping, unvalidated (None: not a YAML/JSON mapping): what to fix and PUT back.")
    error: str | None = Field(description="Why the scene is refused (file, field, reason), as GET /cameras' scene_error; None when valid.")


def _camera(fn, *args):
    """Run a cameras call, answering 404 for an unknown camera and 503 when there is no cameras file."""
    try:
        return fn(*args)
    except CameraNotFound as exc:
        raise Problem(404, str(exc), slug="camera-not-found") from None


def _cameras_file(ctx: AppContext) -> None:
    if ctx.cameras.file is None:
        raise Problem(404, "no cameras file is configured (service.cameras_file)", slug="no-cameras")
    try:
        ctx.cameras.configs()
    except ConfigError as exc:
        raise Problem(503, f"cameras file unusable: {ctx.config_error(exc)}", slug="cameras-file") from None


@router.get("", summary="Cameras with their status and health", response_model=list[CameraSummary],
            responses=problems(401, 403))
def list_cameras(ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CAMERAS)) -> list[dict[str, Any]]:
    if ctx.cameras.file is None:
        return []
    _cameras_file(ctx)
    return [{**c, "scene_error": c["scene_error"] and ctx.config_error(c["scene_error"])} for c in ctx.cameras.summary()]


@router.get("/scene-schema", summary="JSON schema of a scene (what PUT .../scene accepts)", response_model=dict[str, Any],
            responses=problems(401, 403))
def scene_schema(_: Principal = Depends(READ_CAMERAS)) -> dict[str, Any]:
    """The same schema as `streetwatch config schema scene` (what a scene file may hold)."""
    return json_schema(Scene)


@router.get("/{camera_id}/scene", summary="A camera's scene file (zones, schedules)", response_model=Scene,
            response_model_exclude_unset=True, responses=problems(401, 403, 404, 422))
def get_scene(camera_id: str, ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CAMERAS)) -> dict[str, Any]:
    _cameras_file(ctx)
    return _camera(ctx.cameras.scene, camera_id)


@router.get("/{camera_id}/scene-file", summary="A camera's scene file as written, and why it is refused (an invalid one too)",
            response_model=SceneFile, responses=problems(401, 403, 404))
def get_scene_file(camera_id: str, ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CAMERAS)) -> dict[str, Any]:
    """GET .../scene refuses an invalid scene (422); this answers its text with the error, so it can be fixed and PUT."""
    _cameras_file(ctx)
    answer = _camera(ctx.cameras.scene_file, camera_id)
    return {**answer, "error": answer["error"] and ctx.config_error(answer["error"])}


@router.put("/{camera_id}/scene", summary="Replace a camera's scene (validated like a scene file; the watcher reloads it)",
            response_model=Scene, response_model_exclude_unset=True, responses=problems(401, 403, 404, 422))
def put_scene(camera_id: str, scene: Scene = Body(description="The scene, as in a scene file (see scene-schema)."),
              ctx: AppContext = Depends(get_ctx), who: Principal = Depends(ADMIN)) -> dict[str, Any]:
    """The body is declared a `Scene`, so /openapi.json types it and a refusal by the model names its field in
    `errors[].loc` (`body.zones.0.polygon`); the file gets the keys it set (times `HH:MM`), as GET answers them.
    What the model cannot check (the taxonomy's types, road grades, the camera's id) is `Cameras.put_scene`'s, refused
    the same way (`body.zones.2.types.0`)."""
    _cameras_file(ctx)
    data = scene.model_dump(mode="json", exclude_unset=True)
    try:
        return _camera(ctx.cameras.put_scene, camera_id, data, lambda valid: ctx.accounts.recorded(
            who, "put_scene", None, {"camera_id": camera_id, "zones": len(valid.get("zones") or [])}))
    except FieldError as exc:  # a field of the body, refused as the model refuses one (`errors[].loc`)
        raise invalid(["body", *exc.field], exc.reason) from None


@router.get("/{camera_id}/snapshot", summary="Latest snapshot (or the scene's reference image)", response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}}}, **problems(401, 403, 404)})
def snapshot(camera_id: str, ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CAMERAS)) -> FileResponse:
    _cameras_file(ctx)
    path = _camera(ctx.cameras.snapshot, camera_id)
    if path is None:
        raise Problem(404, f"no snapshot for camera {camera_id} yet", slug="no-snapshot")
    return FileResponse(path, headers={"Cache-Control": "no-store"})
