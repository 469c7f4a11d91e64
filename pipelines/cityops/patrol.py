"""Patrol-vehicle video: a car camera's video and its GPS track, triaged like photos taken along the route.

A patrol car's dashcam sees the streets no fixed camera covers. The video is sampled by distance
driven (a frame every `every_m` metres) and by time (at least one every `every_s` seconds, so a
car stopped in traffic still looks), each sampled frame is placed on the track (interpolated
between fixes) and written as a JPEG with the EXIF a phone would write (capture time, GPS): from
there on it is a photo of the triage pipeline (`pipelines.triage.run_triage`): the same detector,
photo rules, city zones and grid cells, near-duplicate grouping (the same parked car seen from
successive frames within `group_radius_m` is one case) and evidence bundles. What is new here:

- alignment: GPX and NMEA tracks carry UTC times, so the video's start comes from `--start` or the
  video's `creation_time` tag; a dashcam SRT is timed by the video itself;
- frames the track does not cover (before its first fix, after its last, inside a gap) are
  skipped and counted, with a message naming both time spans; no covered frame at all is an error;
- a case already open of the same type within `group_radius_m` of a group's place (an earlier patrol, a
  camera, an inspector) is not doubled: the group is reported against that case instead. A group spans at
  most `group_span_m` of the drive (triage's grouping), so a case near where it starts does not swallow the
  violations 300 m further on;
- resuming (`run_patrol(resume=True)`: `streetwatch patrol --resume`, the service after a restart): a run that
  finished sampling kept what it sampled, how and from which video and track (`sampled.json`), so its frames are not
  sampled again and triage resumes over them, given the same files (and sampling values, where given); one stopped
  while sampling had judged nothing and samples afresh.
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import av
import numpy as np
import sqlalchemy as sa
from PIL import Image

from detect.config_io import write_text_atomic
from detect.digests import sha256_file
from detect.frames import GeoPoint, distance_m
from detect.imageio import DEFAULT_MAX_PIXELS, media_origin, upright
from pipelines.cases.schema import cases
from pipelines.cases.states import CaseState
from pipelines.cityops.tracks import SUFFIXES, Track, TrackError, load_track
from pipelines.times import possible_capture
from pipelines.triage.cases import TriageCases
from pipelines.triage.grouping import Group
from pipelines.triage.journal import RESULTS
from pipelines.triage.report import CaseRef

if TYPE_CHECKING:
    from detect.evidence.keys import SigningKeys
    from pipelines.cases.store import CaseStore
    from pipelines.evidence_store import EvidenceStore
    from pipelines.settings import Settings

log = logging.getLogger(__name__)

FRAMES = "frames"
SUMMARY = "patrol.json"
SAMPLED = "sampled.json"  # what sampling did, written once it is over: a resumed run takes it up
TOLERANCE_M = 0.05  # GPS arithmetic noise: 9.99 m is 10 m
MAX_FRAME_PIXELS = DEFAULT_MAX_PIXELS
"""Most pixels a video's frame may have, a photo's limit: a video declaring 16,384 x 16,384 frames was decoded frame by
frame, each 400 MB as YUV and 800 MB as the RGB written to JPEG."""
OPEN_STATES = (CaseState.CANDIDATE, CaseState.QUEUED, CaseState.SUBMITTED, CaseState.ACCEPTED, CaseState.VERIFYING,
               CaseState.STILL_PRESENT)


class PatrolError(ValueError):
    """A patrol that cannot be processed at all (no GPS, no start time, nothing covered); names the file."""


class VideoRefused(PatrolError):
    """A video that is no video whose frames may be sampled (`open_video`); `zh` says why in Chinese, for the pages."""

    def __init__(self, message: str, zh: str) -> None:
        super().__init__(message)
        self.zh = zh


class CannotResume(PatrolError):
    """An interrupted run that cannot be taken up: it judged frames but kept no record of its sampling (`SAMPLED`,
    written since runs can be resumed), so its frames cannot be told complete; sampling them again would judge
    anew frames it had judged."""


class SamplingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, as the CLI makes it) while the video was being sampled: no frame was judged yet, so
    `resume` samples afresh; told apart from triage's own `TriageInterrupted` so the CLI can say so."""


