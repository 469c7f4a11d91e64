"""Cameras as the API sees them: the cameras file and scene files `streetwatch watch` runs, plus the
health the watcher reports.

`serve` and `watch` are separate processes; they share files, nothing else:

- the cameras file (`service.cameras_file`) and each camera's scene file: read here, and a scene
  written here (validated exactly like a file at start-up) is picked up by the watcher's reload;
- the watcher's events file (`watch --events FILE`, `service.camera_events`): JSON lines of
  `camera_status` and `camera_health` records, folded here into the latest status and the active
  health conditions per camera (read incrementally, from where the last read stopped);
- `service.snapshot_dir/<camera id>.jpg`: the latest frame, if a watcher writes one; otherwise
  the scene's reference snapshot is shown.

Paths come from those files only; a client names a camera id, which must be in the cameras file.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Literal

import yaml

from detect.config_io import (ConfigError, FieldError, Same, load_model, loaded_file, read_mapping, replaced_atomically, validate_model,
                              write_text_atomic)
from detect.grades import Grades
from detect.scenes import Scene, ZoneRules, check_scene
from detect.taxonomy import Taxonomy
from pipelines.cctv.config import CameraConfig, CamerasFile, file_grades
from pipelines.cctv.reader import CameraStatus, Status
from pipelines.times import written_time


READER_STARTS_OR_ENDS = {Status.STARTING, Status.STOPPED, Status.FINISHED, Status.FAILED, Status.REFUSED, Status.LEFT_BEHIND}
"""Statuses that start or end a camera's reader. Its health conditions are its own: a new reader starts with none
and would never end those an earlier one left active (offline, frozen), so they end here (`left_behind`: the driver
exits after it, and the owner's actor with it)."""


class CameraNotFound(KeyError):
    def __str__(self) -> str:
        return f"no camera {self.args[0]!r} in the cameras file"


class CameraEvents:
    """Latest status and active health conditions per camera, from the watcher's JSON-lines file."""

    def __init__(self, path: Path | None):
        self.path = path
        self.offset = 0
        self.status: dict[str, CameraStatus] = {}
        self.health: dict[str, dict[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def refresh(self) -> None:
        if self.path is None or not self.path.is_file():
            return
        with self._lock:
            size = self.path.stat().st_size
            if size < self.offset:  # rotated or truncated: start over
                self.offset, self.status, self.health = 0, {}, {}
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                for raw in fh:
                    if not raw.endswith(b"\n"):
                        break  # being written; read it next time
                    self.offset += len(raw)
                    self._apply(raw)

    def _apply(self, raw: bytes) -> None:
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return
        if not isinstance(record, dict) or "camera_id" not in record:
            return
        cid = str(record["camera_id"])
        if (status := CameraStatus.from_record(record)) is not None:
            self.status[cid] = status
            if status.status in READER_STARTS_OR_ENDS:
                self.health.pop(cid, None)
        elif record.get("event") == "camera_health":
            conditions = self.health.setdefault(cid, {})
            if record.get("active"):
                conditions[str(record.get("kind"))] = {"since": _since(record.get("at")), "detail": record.get("detail")}
            else:
                conditions.pop(str(record.get("kind")), None)

    def of(self, camera_id: str) -> dict[str, Any]:
        status = self.status.get(camera_id)
        conditions = self.health.get(camera_id, {})
        return {"status": str(status.status) if status else "unknown", "detail": status.detail if status else None,
                "since": status.at.isoformat() if status and status.at else None,
                "conditions": [{"kind": k, **v} for k, v in sorted(conditions.items())]}


def _since(at: Any) -> str | None:
    """A condition's start as the API gives it: in UTC, as the events file holds it now (an older file's +08:00 too);
    a value that is no time is passed on as written."""
    try:
        return written_time(str(at)).isoformat() if at else None
    except ValueError:
        return str(at)


class Cameras:
    def __init__(self, cameras_file: Path | None, events: Path | None, snapshot_dir: Path | None, taxonomy: Taxonomy):
        self.file, self.snapshot_dir, self.taxonomy = cameras_file, snapshot_dir, taxonomy
        self.events = CameraEvents(events)
        self._write_lock = threading.Lock()

    def configs(self) -> list[CameraConfig]:
        """The cameras file's cameras, read once per change of the file (`loaded_file`): each camera's scene, snapshot
        and scene file read it again, a page of 200 cameras 200 times."""
        if self.file is None:
            return []
        return loaded_file(_cameras_file, self.file).cameras

    def unusable(self) -> str | None:
        """Why the cameras file cannot be read (for the start-up log), or None. While it cannot, it is read again at
        every request, so a broken one does not stop `serve`; but it was found only when someone opened the cameras
        page (a 503)."""
        try:
            self.configs()
        except ConfigError as exc:
            return (f"service.cameras_file: {exc}; the cameras routes and page answer 503 until it is fixed "
                    "(it is read again at each request)")
        return None

    def grades(self) -> Grades | None:
        """The road grades the cameras file names for its scenes (None: the shipped ones), as the watcher loads them;
        read once per change of the cameras file or the grades file (`loaded_file`)."""
        assert self.file is not None
        return loaded_file(_file_grades, self.file, Same(self.taxonomy))

    def config(self, camera_id: str) -> CameraConfig:
        for cfg in self.configs():
            if cfg.id == camera_id:
                return cfg
        raise CameraNotFound(camera_id)

    def scene_path(self, cfg: CameraConfig) -> Path:
        assert self.file is not None
        return cfg.scene if cfg.scene.is_absolute() else self.file.parent / cfg.scene

    def summary(self) -> list[dict[str, Any]]:
        """Every camera with its health, scene and snapshot. The cameras file and its road grades are read once for
        the list: read again for each camera's scene and snapshot (three times a camera), 200 cameras took 90 s."""
        self.events.refresh()
        configs = self.configs()
        try:
            grades: Grades | None | ConfigError = self.grades() if configs else None
        except ConfigError as exc:  # each scene is checked with the grades: each says why it cannot be
            grades = exc
        out = []
        for cfg in configs:
            item = {"id": cfg.id, "enabled": cfg.enabled, "analysis_fps": cfg.analysis_fps,
                    "health": self.events.of(cfg.id), "scene_error": None, "name": None, "zones": 0}
            scene = None
            try:
                scene = self._load_scene(cfg, grades)
                item.update(name=scene.name, zones=len(scene.zones), grid_cell=scene.grid_cell,
                            address=scene.location.address if scene.location else None)
            except ConfigError as exc:
                item["scene_error"] = str(exc)
            item["has_snapshot"] = self._snapshot(cfg, lambda: scene) is not None
            out.append(item)
        return out

    def _load_scene(self, cfg: CameraConfig, grades: Grades | ConfigError | Literal["read"] | None = "read") -> Scene:
        """The camera's scene, checked with the cameras file's road grades: read now (`"read"`), else `grades` as read
        before (a ConfigError: why they could not be, raised once the scene itself reads, as when read now)."""
        path = self.scene_path(cfg)
        if isinstance(grades, str):
            try:
                grades = self.grades()
            except ConfigError as exc:
                grades = exc
        if isinstance(grades, ConfigError):
            load_model(Scene, path)  # a scene that cannot be read says so first
            raise grades
        return loaded_file(_checked_scene, path, Same(self.taxonomy), Same(grades))

    def zone(self, camera_id: str, zone_id: str) -> ZoneRules | None:
        """Zone `zone_id` of the camera's scene as the watcher loads it (its road grade folded in), what the rules
        judged the camera's cases there by; None when no cameras file is set or the camera or zone is no longer in
        it. ConfigError when the cameras file or the scene cannot be read."""
        if self.file is None:
            return None
        try:
            scene = self._load_scene(self.config(camera_id))
        except CameraNotFound:
            return None
        return next((z for z in scene.zones if z.id == zone_id), None)

    def scene(self, camera_id: str) -> dict[str, Any]:
        """The scene file as written (times stay 'HH:MM'), validated."""
        cfg = self.config(camera_id)
        self._load_scene(cfg)
        return read_mapping(self.scene_path(cfg))

    def scene_file(self, camera_id: str) -> dict[str, Any]:
        """The scene file as written and why it is refused, if it is: a file hand-edited into an invalid scene, which
        `scene` refuses, can be loaded to be fixed (`text`; `scene`, unvalidated, where it reads as a mapping)."""
        cfg = self.config(camera_id)
        path = self.scene_path(cfg)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError):  # missing, or not UTF-8 text: the error says which
            text = None
        try:
            mapping = read_mapping(path)
        except ConfigError:
            mapping = None
        try:
            self._load_scene(cfg)
            error = None
        except ConfigError as exc:
            error = str(exc)
        return {"text": text, "scene": mapping, "error": error}

    def put_scene(self, camera_id: str, data: dict[str, Any],
                  audit: Callable[[dict[str, Any]], AbstractContextManager[object]] | None = None) -> dict[str, Any]:
        """Validate like a scene file, then replace the file atomically (the watcher reloads it).

        `audit(data)`, called once `data` is found valid: the transaction holding the change's audit record
        (`Accounts.recorded`), entered (the record written) before the file is replaced and left (committed) after. A
        record that cannot be written leaves the file as it was; a commit that fails puts the previous file back. So a
        scene never stays changed without its record (a watcher may load the new one in between, then the old again);
        recorded after the file was replaced, a record that could not be written left the change standing unrecorded,
        the admin answered an error. A check the scene model cannot make refuses a field of `data` (`FieldError`: an
        unknown violation type or road grade, another camera's id, a changed `reference_snapshot`)."""
        cfg = self.config(camera_id)
        path = self.scene_path(cfg)
        source = f"scene of camera {camera_id}"
        scene = check_scene(validate_model(Scene, data, source), source, self.taxonomy, self.grades())
        if scene.camera_id != camera_id:
            raise FieldError(source, "camera_id", f"is {scene.camera_id!r}, must be {camera_id!r}")
        current = read_mapping(path).get("reference_snapshot") if path.is_file() else None
        if data.get("reference_snapshot") != current:
            raise FieldError(source, "reference_snapshot", f"cannot be changed through the API (it is {current!r})")
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
        with self._write_lock:
            previous = path.read_bytes() if path.is_file() else None
            replaced = False
            try:
                with audit(data) if audit is not None else nullcontext():
                    write_text_atomic(path, text)
                    replaced = True
            except BaseException:
                if replaced:
                    _put_back(path, previous)
                raise
        return data

    def snapshot(self, camera_id: str) -> Path | None:
        """The watcher's latest frame, else the scene's reference snapshot, else None."""
        cfg = self.config(camera_id)
        return self._snapshot(cfg, lambda: self._load_scene(cfg))

    def _snapshot(self, cfg: CameraConfig, scene: Callable[[], Scene | None]) -> Path | None:
        """`snapshot` of `cfg`, its scene (None: unusable) asked for only when there is no latest frame."""
        if self.snapshot_dir is not None:
            latest = self.snapshot_dir / f"{cfg.id}.jpg"  # cfg.id matches ^[A-Za-z0-9_.-]+$
            if latest.is_file() and latest.parent == self.snapshot_dir:
                return latest
        try:
            loaded = scene()
        except ConfigError:
            return None
        reference = loaded.reference_snapshot if loaded is not None else None
        if reference:
            path = Path(reference) if Path(reference).is_absolute() else self.scene_path(cfg).parent / reference
            return path if path.is_file() else None
        return None


def _cameras_file(path: Path) -> CamerasFile:
    """The cameras file at `path` (`loaded_file`'s loader: a function of its own, its key)."""
    return load_model(CamerasFile, path)


def _file_grades(path: Path, taxonomy: Taxonomy) -> Grades | None:
    """The road grades the cameras file at `path` names, as the watcher loads them (`file_grades`)."""
    return file_grades(load_model(CamerasFile, path), path, taxonomy)


def _checked_scene(path: Path, taxonomy: Taxonomy, grades: Grades | None) -> Scene:
    """The scene file at `path` checked as the watcher checks it with `grades` (`check_scene`): kept per change of the
    file (`loaded_file`), as checking a scene took 20-40 ms, each camera of the list on each request."""
    return check_scene(load_model(Scene, path), str(path), taxonomy, grades)


def _put_back(path: Path, previous: bytes | None) -> None:
    """The file at `path` as it was (`previous`: its bytes, None: there was none), replaced atomically."""
    if previous is None:
        path.unlink(missing_ok=True)
        return
    with replaced_atomically(path) as tmp:
        tmp.write_bytes(previous)
