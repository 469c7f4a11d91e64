"""The cameras file: which streams to watch, how often to look, and each camera's scene.

One YAML/JSON file (`streetwatch watch --cameras cameras.yaml`) lists the cameras; each names its
scene file (zones, schedules, thresholds: `detect.scenes`). The file is validated through
`detect.config_io` so every error reads `file: field: reason`. A camera whose scene is invalid is
refused on its own (`load_cameras` returns it among the refusals with the scene's message); the
other cameras still start. Only a broken cameras file as a whole stops the service.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from detect.config_io import ConfigError, ConfigModel, load_model, overlay
from detect.grades import Grades, load_grades
from detect.rules import RuleSettings
from detect.scenes import Scene, load_scene
from detect.taxonomy import Taxonomy, load_taxonomy
from detect.tracking import TrackingConfig

CameraId = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]


_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/@:'\"]*):[^\s/@'\"]*@")
"""The password of a URL (`rtsp://admin:PASSWORD@host/...`), as FFmpeg and httpx repeat it in their messages."""

_PASSWORD_PARAM = re.compile(r"(?i)(?P<name>[?&](?:password|passwd|pwd|pass|key|access_token|token|secret|sign)=)[^&\s'\"]*?"
                             r"(?=[&\s'\"]|:\s|:?$)")
"""A password or key in a URL's query (a snapshot CGI's `?usr=admin&pwd=PASSWORD`, a WeCom robot's `?key=KEY`, a DingTalk
robot's `?access_token=TOKEN&sign=SIG`), up to the `: ` of a reason that names the URL."""


def without_password(text: str) -> str:
    """`text` with the password of every URL in it shown as *** (the user stays, so the account can be checked), and
    a key or token in its query: a camera's URL carries a password and a warnings webhook's (WeCom, DingTalk) its key,
    and a reason reaches the log, the events file, the API's health and the pages."""
    return _PASSWORD_PARAM.sub(r"\g<name>***", _PASSWORD.sub(r"\g<scheme>\g<user>:***@", text))


class Backoff(ConfigModel):
    """Reconnect waits: `initial_s`, doubling up to `max_s` (reset once a frame arrives)."""

    initial_s: float = Field(1.0, title="First wait", description="Seconds before the first reconnect attempt.", gt=0)
    max_s: float = Field(60.0, title="Longest wait", description="Cap of the doubling wait between attempts.", gt=0)
    offline_after: int = Field(
        3, title="Offline after", description="Failed attempts in a row after which the camera is reported offline (reconnecting before).", ge=1)
    log_every_s: float = Field(
        600.0, title="Log while offline", description="Past the first `offline_after` failed attempts, each logged, seconds between "
        "the log lines of a camera that stays offline ('still offline for N min, M attempts'); every attempt is still counted "
        "in streetwatch_cctv_reconnect_attempts_total. Streams lost or ended cleanly in a row, each after less than this of "
        "frames (a flapping camera), are logged the same way ('stream lost or ended N times in M min'), each still a "
        "reconnecting health event, and the failed attempts after them are counted on across those losses ('N failed "
        "reconnect attempts after K streams lost or ended').", gt=0)


class HealthConfig(ConfigModel):
    """Camera health checks (events and metrics, never cases)."""

    frozen_s: float = Field(60.0, title="Frozen after", description="Seconds of identical images before the image is reported frozen.", gt=0)
    frozen_tolerance: float = Field(
        3.0, title="Frozen tolerance", description="Grey levels (0-255) a pixel may change by and still count as unchanged; live cameras always show some sensor noise.", ge=0)
    blind_s: float = Field(10.0, title="Blind after", description="Seconds of black or featureless images before the lens is reported black/covered.", gt=0)
    black_level: float = Field(20.0, title="Black level", description="Mean grey level under which an image is black.", ge=0, le=255)
    covered_std: float = Field(6.0, title="Covered contrast", description="Grey-level standard deviation under which an image is featureless (lens covered).", ge=0)
    moved_shift: float = Field(
        0.03, title="Moved shift", description="How far (fraction of the image width) the view may drift from the scene's reference snapshot before it counts as moved.", gt=0, le=1)
    min_matches: int = Field(
        15, title="Matching features", description="Fewer features matching the reference snapshot than this also counts as a moved (or blocked) view.", ge=4)
    moved_s: float = Field(120.0, title="Moved after", description="Seconds the view must stay different before the camera is reported moved.", gt=0)
    infrared_chroma: float = Field(
        2.0, title="Black-and-white level", description="Spread of colour (standard deviation of the chroma channels, 0-255) under which a picture is black-and-white (a camera's infrared night mode): black-and-white photos give under 1, colour streets at night 6 and more; 0 turns the check off (a monochrome or thermal camera).", ge=0, le=255)
    infrared_s: float = Field(60.0, title="Infrared after", description="Seconds of black-and-white pictures before the camera is reported in infrared mode.", gt=0)
    check_every_s: float = Field(5.0, title="Check interval", description="Media seconds between health checks.", gt=0)