class JudgingNotStarted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) once sampling was over (`SAMPLED` kept) and before triage judged a frame, while the model,
    the case store and triage's settings were loaded: `resume` judges the frames as they were sampled."""


class NoStartTime(PatrolError):
    """No wall-clock time for the video's first frame. Its message asks for `--start`; `asking(how)` words the same
    reason for another way of giving the time (the service's form field, an option the API does not have)."""

    def __init__(self, video: Path, reason: str) -> None:
        self.video, self.reason = video, reason
        super().__init__(self.asking(GIVE_START))

    def asking(self, how: str) -> str:
        return f"{self.video}: no start time: {self.reason}; {how}"


@dataclass
class Sampled:
    """What sampling did: frames written, frames skipped for want of a position, and the spans compared."""

    frames: list[Path] = field(default_factory=list)
    skipped: int = 0  # at the sampling rate (one per `every_s` of uncovered video)
    uncovered_s: float = 0.0  # video seconds without a position
    bad_packets: int = 0  # undecodable packets skipped (a damaged file)
    video_span: tuple[str, str] | None = None
    track_span: tuple[str, str] | None = None
    messages: list[str] = field(default_factory=list)
    inputs: dict[str, dict[str, str]] | None = None  # {"video"/"track": {"path", "sha256"}}; None: kept by an older release
    #: how the frames were sampled: {"every_m", "every_s", "start": the first frame's time (ISO 8601), whether given or
    #: the video's or track's own}; None: kept by an older release
    sampling: dict[str, Any] | None = None

    def check_inputs(self, out: Path, **given: Path) -> None:
        """PatrolError when a file given to resume the run in `out` (`video=`, `track=`) is not the one it sampled, by
        content (the same file moved or copied is): its frames are that video's, placed by that track, and triage
        would take them up as this one's."""
        for role, path in given.items():
            kept = (self.inputs or {}).get(role)
            if kept is not None and sha256_file(path) != kept["sha256"]:
                raise PatrolError(f"{out}: cannot be resumed with {path}: the stopped run there sampled another {role} "
                                  f"({kept['path']}); resume with the video and track it was started with, or run into another --out")

    def check_sampling(self, out: Path, *, every_m: float | None = None, every_s: float | None = None,
                       start: datetime | None = None) -> None:
        """PatrolError naming both values when one given to resume the run in `out` (None: not given) is not the one
        its frames were sampled with: they are kept as sampled, so a resume with another `--every-m` or `--start`
        would say it ran with that while its frames, their positions and times, are the stopped run's."""
        kept = self.sampling
        if kept is None:  # an older release's sampled.json: nothing to compare with
            if (every_m, every_s, start) != (None, None, None):
                log.warning("%s: the stopped run kept no record of its --every-m, --every-s and --start (an earlier "
                            "release): its frames are kept as it sampled them, whatever is given now", out)
            return
        for option, given, was in (("--every-m", every_m, kept["every_m"]), ("--every-s", every_s, kept["every_s"]),
                                   ("--start", start, datetime.fromisoformat(kept["start"]))):
            if given is None or given == was:
                continue
            if option == "--start":  # both in the zone given now; the stopped run's may be the video's or track's own
                now, then = given.isoformat(sep=" "), was.astimezone(given.tzinfo).isoformat(sep=" ")
                how = f"timed its frames from a first frame at {then}"
            else:
                now, then = f"{given:g}", f"{was:g}"
                how = f"sampled its frames with {option} {then}"
            raise PatrolError(f"{out}: cannot be resumed with {option} {now}: the stopped run there {how}; resume without "
                              f"{option} (or with {then}), or run into another --out")

    def save(self, path: Path) -> None:
        """Kept as JSON (frames by name, beside `path` in `FRAMES`), replaced whole: a kill leaves it absent or complete."""
        data = {**self.__dict__, "frames": [f.name for f in self.frames]}
        write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: Path) -> Sampled | None:
        """What `save` kept, None when nothing was (sampling never finished)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        spans = {k: tuple(data[k]) if data[k] else None for k in ("video_span", "track_span")}
        return cls(**{**data, **spans, "frames": [path.parent / FRAMES / name for name in data["frames"]]})


def find_track(video: Path, track: Path | None) -> Path:
    """The track given, else one beside the video with the same name (.srt, .gpx, .nmea, .log)."""
    if track is not None:
        return track
    for suffix in SUFFIXES:
        for candidate in (video.with_suffix(suffix), video.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate
    raise PatrolError(f"{video}: no GPS track: give --track FILE (GPX, NMEA or the dashcam's SRT); "
                      f"none lies beside the video ({', '.join(video.stem + s for s in SUFFIXES)})")


GIVE_START = "give --start 'YYYY-MM-DD HH:MM:SS' (local time)"


def given_start(start: datetime, tz: ZoneInfo, name: str = "--start") -> datetime:
    """The video's start as a person gave it (`--start`, the service's form field `name`): a time without an offset is
    local in `tz`. PatrolError naming `name` when it cannot be when the video was filmed (`possible_capture`: before
    2000 or in the future), which would date every frame and case so."""
    try:
        return possible_capture(start if start.tzinfo else start.replace(tzinfo=tz), name)
    except ValueError as exc:
        raise PatrolError(str(exc)) from None


def video_start(container: av.container.InputContainer, video: Path) -> datetime | None:
    """The video's creation_time tag, None when it has none. A tag that cannot be when it was filmed is a
    PatrolError (`possible_capture`: before 2000, 2000-01-01 00:00 or in the future): a dashcam whose clock was
    never set writes one, and taken as it was it dated every frame and case so (an SRT places frames without it)."""
    tag = container.metadata.get("creation_time") or container.streams.video[0].metadata.get("creation_time")
    if not tag:
        return None
    try:
        when = datetime.fromisoformat(str(tag).replace("Z", "+00:00"))
    except ValueError:
        raise NoStartTime(video, f"its creation_time tag {str(tag)!r} is not a time") from None
    try:
        return possible_capture(when if when.tzinfo else when.replace(tzinfo=UTC), "creation_time tag")
    except ValueError as exc:
        raise NoStartTime(video, str(exc)) from None


def sample_video(video: Path, track: Track, out: Path, *, every_m: float, every_s: float, tz: ZoneInfo,
                 start: datetime | None = None, quality: int = 92) -> Sampled:
    """Write the sampled, placed frames of `video` under `out` (see module doc)."""
    out.mkdir(parents=True, exist_ok=True)
    result = Sampled(messages=list(track.warnings))  # what reading the track skipped comes first
    with open_video(video) as container:
        stream = container.streams.video[0]
        begin = start or track.start or video_start(container, video)
        if begin is None:
            raise NoStartTime(video, "the video has no creation_time tag" + ("" if track.video_timed else " to match the track's clock"))
        result.sampling = {"every_m": every_m, "every_s": every_s, "start": begin.isoformat()}
        origin = media_origin(container)
        last_pos: GeoPoint | None = None
        last_t: float | None = None
        first_t = last_seen = None
        for frame in _pictures(container, stream, video, result):
            if frame.time is None:
                continue
            t = float(frame.time) - origin
            first_t = t if first_t is None else first_t
            step, last_seen = (t - last_seen if last_seen is not None else 0.0), t
            when = begin + timedelta(seconds=t)
            pos = track.at(t if track.video_timed else when)
            if pos is None:
                result.uncovered_s += step
                if last_t is None or t - last_t >= every_s:
                    result.skipped += 1  # counted at the sampling rate, not per decoded frame
                    last_t = t
                continue
            if last_pos is not None and last_t is not None and distance_m(last_pos, pos) < every_m - TOLERANCE_M and t - last_t < every_s:
                continue
            _check_frame_size(video, frame.width, frame.height)  # one that grows past what the stream declared
            path = out / f"frame-{len(result.frames):05d}-t{t:08.2f}.jpg"
            rgb = upright(frame.to_ndarray(format="rgb24"), getattr(frame, "rotation", 0))  # PyAV >= 14 reads it
            path.write_bytes(_jpeg(rgb, when, pos, tz, quality))
            result.frames.append(path)
            last_pos, last_t = pos, t
    if first_t is None:
        raise PatrolError(f"{video}: no picture could be decoded"
                          + (f" ({result.bad_packets} damaged packet(s))" if result.bad_packets else ""))
    if result.bad_packets:
        result.messages.append(f"{video}: {result.bad_packets} damaged packet(s) skipped (a damaged or cut-off file): "
                               "the pictures around them are missing, the rest processed")
    result.video_span = (_local(begin + timedelta(seconds=first_t), tz), _local(begin + timedelta(seconds=last_seen), tz))
    if not track.video_timed:
        result.track_span = (_local(track.first, tz), _local(track.last, tz))
    if result.skipped:
        spans = (f"track covers {result.track_span[0]} - {result.track_span[1]}, video runs {result.video_span[0]} - "
                 f"{result.video_span[1]}" if result.track_span and result.video_span else
                 f"track covers video seconds {track.first:.1f} - {track.last:.1f}")
        result.messages.append(f"{track.path}: the track does not cover the whole video ({spans}, gaps over "
                               f"{track.max_gap_s:.0f} s count as uncovered): {result.uncovered_s:.1f} s of video without a "
                               f"position ({result.skipped} sampled frame(s)) skipped, the rest processed")
    if not result.frames:
        raise PatrolError(f"{track.path}: the track does not cover the video's time span at all"
                          + (f" (track {result.track_span[0]} - {result.track_span[1]}, video {result.video_span[0]} - "
                             f"{result.video_span[1]})" if result.track_span and result.video_span else "")
                          + ": nothing could be placed on the map")
    return result


def open_video(video: Path) -> av.container.InputContainer:
    """`video` opened, once it is a video whose frames may be sampled: VideoRefused naming it when it is not one
    (not a video, no video stream, frames over `MAX_FRAME_PIXELS`). `sample_video` reads it so; the service's upload
    opens it so before answering, where a video the job would refuse at its start is refused (422) with nothing kept."""
    try:
        container = av.open(str(video))
    except (av.FFmpegError, OSError) as exc:
        raise VideoRefused(f"{video}: not a readable video: {exc}", "不是可读取的视频文件") from None
    try:
        if not container.streams.video:
            raise VideoRefused(f"{video}: has no video stream", "文件中没有视频画面")
        stream = container.streams.video[0]
        _check_frame_size(video, stream.codec_context.width, stream.codec_context.height)
    except BaseException:
        container.close()
        raise
    return container


def _check_frame_size(video: Path, width: int, height: int) -> None:
    """VideoRefused naming `video`, its frames' size and `MAX_FRAME_PIXELS` when they have more pixels than a photo may."""
    if width * height > MAX_FRAME_PIXELS:
        raise VideoRefused(f"{video}: frames of {width} x {height} pixels ({width * height:,}), more than the "
                           f"{MAX_FRAME_PIXELS:,} a picture may have (a photo's limit): refused",
                           f"画面过大（{width} x {height} 像素，{width * height:,}），超过单张图片上限 {MAX_FRAME_PIXELS:,} 像素，拒收")


