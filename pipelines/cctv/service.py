"""The CCTV service: camera readers -> bounded queue -> one batched inference worker -> rules -> cases.

    readers (1 thread/camera) --put, drop oldest--> FrameQueue --batch--> worker: detect(list),
    then per frame: ring buffer, OCR (if due), tracker + rules --events--> CaseSink (intake, auto-queue,
    re-checks) ; health events and status --> metrics + structured records

One worker owns every camera's rules, so a camera's frames are judged in order. A camera is
added, replaced or removed on reload without touching the others; a camera whose scene is
invalid is refused with the file/field/reason message and the rest run, and one already running
whose scene turns invalid keeps running on its last valid scene (`config_refused`). `stop()` is graceful:
readers stop, frames already queued are judged, events are recorded, spooled evidence is retried.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path

from detect.config_io import ConfigError, one_line
from detect.events import EventKind
from detect.evidence.ring import FrameRing
from detect.frames import VIEW_LOST, Frame
from detect.rules import CameraRules, RuleSettings
from detect.taxonomy import Taxonomy, load_taxonomy
from detect.tracking import TrackingConfig
from detect.judgement import Judgement
from pipelines.cases.intake import Intake
from pipelines.cctv.case_sink import CaseSink
from pipelines.cctv.config import Camera, LoadedCameras, load_cameras
from pipelines.cctv.frame_queue import FrameQueue
from pipelines.cctv.health import HealthEvent, HealthKind
from pipelines.cctv.metrics import Metrics
from pipelines.cctv.reader import CameraReader, CameraStatus, ReaderHooks, Status
from pipelines.cctv.runtime import CameraRuntime
from pipelines.cctv.state import State, capture_last, keep_file, load_file, restore_saved

log = logging.getLogger(__name__)

READER_KEEPS = frozenset({str(HealthKind.CONFIG_REFUSED)})
"""Health kinds the watcher holds whatever the reader (a reload's refusal); every other is the reader's own."""

RECORDS_KEPT = 10_000
"""Recent records kept in memory (tests and the demo read them); all of them go to the log and --events."""


class Watcher:
    """Runs the cameras of one cameras file. `detector` is any `detect.engine.Detector`."""

    def __init__(self, cameras_path: str | Path, detector, intake: Intake, *, replay: bool = False, metrics: Metrics | None = None,
                 taxonomy: Taxonomy | None = None, text_reader=None, on_record: Callable[[dict], None] | None = None,
                 on_analysed: Callable[[Frame], None] | None = None, tracking: TrackingConfig | None = None,
                 rules: RuleSettings | None = None, warner=None, judgement: Judgement | None = None,
                 cameras: Collection[str] | None = None, dispatch_targets: Collection[str] | None = None,
                 timezone: str | None = None, state_path: str | Path | None = None):
        """`tracking` and `rules`: the settings file's defaults, which each camera's own fields change.
        `warner` (pipelines.cityops.warnings.Warner): warn first, re-check, then a case (optional).
        `judgement`: the verifier that judges the zones that need it (None: detector classes alone).
        `cameras`: run only these camera ids of the file (`pipelines.cluster.watch` spreads a file over
        several watchers); None: all. `dispatch_targets`: the settings' targets, which a camera's `auto_queue`
        must name (None: not checked). `timezone`: the settings' city zone, that of each scene file naming none
        (its schedules, a naive replay start_time); None: Asia/Shanghai. `state_path`: where each camera's rules
        state is saved at the end of `shutdown` and restored from at `start` (`pipelines.cctv.state`); None: not kept."""
        self.cameras_path = Path(cameras_path)
        self.state_path = Path(state_path) if state_path is not None else None
        self.dispatch_targets = dispatch_targets
        self.only = set(cameras) if cameras is not None else None
        self.tracking_defaults, self.rule_defaults, self.timezone = tracking, rules, timezone
        self.detector, self.replay = detector, replay
        self.metrics = metrics or Metrics()
        self.taxonomy = taxonomy or load_taxonomy()
        # the verifier judges zones that need it (stalls, spillover, postings); None: detector classes alone
        self.judgement = judgement or Judgement(None, self.taxonomy)
        self.judgement.check(detector)
        self.text_reader = text_reader
        self.records: deque[dict] = deque(maxlen=RECORDS_KEPT)
        self._on_record = on_record
        self._on_analysed = on_analysed  # called after each judged frame (benchmarks measure lag with it)
        self.refused: dict[str, str] = {}  # camera id -> why it does not run
        self.kept: dict[str, str] = {}  # camera id -> why a reload refused it, running on its last valid configuration
        self.runtimes: dict[str, CameraRuntime] = {}
        self._lock = threading.Lock()
        self._generation = 0
        loaded = self._load()  # a broken file as a whole stops start-up
        self.file = loaded.file
        self.queue = FrameQueue(self.file.queue_size, on_drop=self._dropped)
        self.sink = CaseSink(intake, self.taxonomy, self.metrics, on_record=self.record, warner=warner,
                             verified=self.judgement.verified_types)
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._stopping = threading.Event()
        self._reload_requested = threading.Event()
        self._count_lock = threading.Lock()
        self._pending = 0  # frames queued or being judged (replay ends when it is 0 and readers are done)
        self._apply(loaded, start=False)

    # ---- records ------------------------------------------------------------------------

    def record(self, data: dict) -> None:
        """A structured record (violation, re-check, health, status): kept, logged as JSON, passed on."""
        self.records.append(data)
        log.info("%s", json.dumps(data, ensure_ascii=False, default=str))
        if self._on_record is not None:
            self._on_record(data)

    def _health(self, event: HealthEvent) -> None:
        self.metrics.health_active.labels(event.camera_id, str(event.kind)).set(1 if event.active and event.kind != "resolution_changed" else 0)
        if event.active:
            self.metrics.health_events.labels(event.camera_id, str(event.kind)).inc()
        self.record(json.loads(event.to_json()))

    def _status(self, camera_id: str, status: Status, detail: str) -> None:
        self.metrics.status.labels(camera_id).state(status.value)
        self.record(CameraStatus(camera_id, status, detail, datetime.now(UTC)).to_record())

    def _dropped(self, frame: Frame) -> None:
        self._count(-1)
        self.metrics.frames_dropped.labels(frame.source_id).inc()

    # ---- cameras ------------------------------------------------------------------------

    def _runtime(self, camera: Camera) -> CameraRuntime:
        self._generation += 1
        generation = self._generation
        cfg = camera.config

        def on_frame(frame: Frame) -> None:
            frame.meta["generation"] = generation
            self.metrics.frames_queued.labels(camera.id).inc()
            self._count(1)
            if not self.queue.put(frame, block=self.replay):
                self._count(-1)  # closed: shutting down

        def replaced() -> bool:
            """A reload has put a newer reader in this one's place: what this one still says (its `stopped`, written
            from its own thread once its blocked read returns, often after the new reader went online) is not the
            camera's state, and recorded it showed a running camera as stopped, its conditions cleared."""
            current = self.runtimes.get(camera.id)
            return current is not None and current.generation != generation

        def on_health(event: HealthEvent) -> None:
            if not replaced():
                self._health(event)

        def on_status(camera_id: str, status: Status, detail: str) -> None:
            if not replaced():
                self._status(camera_id, status, detail)

        hooks = ReaderHooks(frame=on_frame, health=on_health, status=on_status,
                            read=lambda cid: self.metrics.frames_read.labels(cid).inc(),
                            retry=lambda cid: self.metrics.reconnect_attempts.labels(cid).inc())
        reader = CameraReader(camera, hooks, replay=self.replay)
        rules = CameraRules(camera.scene, self.taxonomy, camera.tracking, camera.rules)
        text = None
        if cfg.ocr_interval_s is not None:
            from detect.ocr import TextEvidence, TextReader

            self.text_reader = self.text_reader or TextReader()
            text = TextEvidence.for_camera(self.text_reader, camera.scene.reference_snapshot)
        return CameraRuntime(camera, rules, FrameRing(self.file.ring_s), reader, generation, text)

    def _apply(self, loaded: LoadedCameras, start: bool) -> None:
        """Make the running cameras match `loaded`: unchanged ones keep running (and their rules state).

        A running camera whose new configuration is refused (a scene hand-edited into an invalid one) keeps
        running on its last valid one, as a broken cameras file leaves every camera running; the refusal is
        its `config_refused` health condition until a reload takes its configuration again."""
        wanted = {c.id: c for c in loaded.cameras}
        refused = dict(loaded.refused)
        self._watched = [self.cameras_path, *loaded.scene_files]
        self._mtimes = self._watched_mtimes()
        with self._lock:
            for cid in [cid for cid in self.runtimes if cid not in wanted and cid not in refused]:
                self.runtimes.pop(cid).reader.stop()
                self.metrics.end_health(cid, keep=READER_KEEPS)
                log.info("camera %s removed", cid)
            for cid, camera in wanted.items():
                old = self.runtimes.get(cid)
                if old is not None and old.camera == camera:
                    continue
                try:
                    runtime = self._runtime(camera)
                except (OSError, ValueError) as exc:  # e.g. an unreadable reference snapshot for OCR
                    refused[cid] = f"camera {cid}: {exc}"
                    continue
                if old is not None:
                    old.reader.stop()
                    log.info("camera %s reconfigured", cid)
                self.runtimes[cid] = runtime
                if start:
                    self._start_reader(runtime.reader)
            kept = {cid: message for cid, message in refused.items() if cid in self.runtimes}
        self._refusals({cid: message for cid, message in refused.items() if cid not in kept}, kept)

    def _refusals(self, refused: dict[str, str], kept: dict[str, str]) -> None:
        """Record what changed: cameras `refused` (not running), and running cameras `kept` on their last valid
        configuration (their `config_refused` condition starts, or ends once a reload takes the camera's again)."""
        now = datetime.now(UTC)
        for cid, message in refused.items():
            if self.refused.get(cid) != message:
                log.error("camera %s refused: %s", cid, one_line(message))
                self.metrics.status.labels(cid).state(Status.REFUSED.value)
                self.record(CameraStatus(cid, Status.REFUSED, message, now).to_record())
        for cid, message in kept.items():
            if self.kept.get(cid) != message:
                log.error("camera %s keeps running on its last valid configuration; its new one is refused: %s", cid, one_line(message))
                self._health(HealthEvent(cid, HealthKind.CONFIG_REFUSED, True, now, message))
        for cid in self.kept.keys() - kept.keys():
            self._health(HealthEvent(cid, HealthKind.CONFIG_REFUSED, False, now, "configuration taken"))
        self.refused, self.kept = refused, kept

    def reload(self) -> bool:
        """Re-read the cameras file and scenes; False (and everything kept) if the file is unusable."""
        try:
            loaded = self._load()
        except ConfigError as exc:
            log.error("reload refused, keeping the running cameras: %s", one_line(str(exc)))
            return False
        self._apply(loaded, start=True)
        return True

    def _load(self) -> LoadedCameras:
        loaded = load_cameras(self.cameras_path, self.taxonomy, tracking=self.tracking_defaults, rules=self.rule_defaults,
                              dispatch_targets=self.dispatch_targets, timezone=self.timezone)
        if self.only is not None:
            loaded.cameras = [c for c in loaded.cameras if c.id in self.only]
            loaded.refused = {cid: reason for cid, reason in loaded.refused.items() if cid in self.only}
        return loaded

    def _watched_mtimes(self) -> dict[Path, float]:
        out = {}
        for p in self._watched:
            try:
                out[Path(p)] = Path(p).stat().st_mtime
            except OSError:
                out[Path(p)] = -1.0
        return out

    def files_changed(self) -> bool:
        return self._watched_mtimes() != self._mtimes

    # ---- running ------------------------------------------------------------------------

    def start(self, stagger_s: float = 0.0) -> None:
        """Start the threads; `stagger_s` spaces reader starts (files played live would otherwise all
        deliver their frames at the same instants, unlike real cameras)."""
        self._restore_states()
        self.sink.start()
        self._worker.start()
        with self._lock:
            readers = [r.reader for r in self.runtimes.values()]
        for i, reader in enumerate(readers):
            if i and stagger_s:
                time.sleep(stagger_s)
            self._start_reader(reader)

    def _start_reader(self, reader: CameraReader) -> None:
        """Start a camera's reader, recorded as `starting`: its health starts afresh, so whoever folds the records
        (the service's camera pages) ends the conditions an earlier reader of the camera left active."""
        self._status(reader.camera.id, Status.STARTING, "")
        self.metrics.end_health(reader.camera.id, keep=READER_KEEPS)
        reader.start()

    def stop(self) -> None:
        """Ask for a graceful stop (safe from a signal handler): `run` then shuts down and returns."""
        self._stopping.set()

    def request_reload(self) -> None:
        """Ask for a reload at the next poll (safe from a signal handler, e.g. SIGHUP)."""
        self._reload_requested.set()

    def run(self, poll_s: float = 1.0, stagger_s: float = 0.0) -> dict:
        """Start, then block until `stop()` or, in replay, until every file is judged; returns `summary()`.

        Polls for reload requests and for changes to the cameras file and the scene files.
        """
        self.start(stagger_s)
        try:
            while not self._stopping.wait(poll_s):
                if self._reload_requested.is_set() or self.files_changed():
                    self._reload_requested.clear()
                    self.reload()
                if self.replay and self._replay_done():
                    break
        finally:
            self.shutdown()
        return self.summary()

    def _replay_done(self) -> bool:
        with self._lock:
            # Stream cameras (URLs) run as long as there are files to replay, then stop with them.
            readers_done = all(not r.reader.is_alive() for r in self.runtimes.values() if r.reader.replay_file)
        return readers_done and self._in_flight() == 0

    def _in_flight(self) -> int:
        with self._count_lock:
            return self._pending

    def _count(self, delta: int) -> None:
        with self._count_lock:
            self._pending += delta

    def shutdown(self, reader_timeout_s: float = 15.0) -> None:
        """Stop readers, judge every frame already queued, record every event, retry spooled evidence."""
        self._stopping.set()
        with self._lock:
            readers = [r.reader for r in self.runtimes.values()]
        for reader in readers:
            reader.stop()
        deadline = time.monotonic() + reader_timeout_s
        for reader in readers:
            if reader.is_alive():
                reader.join(max(0.1, deadline - time.monotonic()))
        self.queue.close()
        if self._worker.is_alive():
            self._worker.join()
        self._save_states()  # the worker, which owns the rules, is done
        self.sink.close()
        if self.sink.is_alive():
            self.sink.join()

    def _restore_states(self) -> None:
        """Each camera's rules state as the last stop saved it, when the camera's configuration is unchanged."""
        if self.state_path is None:
            return
        saved = load_file(self.state_path)
        with self._lock:
            runtimes = dict(self.runtimes)
        for cid, runtime in runtimes.items():
            if cid in saved:
                restore_saved(runtime, saved[cid], self.sink.intake, self.state_path)

    def last_states(self) -> dict[str, State]:
        """Each camera's rules state as of its last judged frame (`state.capture_last`): call it once `run` returned."""
        with self._lock:
            runtimes = dict(self.runtimes)
        return capture_last(runtimes)

    def _save_states(self) -> None:
        if self.state_path is not None:
            keep_file(self.state_path, self.last_states())

    # ---- inference worker ---------------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch = self.queue.get_batch(self.file.max_batch, timeout=0.5, linger_s=0.0 if self.replay else self.file.batch_wait_s)
            self.metrics.queue_depth.set(len(self.queue))
            if not batch:
                if self.queue.closed:
                    return
                continue
            try:
                self._analyse(batch)
            except Exception:  # noqa: BLE001 - a failed batch is logged; the service goes on
                log.exception("inference worker: batch of %d frames failed", len(batch))
            finally:
                self._count(-len(batch))

    def _analyse(self, batch: list[Frame]) -> None:
        with self._lock:
            pairs = [(f, self.runtimes.get(f.source_id)) for f in batch]
        live = [(f, r) for f, r in pairs if r is not None and r.generation == f.meta.get("generation")]
        if not live:  # frames of cameras removed or replaced by a reload
            return
        started = time.perf_counter()
        images = [f.image for f, _ in live]
        if self.judgement.needs_features and any(self.judgement.zone_types(r.camera.scene) for _, r in live):
            results = self.detector.detect_with_features(images)
        else:
            results = [(d, None) for d in self.detector.detect(images)]
        self.metrics.inference.observe(time.perf_counter() - started)
        self.metrics.batch.observe(len(live))
        for (frame, runtime), (detections, fmap) in zip(live, results):
            try:
                self._judge(runtime, frame, detections, fmap)
            except Exception:  # noqa: BLE001 - one camera's failure must not lose the batch's others
                log.exception("camera %s: judging frame %s failed", runtime.id, frame.frame_id)

    def _judge(self, runtime: CameraRuntime, frame: Frame, detections, fmap=None) -> None:
        runtime.ring.push(frame)
        detections = runtime.with_texts(frame, detections)
        detections = self.judgement.zones(fmap, frame.image, runtime.camera.scene, detections, frame.ts)
        for event in runtime.rules.process(frame, detections, verified=self.judgement.verified_types):
            self.sink.post_event(runtime.camera, event, runtime.context(event, detections))
            if event.kind is EventKind.OPENED:
                runtime.strips_due.append((event.violation_id, event.at))
        for violation_id, frames in runtime.strips_ready(frame.ts):
            self.sink.post_strip(violation_id, frames)
        if not frame.meta.get(VIEW_LOST) and runtime.verify_due(frame.ts):  # a re-check of a picture without its zones says nothing
            self.sink.post_check(runtime.camera, frame, detections)
        self.metrics.frames_analysed.labels(runtime.id).inc()
        if not self.replay:
            self.metrics.lag.labels(runtime.id).observe((datetime.now(UTC) - frame.ts).total_seconds())
        if self._on_analysed is not None:
            self._on_analysed(frame)

    # ---- summary ------------------------------------------------------------------------

    def summary(self) -> dict:
        """Per camera: status and frame counts (and the reason of a failed one, why a running one's new configuration is
        refused); cases opened; refusals (printed by the CLI at exit)."""
        m = self.metrics
        cameras = {}
        with self._lock:
            runtimes = dict(self.runtimes)
        for cid, runtime in runtimes.items():
            cameras[cid] = {
                "status": runtime.reader.status.value,
                "frames_read": int(m.value("streetwatch_cctv_frames_read_total", camera=cid)),
                "frames_queued": int(m.value("streetwatch_cctv_frames_queued_total", camera=cid)),
                "frames_analysed": int(m.value("streetwatch_cctv_frames_analysed_total", camera=cid)),
                "frames_dropped": int(m.value("streetwatch_cctv_frames_dropped_total", camera=cid)),
                "bad_packets": runtime.reader.bad_packets,
            }
            if runtime.reader.status is Status.FAILED:  # e.g. a replayed file that cannot be read: say why
                cameras[cid]["reason"] = runtime.reader.detail
            if cid in self.kept:  # running on its last valid configuration: why the new one is refused
                cameras[cid]["config_refused"] = self.kept[cid]
        for cid, message in self.refused.items():
            cameras[cid] = {"status": Status.REFUSED.value, "reason": message}
        opened = sum(s.value for metric in m.cases_opened.collect() for s in metric.samples if s.name.endswith("_total"))
        return {"cameras": cameras, "cases_opened": int(opened), "in_flight": self._in_flight()}