class CameraConfig(ConfigModel):
    """One camera."""

    id: CameraId = Field(title="Camera id", description="Source id of its frames and cases; must equal the scene's camera_id.")
    url: str = Field(
        title="Stream URL",
        description="rtsp://..., http(s)://... (MJPEG, HLS .m3u8 or a still-image snapshot URL with snapshot: true), or a local video file path (relative to the cameras file).",
        min_length=1)
    scene: Path = Field(title="Scene file", description="The camera's scene file (zones, schedules), relative to the cameras file.")
    enabled: bool = Field(True, title="Enabled", description="False keeps the camera in the file but does not watch it.")
    snapshot: bool = Field(False, title="Snapshot URL", description="The URL answers one still image per request (polled at the analysis rate).")
    analysis_fps: float = Field(1.0, title="Analysis rate", description="Frames per second analysed (0.2-1 is typical for these slow violations).", gt=0, le=30)
    keyframes_only: bool = Field(
        False, title="Keyframes only",
        description="Decode only key frames (skip_frame=NONKEY): far less CPU; the analysis rate is then at most the stream's key-frame rate.")
    max_side: int | None = Field(1280, title="Resolution cap", description="Frames are scaled so their longer side is at most this many pixels (none: keep).", ge=64)
    decode_threads: int = Field(1, title="Decoder threads", description="Threads per decoder (1 suits many cameras on few cores; raise for a few 4K streams).", ge=0, le=16)
    input_format: str | None = Field(None, title="Input format", description="Force an FFmpeg demuxer (e.g. mpjpeg for MJPEG over HTTP); default: probe.")
    rtsp_transport: str = Field("tcp", title="RTSP transport", description="tcp (default, survives packet loss) or udp.", pattern="^(tcp|udp)$")
    timeout_s: float = Field(10.0, title="Read timeout", description="Seconds without data before the stream counts as dead.", gt=0)
    backoff: Backoff = Field(default_factory=Backoff, title="Reconnect back-off", description="Waits between reconnect attempts.")
    start_time: datetime | None = Field(
        None, title="Media start time",
        description="Wall-clock time of media time 0 for files (naive = the scene's time zone); default: the file's creation_time tag, else its modification time (unless before 2000 or in the future: then now, with a warning).")
    auto_queue: dict[str, str] = Field(
        default_factory=dict, title="Auto-queue",
        description="Violation type (or '*') -> dispatch target: its cases are queued for dispatch without review. Default: none (human review first).")
    ocr_interval_s: float | None = Field(
        None, title="OCR interval", description="Media seconds between text reads for flyposting (none: no OCR). Text boxes are reused until the next read.", gt=0)
    verify_every_s: float = Field(
        30.0, title="Re-check interval", description="Media seconds between re-checks of this camera's cases in `verifying`.", gt=0)
    health: HealthConfig = Field(default_factory=HealthConfig, title="Health checks", description="Frozen, black/covered and moved-camera checks.")
    tracking: TrackingConfig | None = Field(
        None, title="Tracking", description="Tracker knobs for this camera: the fields set here replace the settings file's `tracking` (frame_rate defaults to analysis_fps).")
    rules: RuleSettings | None = Field(
        None, title="Rules", description="Violation lifecycle knobs for this camera: the fields set here replace the settings file's `rules`.")

    def tracking_config(self, defaults: TrackingConfig) -> TrackingConfig:
        """The tracker's knobs: `defaults` (settings file) at this camera's sampling rate, with this camera's own."""
        return overlay(defaults.model_copy(update={"frame_rate": self.analysis_fps}), self.tracking)

    def rule_settings(self, defaults: RuleSettings) -> RuleSettings:
        """The lifecycle knobs: `defaults` (settings file) with this camera's own."""
        return overlay(defaults, self.rules)

    def auto_queue_target(self, violation_type: str) -> str | None:
        return self.auto_queue.get(violation_type) or self.auto_queue.get("*")


class CamerasFile(ConfigModel):
    """The cameras file."""

    cameras: list[CameraConfig] = Field(title="Cameras", description="The cameras to watch.", min_length=1)
    ring_s: float = Field(30.0, title="Ring buffer", description="Seconds of recent frames kept per camera for pre-event evidence.", gt=0)
    queue_size: int = Field(64, title="Queue size", description="Frames waiting for inference at most; when full the oldest is dropped (and counted).", ge=1)
    max_batch: int = Field(8, title="Largest batch", description="Frames the inference worker takes at once (across cameras).", ge=1)
    grades: Path | None = Field(
        None, title="Road grades file", description="The city's road grades file (relative to this file) for scene zones with a `grade`; default: the shipped detect/grades.yaml.")
    batch_wait_s: float = Field(
        0.1, title="Batch wait", description="Seconds the worker waits for a batch to fill once a frame is there (adds at most this to lag).", ge=0, le=2)

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        """Each id once; a file of hundreds of cameras says which entries share one (position, URL without password)."""
        twice = [cid for cid, n in Counter(c.id for c in cameras).items() if n > 1]
        if twice:
            raise ValueError("; ".join(f"duplicate camera id {cid!r}: " + " and ".join(
                f"cameras.{i} ({without_password(c.url)})" for i, c in enumerate(cameras) if c.id == cid) for cid in twice))
        return cameras

    @model_validator(mode="after")
    def _backoff_order(self) -> CamerasFile:
        for i, cam in enumerate(self.cameras):
            if cam.backoff.max_s < cam.backoff.initial_s:
                raise ValueError(f"cameras.{i}.backoff: max_s ({cam.backoff.max_s}) is below initial_s ({cam.backoff.initial_s})")
        return self