def _pictures(container: av.container.InputContainer, stream: av.VideoStream, video: Path,
              result: Sampled) -> Iterator[av.VideoFrame]:
    """The decoded pictures. A packet that does not decode is skipped and counted, as players do (a
    dashcam's file cut off at power-off, a damaged card), and a read error ends the video there: the
    pictures before it are still worth triaging, where letting the error through lost them all."""
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                result.bad_packets += 1
                continue
            yield from frames
    except (av.FFmpegError, OSError) as exc:
        result.messages.append(f"{video}: reading stopped early ({exc}): the rest of the video is missing")


def _local(t: datetime | float, tz: ZoneInfo) -> str:
    return t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if isinstance(t, datetime) else f"{t:.1f} s"


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    deg = math.floor(value)
    minutes = math.floor((value - deg) * 60)
    return float(deg), float(minutes), round((value - deg - minutes / 60) * 3600, 4)


def _jpeg(rgb: np.ndarray, when: datetime, pos: GeoPoint, tz: ZoneInfo, quality: int) -> bytes:
    """The frame as a JPEG with a phone's EXIF: local capture time with its UTC offset, and GPS."""
    local = when.astimezone(tz)
    offset = local.strftime("%z")
    exif = Image.Exif()
    exif[0x0110] = "patrol video frame"  # Model
    exif[0x8769] = {0x9003: local.strftime("%Y:%m:%d %H:%M:%S"), 0x9011: f"{offset[:3]}:{offset[3:]}"}
    exif[0x8825] = {0: b"\x02\x03\x00\x00", 1: "N" if pos.lat >= 0 else "S", 2: _dms(pos.lat),
                    3: "E" if pos.lon >= 0 else "W", 4: _dms(pos.lon)}
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, exif=exif)
    return buf.getvalue()