@dataclass
class Camera:
    """A camera ready to run: its configuration with paths resolved, its validated scene, and the
    tracker and rule knobs it runs with (the settings file's defaults with the camera's own)."""

    config: CameraConfig
    scene: Scene
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    rules: RuleSettings = field(default_factory=RuleSettings)

    @property
    def id(self) -> str:
        return self.config.id


@dataclass
class LoadedCameras:
    """What a cameras file yields: cameras that can run, and refusals (camera id -> message)."""

    file: CamerasFile
    cameras: list[Camera] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    scene_files: list[Path] = field(default_factory=list)  # watched for changes (reload)


def _resolve(base: Path, value: str | Path) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


def is_url(url: str) -> bool:
    return "://" in url


def file_grades(file: CamerasFile, path: str | Path, taxonomy: Taxonomy) -> Grades | None:
    """The road grades the cameras file at `path` names for its scenes (relative to it); None: the shipped ones."""
    return load_grades(_resolve(Path(path).parent, file.grades), taxonomy) if file.grades else None


def named_files(file: CamerasFile, path: str | Path) -> list[tuple[str, Path]]:
    """(name, file) of the files the cameras file at `path` names (each camera's scene, its road grades file), as the
    API names them in what it answers, never by their server path (`Settings.named_by_setting`)."""
    named = [(f"scene file of camera {cfg.id}", _resolve(Path(path).parent, cfg.scene)) for cfg in file.cameras]
    return named + ([("grades file of service.cameras_file", _resolve(Path(path).parent, file.grades))] if file.grades else [])


def load_cameras(path: str | Path, taxonomy: Taxonomy | None = None, *, tracking: TrackingConfig | None = None,
                 rules: RuleSettings | None = None, dispatch_targets: Collection[str] | None = None,
                 timezone: str | None = None) -> LoadedCameras:
    """Validate the cameras file and every enabled camera's scene; `tracking` and `rules` are the
    defaults (the settings file's) each camera's own fields change, `timezone` (the settings' city zone)
    the zone of a scene file that names none (`detect.scenes.follow_zone`).

    Raises `ConfigError` when the file itself is unusable. A camera whose scene is missing or
    invalid, or names another camera, or whose `auto_queue` names a violation type the taxonomy does
    not know, or (given the settings' `dispatch_targets`) a target they do not configure, is refused
    with a message naming the file, field and reason.
    """
    path = Path(path)
    file = load_model(CamerasFile, path)
    taxonomy = taxonomy or load_taxonomy()
    grades = file_grades(file, path, taxonomy)
    tracking, rules = tracking or TrackingConfig(), rules or RuleSettings()
    out = LoadedCameras(file)
    for i, cfg in enumerate(file.cameras):
        if not cfg.enabled:
            continue
        cfg = cfg.model_copy(update={"scene": _resolve(path.parent, cfg.scene)})
        if not is_url(cfg.url):
            cfg = cfg.model_copy(update={"url": str(_resolve(path.parent, cfg.url))})
        out.scene_files.append(cfg.scene)
        # A misspelt type would never match a case: its cases would silently wait for review.
        unknown = sorted(t for t in cfg.auto_queue if t != "*" and t not in taxonomy.types)
        if unknown:
            out.refused[cfg.id] = (f"{path}: cameras.{i}.auto_queue: unknown violation type {unknown[0]!r} "
                                   f"(known: {', '.join(sorted(taxonomy.types))}, or '*' for every type)")
            continue
        # An unknown target would queue the cases, and the dispatcher park them only later.
        if dispatch_targets is not None and (stray := sorted(set(cfg.auto_queue.values()) - set(dispatch_targets))):
            out.refused[cfg.id] = (f"{path}: cameras.{i}.auto_queue: no dispatch target {stray[0]!r} in the settings "
                                   f"(dispatch.targets: {', '.join(sorted(dispatch_targets)) or 'none'})")
            continue
        try:
            scene = load_scene(cfg.scene, taxonomy, grades, timezone)
        except ConfigError as exc:
            out.refused[cfg.id] = f"{path}: cameras.{i}.scene: scene refused: {exc}"
            continue
        if scene.camera_id != cfg.id:
            out.refused[cfg.id] = f"{path}: cameras.{i}.scene: {cfg.scene} is the scene of camera {scene.camera_id!r}, not {cfg.id!r}"
            continue
        out.cameras.append(Camera(cfg, scene, cfg.tracking_config(tracking), cfg.rule_settings(rules)))
    return out