class PatrolCases(TriageCases):
    """Triage's case writer, except that a group where a case of its type is already open is not doubled."""

    def __init__(self, *args: Any, radius_m: float, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.radius_m = radius_m
        self.already_open: list[dict[str, Any]] = []

    def _write(self, group: Group) -> CaseRef:
        open_case = self._open_case_near(group)
        if open_case is not None:
            self.already_open.append({"case_id": open_case, "type": group.type, "frames": len(group.members)})
            case = self.store.get(open_case)
            return CaseRef(case.id, case.evidence_ref, str(case.state), error=f"already open: {case.id} (not doubled)")
        return super()._write(group)

    def _open_case_near(self, group: Group) -> str | None:
        """An open case of the group's type within the radius of the group's place (its `placed` frame, where its case
        would be filed), made by another run. Not of any frame: a group reaches `group_span_m` along the drive, and a
        case near its first frame swallowed the violations further on (missed enforcement). This run's own cases (its
        batch, resumed or not) are triage's to find: the next group along the street, placed 20 m on, is not a double."""
        if group.placed is None:
            return None
        place = GeoPoint(group.placed.lat, group.placed.lon)
        pad = self.radius_m / 111_000 * 2
        query = sa.select(cases.c.id, cases.c.lat, cases.c.lon).where(
            cases.c.violation_type == group.type, cases.c.state.in_([s.value for s in OPEN_STATES]),
            cases.c.lat.between(place.lat - pad, place.lat + pad), cases.c.lon.between(place.lon - pad * 2, place.lon + pad * 2),
            cases.c.source_id != self.batch_id)
        with self.store.engine.connect() as conn:
            for case_id, lat, lon in conn.execute(query):
                if distance_m(GeoPoint(lat, lon), place) <= self.radius_m:
                    return case_id
        return None


def check_out_free(out: Path) -> None:
    """PatrolError when `out` holds an earlier run's frames or results. Checked before sampling: the frames went
    in beside the earlier ones (another video's, or the same placed by another track) and triage then refused the
    folder; a run after deleting results.jsonl judged both. A stopped run is taken up with `resume`."""
    held = [p.name for p in (out / FRAMES, out / RESULTS) if p.is_file() and p.stat().st_size or p.is_dir() and any(p.iterdir())]
    if held:
        raise PatrolError(f"{out}: already holds a run ({', '.join(held)}): pass --resume to take up a stopped run, choose "
                          "another --out, or delete that folder")


@dataclass
class PatrolResult:
    sampled: Sampled
    triage: Any  # pipelines.triage.run.TriageResult
    already_open: list[dict[str, Any]]
    summary: dict[str, Any]


def sample_once(video: Path, track: Track, out: Path, *, resume: bool, tz: ZoneInfo, every_m: float, every_s: float,
                start: datetime | None = None, given: dict[str, Any] | None = None) -> Sampled:
    """The run's frames under `out`, sampled now (`sample_video`, then kept as `SAMPLED` with the files sampled) or, on
    `resume`, as an interrupted run kept them: triage resumes over those very frames, given the same video and
    track, and the same sampling values where `given` names them (PatrolError otherwise). A run stopped while
    sampling had judged none (triage starts after), so its frames are removed and sampled afresh; CannotResume when it
    had. PatrolError when `out` holds no run at all; SamplingInterrupted when Ctrl-C stops the sampling."""
    if resume:
        done = Sampled.load(out / SAMPLED)
        if done is not None:
            done.check_inputs(out, video=video, track=track.path)
            done.check_sampling(out, **(given or {}))
            return done
        if (out / RESULTS).is_file():
            raise CannotResume(f"{out}: cannot be resumed: frames were judged ({RESULTS}) but the run kept no "
                               f"{SAMPLED} of its sampling; run it again into another folder")
        if not (out / FRAMES).is_dir():
            raise PatrolError(f"{out}: nothing to resume: no patrol run was started there (no {FRAMES}/, {SAMPLED} or "
                              f"{RESULTS}); run without --resume")
        shutil.rmtree(out / FRAMES, ignore_errors=True)
    else:
        check_out_free(out)
    try:
        sampled = sample_video(video, track, out / FRAMES, every_m=every_m, every_s=every_s, tz=tz, start=start)
        sampled.inputs = {role: {"path": str(path), "sha256": sha256_file(path)} for role, path in (("video", video), ("track", track.path))}
        sampled.save(out / SAMPLED)
    except KeyboardInterrupt:
        raise SamplingInterrupted() from None
    return sampled


def run_patrol(video: Path, track_path: Path | None, settings, *, deployment: Settings, every_m: float | None = None,
               every_s: float | None = None, start: datetime | None = None, detector=None, taxonomy=None,
               show_progress: bool = True, name: str | None = None, resume: bool = False,
               keys: SigningKeys | None = None, store: CaseStore | None = None,
               evidence: EvidenceStore | None = None) -> PatrolResult:
    """Sample, place and triage one patrol video into `settings.out` (a `TriageSettings`); `deployment`:
    the settings file (case store, evidence, dispatch; `pipelines.settings`). `every_m`, `every_s`: the sampling,
    by default `deployment.cityops.patrol_every_m/_s`. `name`: the video's name in its cases' source
    (`patrol:<name>`, or `patrol:<name>-2`... when another run's cases hold it: `batch_id`), default the file's stem;
    an upload's is the name it was sent under, since the service stores every video as `video.<suffix>`. `resume`: take up the run an interruption left in `settings.out` (`sample_once`;
    the same video and track, its frames as they were sampled: `every_m`, `every_s` and `start`, when given, must be
    the stopped run's), as triage's `--resume` does. `keys`: the evidence keys `check_keys` loaded (None: the case
    writer loads them); `store`, `evidence`: the open case and evidence stores to write through (`serve`'s own; None: the
    case writer opens them)."""
    from pipelines.triage.pipeline import ReportInterrupted, TriageInterrupted
    from pipelines.triage.run import run_triage

    video = Path(video)
    if not video.is_file():
        raise PatrolError(f"{video}: file not found")
    tz = settings.tz
    try:
        track = load_track(find_track(video, track_path), tz)
    except TrackError as exc:
        raise PatrolError(str(exc)) from None
    out = Path(settings.out)
    given = {k: v for k, v in (("every_m", every_m), ("every_s", every_s), ("start", start)) if v is not None}
    cfg = deployment.cityops
    sampled = sample_once(video, track, out, resume=resume, tz=tz, start=start, given=given,
                          every_m=cfg.patrol_every_m if every_m is None else every_m,
                          every_s=cfg.patrol_every_s if every_s is None else every_s)
    if resume:
        settings = settings.model_copy(update={"resume": True})
    for message in sampled.messages:
        log.warning("%s", message)
    try:
        detector, writer = _judging_setup(settings, deployment, detector, taxonomy, out, batch=f"patrol:{name or video.stem}",
                                          keys=keys, store=store, evidence=evidence)
        if writer is None:  # decided here (and warned of once): triage is not to try the case store again
            settings = settings.model_copy(update={"cases": False})
        result = run_triage([out / FRAMES], settings, detector=detector, taxonomy=taxonomy, deployment=deployment,
                            show_progress=show_progress, case_writer=writer)
    except (TriageInterrupted, ReportInterrupted):
        raise
    except KeyboardInterrupt:  # before the first frame was judged: the model or the case store was being loaded
        raise JudgingNotStarted() from None
    try:
        summary = _summary(video, track, sampled, result, writer, tz)
        write_text_atomic(out / SUMMARY, json.dumps(summary, ensure_ascii=False, indent=1))  # whole or not at all
    except KeyboardInterrupt:  # every frame judged, the report written: patrol.json is what a resume writes again
        raise ReportInterrupted() from None
    return PatrolResult(sampled, result, summary["already_open"], summary)


def _judging_setup(settings, deployment: Settings, detector, taxonomy, out: Path, *, batch: str,
                   keys: SigningKeys | None = None, store: CaseStore | None = None,
                   evidence: EvidenceStore | None = None) -> tuple[Any, PatrolCases | None]:
    """The detector and the case writer of a run (None when cases are off, or optional and cannot be written: the
    report only, under a warning)."""
    from pipelines.triage.cases import CasesUnavailable, open_triage_cases
    from pipelines.triage.run import triage_detector

    detector = detector or triage_detector(settings)
    wanted = settings.cases if settings.dispatch_target is None else True
    if wanted is False:
        return detector, None
    try:
        base = open_triage_cases(deployment, detector, taxonomy, out, settings.dispatch_target, batch=batch, keys=keys, store=store,
                                 evidence=evidence)
    except CasesUnavailable as exc:
        if wanted:
            raise
        log.warning("no candidate cases written, report only: %s", exc)
        return detector, None
    return detector, PatrolCases(base.intake, base.store, batch_id=base.batch_id, staging=base.staging,
                                 radius_m=settings.group_radius_m)


def _summary(video: Path, track: Track, sampled: Sampled, result, writer: PatrolCases | None, tz: ZoneInfo) -> dict[str, Any]:
    """What patrol.json holds (and the command prints)."""
    already = writer.already_open if writer is not None else []
    return {
        "video": str(video), "track": str(track.path), "frames": len(sampled.frames), "skipped_without_position": sampled.skipped,
        "uncovered_s": round(sampled.uncovered_s, 1),
        "video_span": sampled.video_span, "track_span": sampled.track_span, "timezone": tz.key, "messages": sampled.messages,
        "groups": len(result.groups), "cases": [r.case_id for r in result.refs if r.case_id and not (r.error or "").startswith("already open")],
        "already_open": already, "report": str(result.files.get("report")),
        "spool": result.spool.as_dict(),  # a patrol run retries the evidence spool as triage does (its `finish`)
    }
