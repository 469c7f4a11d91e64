"""CCTV monitoring on a Ray cluster: cameras spread over owner actors, inference shared across them.

    driver (supervisor)                 owner actors (`cluster.cameras_per_owner` cameras each, spread over nodes)
    cameras file ─► groups ─► owners    a `Watcher` over its cameras, unchanged: reader threads (decoding near
    restarts, events file,    ◄─ drain  the stream), each camera's tracker, rules and dwell, the case sink
    snapshots, /metrics                 (intake: PostgreSQL cases, S3 evidence)
                                                 │ frames of its cameras, one batch per call
                                                 ▼
                                        inference actors (one GPU each when the cluster has GPUs): the
                                        detector, merging the calls of several owners into one batch

An owner runs the single-process `pipelines.cctv.service.Watcher` over its share of the cameras
file, with a detector that calls the inference actors (`RemoteDetector`). One owner holds a
camera's tracking, rules and dwell, so its frames are judged in order, as on one machine.

Restarts: every `cluster.checkpoint_s` of media time an owner saves each camera's rules state
(tracker, open violations, OCR and re-check schedule: `pipelines.cctv.state.SAVED`) in the checkpoint actor on the head
node. When an owner dies (its process or its node), the supervisor starts its cameras in a new
owner elsewhere, from those states: violations keep their ids, so an `opened` event seen again
finds its case (the case store drafts one case per violation id) instead of drafting another,
and a violation saved as opened whose case never reached the store, or reached it without its
evidence (the owner died in between, or while sealing the bundle), is opened again at its next
sighting, keeping its own opening time (the case's `opened_at`): the same case gets its bundle. A replayed file skips its frames up to the saved state. Not carried over: the
ring buffer (the strips of openings just after a restart are shorter) and events in flight
other than openings (an `updated`/`cleared` being written when the owner died). An inference
actor that dies is started again by Ray; meanwhile owners send their frames to the others.

Across a stop of `watch --ray`, as of `watch` on one machine (`--state`, `pipelines.cctv.state`: one file, one
format): at a graceful stop each owner checkpoints its cameras as of their last judged frame, and the driver writes
the checkpoint actor's states to the state file; the next start seeds the checkpoint actor from it, so each owner
restores its cameras as after an owner's death.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2

from detect.digests import sha256_file
from detect.engine import load_detector
from detect.evidence.builder import ModelInfo, VerifierInfo
from detect.frames import Frame
from detect.judgement import Judgement, load_judgement
from detect.taxonomy import Taxonomy, load_taxonomy
from detect.verifier import NONE
from pipelines.cases.intake import Intake
from pipelines.cctv.config import load_cameras
from pipelines.cctv.reader import CameraStatus, Status
from pipelines.cctv.service import Watcher
from pipelines.cctv.snapshots import write_snapshot
from pipelines.cctv.state import State, capture, keep_file, load_file, restore_saved
from pipelines.cluster.connect import HEAD_NODE, ClusterError, ClusterInfo
from pipelines.cluster.metrics import ClusterMetrics
from pipelines.logs import setup_logging
from pipelines.settings import Settings
from pipelines.shops import attach_shops

log = logging.getLogger(__name__)

RECORDS_KEPT = 10_000
CALL_TIMEOUT_S = 120.0
"""An inference call that takes longer than this is given up and sent to another inference actor."""
DOWN_S = 10.0
"""An inference actor that failed a call is left alone this long, then probed before it gets frames again."""


@dataclass(frozen=True)
class WatchSpec:
    """What every owner needs besides its cameras (sent once per owner)."""

    cameras_path: Path
    settings: Settings
    taxonomy: Taxonomy
    model: ModelInfo
    facts: dict[str, Any]  # the inference actors' detector: model id, names, neck output, describe()
    verifier: str  # what the driver checked (the name given, or the card id), or `none`: every owner judges as it
    replay: bool
    snapshot_every_s: float | None  # None: no snapshots
    checkpoint_s: float
    log_level: int  # the driver's: an owner logs as `watch` does, into its stderr, which Ray forwards to the driver's


# ---- inference actors -------------------------------------------------------------------------


class InferenceServer:
    """A detector shared by several owners: concurrent calls are merged into one detector call of up
    to `max_batch` images (images are batched by input shape, so a frame's boxes never depend on the
    others). Runs as an async Ray actor; the detector itself runs in a worker thread. `log_level`: the driver's, as
    an owner's (`WatchSpec.log_level`)."""

    def __init__(self, model: str | None, backend: str, device: str, conf: float, imgsz: int, features: bool,
                 max_batch: int, batch_wait_s: float, threads: int | None, log_level: int) -> None:
        setup_logging(log_level)  # first: the detector's load warns (an export made once) as `watch` would, not bare
        self.detector = load_detector(model, backend=backend, device=device, conf=conf, imgsz=imgsz, features=features,
                                      max_batch=max_batch, threads=threads)
        self.max_batch, self.batch_wait_s = max_batch, batch_wait_s
        self._waiting: list[tuple[list, bool, asyncio.Future]] = []
        self._draining = False
        self._batches: list[tuple[int, float]] = []  # (frames, seconds) since the last metrics call

    def ready(self) -> bool:
        return True

    def facts(self) -> dict[str, Any]:
        d = self.detector
        return {"model": d.model_id, "sha256": sha256_file(d.model_path), "names": d.names, "backend": d.backend,
                "has_features": d.has_features, "imgsz": d.imgsz, "describe": d.describe()}

    async def detect(self, images: list, features: bool) -> list:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((images, features, future))
        if not self._draining:
            self._draining = True
            asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(self.batch_wait_s)  # let other owners' calls join the batch
            while self._waiting:
                features = self._waiting[0][1]
                take, n = [], 0
                for call in list(self._waiting):
                    if call[1] == features and (not take or n + len(call[0]) <= self.max_batch):
                        take.append(call)
                        n += len(call[0])
                        self._waiting.remove(call)
                images = [im for call in take for im in call[0]]
                started = time.perf_counter()
                try:
                    run = self.detector.detect_with_features if features else (lambda ims: [(d, None) for d in self.detector.detect(ims)])
                    results = await asyncio.to_thread(run, images)
                except Exception as exc:  # noqa: BLE001 - each caller gets the error of its own call
                    for _, _, future in take:
                        future.set_exception(exc)
                    continue
                self._batches.append((len(images), time.perf_counter() - started))
                start = 0
                for call_images, _, future in take:
                    future.set_result(results[start:start + len(call_images)])
                    start += len(call_images)
        finally:
            self._draining = False

    def metrics(self) -> list[tuple[int, float]]:
        batches, self._batches = self._batches, []
        return batches


class RemoteDetector:
    """What a `Watcher` needs of a detector, answered by the inference actors: calls go round the
    actors; one that fails a call is skipped for `DOWN_S`, then probed before it gets frames again."""

    def __init__(self, servers: list, facts: dict[str, Any]) -> None:
        self.servers = servers
        self.model_id, self.names, self.backend = facts["model"], facts["names"], facts["backend"]
        self.has_features, self.imgsz = facts["has_features"], facts["imgsz"]  # what `Judgement.check` reads
        self._describe = facts["describe"]
        self._turn = itertools.count()
        self._down: dict[int, float] = {}

    def describe(self) -> dict:
        return dict(self._describe)

    def detect(self, images: list) -> list:
        return [d for d, _ in self._call(images, False)]

    def detect_with_features(self, images: list) -> list:
        return self._call(images, True)

    def _call(self, images: list, features: bool) -> list:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        first = next(self._turn)
        failure: Exception | None = None
        for k in range(len(self.servers)):
            i = (first + k) % len(self.servers)
            if not self._usable(i):
                continue
            try:
                return ray.get(self.servers[i].detect.remote(images, features), timeout=CALL_TIMEOUT_S)
            except (RayActorError, GetTimeoutError) as exc:
                log.warning("inference actor %d failed a call (%s); trying another", i, type(exc).__name__)
                self._down[i] = time.monotonic() + DOWN_S
                failure = exc
        raise failure or RuntimeError("no inference actor is available")

    def _usable(self, i: int) -> bool:
        import ray

        until = self._down.get(i)
        if until is None:
            return True
        if time.monotonic() < until:
            return False
        ready, _ = ray.wait([self.servers[i].ready.remote()], timeout=1.0)
        if ready:
            self._down.pop(i, None)
            return True
        self._down[i] = time.monotonic() + DOWN_S
        return False


# ---- owners and checkpoints -------------------------------------------------------------------


class Checkpoints:
    """The latest saved rules state of each camera (an actor on the head node: it outlives worker nodes); `saved`:
    the states the last stop kept (`--state`), which the owners restore at the start, `saved_in` naming where (the
    state file). Each state's origin goes with it, so an owner's log says where a restored state really came from."""

    RUNNING = "the running cluster's checkpoint"  # what an owner of this run put: restored from after a restart

    def __init__(self, saved: dict[str, State] | None = None, saved_in: str = "the state file") -> None:
        self.saved: dict[str, State] = dict(saved or {})
        self.origin: dict[str, str] = dict.fromkeys(self.saved, saved_in)

    def put(self, camera_id: str, key: str, ts: datetime, blob: bytes) -> None:
        self.saved[camera_id] = (key, ts, blob)
        self.origin[camera_id] = self.RUNNING

    def get(self, camera_ids: list[str]) -> dict[str, State]:
        return {cid: self.saved[cid] for cid in camera_ids if cid in self.saved}

    def restorable(self, camera_ids: list[str]) -> dict[str, tuple[State, str]]:
        """Their states, each with where it came from (`saved_in`, or `RUNNING` once an owner of this run put it)."""
        return {cid: (state, self.origin[cid]) for cid, state in self.get(camera_ids).items()}


class CameraOwner:
    """An owner actor: a `Watcher` over some cameras, restored from their saved states."""

    def __init__(self, spec: WatchSpec, camera_ids: list[str], servers: list, checkpoints) -> None:
        import ray

        setup_logging(spec.log_level)  # else its INFO lines (a state restored, a stream reopened) reach no one
        self.spec, self.checkpoints = spec, checkpoints
        self.node = ray.get_runtime_context().get_node_id()[:12]
        settings = spec.settings
        self.intake = Intake.from_settings(settings, spec.model, taxonomy=spec.taxonomy)
        attach_shops(self.intake)
        self.records: deque[dict] = deque(maxlen=RECORDS_KEPT)
        self.snapshots: dict[str, bytes] = {}
        self._last_snapshot: dict[str, float] = {}
        self._next_save: dict[str, datetime] = {}
        self.watcher = Watcher(spec.cameras_path, RemoteDetector(servers, spec.facts), self.intake, replay=spec.replay,
                               taxonomy=spec.taxonomy, on_record=self.records.append, on_analysed=self._analysed,
                               judgement=load_judgement(spec.verifier, spec.taxonomy), tracking=settings.tracking,
                               rules=settings.rules, cameras=camera_ids, timezone=settings.timezone)
        self.restored = self._restore(camera_ids)

    def ready(self) -> dict:
        return {"node": self.node, "restored": self.restored, "refused": dict(self.watcher.refused)}

    def run(self, poll_s: float = 1.0) -> dict:
        """Watch until stopped (or the replay ends), then checkpoint each camera as of its last judged frame, as a
        graceful stop on one machine saves it: the driver keeps these across the stop (its `--state` file)."""
        import ray

        summary = self.watcher.run(poll_s=poll_s)
        ray.get([self.checkpoints.put.remote(cid, *state) for cid, state in self.watcher.last_states().items()])
        return summary

    def stop(self) -> None:
        self.watcher.stop()

    def drain(self) -> dict:
        """Records, snapshots and metric samples since the last call (the supervisor polls)."""
        records = [self.records.popleft() for _ in range(len(self.records))]
        snapshots, self.snapshots = self.snapshots, {}
        return {"node": self.node, "records": records, "snapshots": snapshots,
                "metrics": list(self.watcher.metrics.registry.collect())}

    # ---- checkpoints --------------------------------------------------------------------

    def _analysed(self, frame: Frame) -> None:
        """After each judged frame (the inference thread, which owns the rules): snapshot and checkpoint when due."""
        cid = frame.source_id
        every = self.spec.snapshot_every_s
        now = time.monotonic()
        if every is not None and now - self._last_snapshot.get(cid, -1e9) >= every:
            ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 85])
            if ok:
                self.snapshots[cid] = jpeg.tobytes()
                self._last_snapshot[cid] = now
        due = self._next_save.get(cid)
        runtime = self.watcher.runtimes.get(cid)
        if runtime is None or (due is not None and frame.ts < due):
            return
        self._next_save[cid] = frame.ts + timedelta(seconds=self.spec.checkpoint_s)
        self.checkpoints.put.remote(cid, *capture(runtime, frame.ts))

    def _restore(self, camera_ids: list[str]) -> list[str]:
        import ray

        restored = []
        for cid, (state, origin) in ray.get(self.checkpoints.restorable.remote(camera_ids)).items():
            runtime = self.watcher.runtimes.get(cid)
            if runtime is None or not restore_saved(runtime, state, self.intake, origin):
                continue  # the camera changed since its state was saved (or it cannot be read): it starts afresh
            self._next_save[cid] = state[1] + timedelta(seconds=self.spec.checkpoint_s)
            restored.append(cid)
        return restored


# ---- the supervisor -----------------------------------------------------------------------------


@dataclass
class _Group:
    """Cameras one owner holds, and the owner holding them now."""

    name: str
    camera_ids: list[str]
    owner: Any = None
    run: Any = None  # ObjectRef of owner.run()
    node: str | None = None
    restarts: int = 0
    summary: dict | None = None
    failed: str | None = None
    drain: Any = None
    left_behind: dict[str, str] = field(default_factory=dict)  # camera id: why and which state it keeps (a late stop)


@dataclass
class InferenceOptions:
    """The shared detector (as `watch` flags set it); `device` None: cuda on a cluster with GPUs, else cpu;
    `actors` None: `cluster.inference_actors`, else one per GPU, or one per node without GPUs."""

    model: str | None = None
    backend: str = "onnx"
    device: str | None = None
    conf: float = 0.25
    imgsz: int = 640
    max_batch: int = 8
    batch_wait_s: float = 0.05
    actors: int | None = None
    threads: int | None = None


@dataclass
class ClusterWatcher:
    """The driver's side of `watch --ray`: starts inference actors and owners, restarts failed owners,
    writes their records and snapshots, serves their metrics, and returns one summary."""

    cameras_path: Path
    settings: Settings
    info: ClusterInfo
    inference: InferenceOptions
    replay: bool = False
    verifier: str | None = None
    on_record: Any = None  # called with each record of every owner (the --events file)
    snapshot_dir: Path | None = None
    snapshot_every_s: float = 10.0
    taxonomy: Taxonomy = field(default_factory=load_taxonomy)
    state_path: Path | None = None  # the cameras' rules states kept across a stop (`pipelines.cctv.state`); None: not kept
    on_judgement: Callable[[Judgement], None] | None = None  # told what judges, once checked against the actors' detector

    def __post_init__(self) -> None:
        self.cameras_path = self.cameras_path.absolute()
        config = self.settings.cluster
        if self.settings.cityops.warn.rules:
            raise ClusterError("cityops.warn.rules (warn first, then a case) is not supported with --ray: pending warnings live in "
                               "one watcher's memory and each watcher's start lapses all of them; run warn-first cameras "
                               "without --ray")
        loaded = load_cameras(self.cameras_path, self.taxonomy, tracking=self.settings.tracking, rules=self.settings.rules,
                              dispatch_targets=list(self.settings.dispatch.targets), timezone=self.settings.timezone)
        self.refused = dict(loaded.refused)
        ids = sorted(c.id for c in loaded.cameras)
        size = config.cameras_per_owner
        self.groups = [_Group(f"owner-{k // size:03d}", ids[k:k + size]) for k in range(0, len(ids), size)]
        self.metrics = ClusterMetrics()
        self.records: deque[dict] = deque(maxlen=RECORDS_KEPT)
        self._stop = False
        self._servers: list = []
        self._checkpoints = None
        self._spec: WatchSpec | None = None
        self.facts: dict[str, Any] = {}
        self._mtime = self._file_mtime()

    # ---- start ----------------------------------------------------------------------------

    def start(self) -> None:
        """Inference actors first (their detector facts check the verifier and name the cases' model), then owners."""
        import ray

        judgement = load_judgement(self.verifier, self.taxonomy)
        o, gpus = self.inference, int(self.info.gpus)
        device = o.device or ("cuda" if gpus else "cpu")
        if device != "cpu" and not gpus:
            raise ClusterError(f"--device {device}, but the Ray cluster at {self.info.address} has no GPU")
        count = o.actors or self.settings.cluster.inference_actors or (gpus if device != "cpu" else max(1, self.info.nodes))
        log_level = logging.getLogger().getEffectiveLevel()  # the actors log as the driver does, into the stderr Ray forwards
        server = ray.remote(InferenceServer).options(num_cpus=1, num_gpus=1 if device != "cpu" else 0, max_restarts=-1,
                                                      scheduling_strategy="SPREAD", max_concurrency=64)
        self._servers = [server.remote(o.model, o.backend, device, o.conf, o.imgsz, judgement.needs_features, o.max_batch,
                                       o.batch_wait_s, o.threads, log_level) for _ in range(count)]
        try:
            facts = ray.get(self._servers[0].facts.remote())
        except ray.exceptions.RayActorError as exc:
            raise ClusterError(f"the inference actors cannot load the model: {exc}") from None
        judgement.check(RemoteDetector(self._servers, facts))
        if self.on_judgement is not None:  # `watch` says it as without --ray: a promotion is taken at the next start
            self.on_judgement(judgement)
        checkpoints = ray.remote(Checkpoints).options(num_cpus=0, resources={HEAD_NODE: 0.001}, max_concurrency=1)
        saved = load_file(self.state_path) if self.state_path is not None else None
        self._checkpoints = checkpoints.remote(saved, f"state file {self.state_path}")
        self._spec = self._owner_spec(judgement, facts, log_level)
        self.facts = facts
        for group in self.groups:
            self._start_owner(group)

    def _owner_spec(self, judgement: Judgement, facts: dict[str, Any], log_level: int) -> WatchSpec:
        """What every owner is sent. Its verifier is the one this driver checked against the actors' detector: the name
        given, or else the promoted card's id (never "the promoted one", which an owner (re)started after a `verifier
        promote` read as the new heads while its bundles named the driver's), or `none` where the detector judges alone
        (the promoted one stepped aside). An id, not this machine's path: another node keeps its models folder where
        it keeps it."""
        if judgement.verifier is None:
            checked = NONE
        else:
            checked = self.verifier if judgement.chosen and self.verifier else judgement.verifier.heads.card.id
        model = ModelInfo(facts["model"], facts["sha256"], VerifierInfo.of(judgement))
        return WatchSpec(self.cameras_path, self.settings, self.taxonomy, model, facts, checked, self.replay,
                         self.snapshot_every_s if self.snapshot_dir else None, self.settings.cluster.checkpoint_s, log_level)

    def _start_owner(self, group: _Group) -> None:
        import ray

        owner = ray.remote(CameraOwner).options(num_cpus=1, scheduling_strategy="SPREAD", max_concurrency=4)
        group.owner = owner.remote(self._spec, group.camera_ids, self._servers, self._checkpoints)
        group.run = group.owner.run.remote()
        group.drain = None
        log.info("%s: cameras %s %s", group.name, ", ".join(group.camera_ids), "restarted" if group.restarts else "started")

    # ---- running --------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful stop (safe from a signal handler)."""
        self._stop = True

    def run(self, poll_s: float = 1.0) -> dict:
        """Start, then supervise until `stop()` or, in replay, until every owner is done; returns the summary."""
        import ray

        self.start()
        try:
            while not self._stop:
                pending = [g.run for g in self.groups if g.summary is None and g.failed is None]
                if not pending:
                    break
                done, _ = ray.wait(pending, num_returns=len(pending), timeout=poll_s)
                self._collect(done)
                self._drain_all(wait_s=0.0)
                self._assign_new_cameras()
        finally:
            self._shutdown()
        return self.summary()

    def _collect(self, done: list) -> None:
        import ray

        for group in self.groups:
            if group.run not in done:
                continue
            try:
                group.summary = ray.get(group.run)
            except ray.exceptions.RayActorError as exc:
                self._owner_failed(group, exc)
            except ray.exceptions.RayTaskError as exc:  # a bug in the owner: restarting would fail the same way
                group.failed = f"owner failed: {exc}"
                self._status(group, Status.FAILED, group.failed)

    def _owner_failed(self, group: _Group, exc: Exception) -> None:
        self.metrics.owner_failures.labels(group.name).inc()
        if group.restarts >= self.settings.cluster.max_restarts:
            group.failed = f"owner died {group.restarts + 1} times; last: {type(exc).__name__}"
            self._status(group, Status.FAILED, group.failed)
            return
        group.restarts += 1
        log.warning("%s died (%s): restarting cameras %s elsewhere", group.name, type(exc).__name__, ", ".join(group.camera_ids))
        self._status(group, Status.RECONNECTING, f"owner died ({type(exc).__name__}); restarting on another node")
        self.metrics.forget(group.name)
        self._start_owner(group)

    def _status(self, group: _Group, status: Status, detail: str) -> None:
        for cid in group.camera_ids:
            self._camera_status(cid, status, detail)

    def _camera_status(self, camera_id: str, status: Status, detail: str) -> None:
        """A `camera_status` record of the driver's (an owner cannot write its own: it died, or is left behind), which
        the events file keeps and the cameras page shows."""
        self._record(CameraStatus(camera_id, status, detail, datetime.now(UTC)).to_record())

    def _record(self, data: dict) -> None:
        self.records.append(data)
        if self.on_record is not None:
            self.on_record(data)

    def _drain_all(self, wait_s: float) -> None:
        """Take every live owner's records, snapshots and metrics (calls answered by `wait_s`; the rest next round)."""
        import ray

        live = [g for g in self.groups if g.owner is not None and g.failed is None]
        for g in live:
            if g.drain is None:
                g.drain = g.owner.drain.remote()
        refs = [g.drain for g in live]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=wait_s) if refs else ([], [])
        for g in live:
            if g.drain not in ready:
                continue
            ref, g.drain = g.drain, None
            try:
                out = ray.get(ref)
            except ray.exceptions.RayError:
                continue  # a dead owner: `run` says so and it is restarted
            g.node = out["node"]
            for data in out["records"]:
                self._record(data)
            for cid, jpeg in out["snapshots"].items():
                _write_snapshot(self.snapshot_dir, cid, jpeg)
            self.metrics.update(g.name, out["node"], out["metrics"])
        self._inference_metrics()

    def _inference_metrics(self) -> None:
        import ray

        refs = [s.metrics.remote() for s in self._servers]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0.5)
        for i, ref in enumerate(refs):
            if ref in ready:
                try:
                    for frames, seconds in ray.get(ref):
                        self.metrics.observe_batch(str(i), frames, seconds)
                except ray.exceptions.RayError:
                    pass

    def _file_mtime(self) -> float:
        try:
            return self.cameras_path.stat().st_mtime
        except OSError:
            return -1.0

    def _assign_new_cameras(self) -> None:
        """Cameras added to the file since the start get owners of their own (owners reload their share themselves)."""
        mtime = self._file_mtime()
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            loaded = load_cameras(self.cameras_path, self.taxonomy, tracking=self.settings.tracking, rules=self.settings.rules,
                                  dispatch_targets=list(self.settings.dispatch.targets), timezone=self.settings.timezone)
        except Exception as exc:  # noqa: BLE001 - a broken file keeps the cameras running (the owners say so too)
            log.error("cameras file not reloaded: %s", exc)
            return
        held = {cid for g in self.groups for cid in g.camera_ids}
        new = sorted(c.id for c in loaded.cameras if c.id not in held)
        size = self.settings.cluster.cameras_per_owner
        for k in range(0, len(new), size):
            group = _Group(f"owner-{len(self.groups):03d}", new[k:k + size])
            self.groups.append(group)
            self._start_owner(group)

    def _shutdown(self) -> None:
        """Stop every owner gracefully (frames queued are judged, events recorded), then take their last records. An
        owner not stopped within `cluster.stop_wait_s` is left behind, its cameras named in the log: its result was
        fetched without a timeout, so one slow or hung owner held the stop, every camera's state file with it."""
        import ray

        live = [g for g in self.groups if g.summary is None and g.failed is None and g.owner is not None]
        for g in live:
            g.owner.stop.remote()
        late: list[_Group] = []
        if live:
            done, _ = ray.wait([g.run for g in live], num_returns=len(live), timeout=self.settings.cluster.stop_wait_s)
            self._collect(done)
            late = [g for g in live if g.run not in done]
        self._drain_all(wait_s=10.0)
        self._save_states(late)

    def _save_states(self, late: list[_Group]) -> None:
        """The cameras' latest checkpoints (each owner stopped gracefully has put its last) into the state file. A
        camera whose owner failed, or did not stop in time (`late`: each camera named in the log and the summary), keeps
        its latest checkpoint in the cluster; one that judged nothing, the state it started from."""
        import ray

        if self._checkpoints is None:
            return
        states: dict[str, tuple[State, str]] | None = None
        if self.state_path is not None:
            held = [cid for g in self.groups for cid in g.camera_ids]
            try:
                states = ray.get(self._checkpoints.restorable.remote(held), timeout=CALL_TIMEOUT_S)
            except ray.exceptions.RayError as exc:
                log.error("%s", self._not_saved(exc))
        for g in late:
            for cid in g.camera_ids:
                g.left_behind[cid] = (f"{g.name} did not stop within {self.settings.cluster.stop_wait_s:g} s "
                                      f"(cluster.stop_wait_s): {self._kept(cid, states)}")
                log.warning("camera %s: %s", cid, g.left_behind[cid])
                self._camera_status(cid, Status.LEFT_BEHIND, g.left_behind[cid])  # else the pages show its status before the stop
        if self.state_path is not None and states is not None:
            keep_file(self.state_path, {cid: state for cid, (state, _) in states.items()})

    def _not_saved(self, exc: Exception) -> str:
        """The error line of a state file not written because the checkpoint actor failed (`--state` only: with
        `--no-state` nothing is asked of it, so no line names a file that is not there)."""
        return (f"{self.state_path}: rules states not saved: the checkpoint actor failed ({type(exc).__name__}); the file "
                "keeps what the stop before wrote, if anything")

    def _kept(self, cid: str, states: dict[str, tuple[State, str]] | None) -> str:
        """Which state of a camera the state file keeps (`states`: None when the checkpoint actor could not be read),
        for the log line and the summary of a camera whose owner did not stop in time."""
        if self.state_path is None:
            return "no state kept (--no-state)"
        if states is None:
            return f"{self.state_path} not written (the checkpoint actor failed): it keeps what the stop before wrote"
        if cid not in states:
            return f"{self.state_path} keeps no state of it: it starts afresh"
        (_, ts, _), origin = states[cid]
        return f"{self.state_path} keeps its state from {origin} (last frame judged {ts.isoformat()}), not its state at the stop"

    # ---- summary --------------------------------------------------------------------------

    def summary(self) -> dict:
        cameras: dict[str, dict] = {}
        opened = 0
        for g in self.groups:
            if g.summary is not None:
                cameras.update(g.summary["cameras"])
                opened += g.summary["cases_opened"]
            for cid in g.camera_ids:
                if g.failed is not None:
                    cameras[cid] = {"status": Status.FAILED.value, "reason": g.failed}
                elif cid in g.left_behind:  # its owner did not stop in time: no summary of its own
                    cameras[cid] = {"status": Status.LEFT_BEHIND.value, "reason": g.left_behind[cid]}
                if cid in cameras:
                    cameras[cid]["owner"] = g.name
                    cameras[cid]["node"] = g.node
                    cameras[cid]["owner_restarts"] = g.restarts
        for cid, message in self.refused.items():
            cameras[cid] = {"status": Status.REFUSED.value, "reason": message}
        return {"cameras": cameras, "cases_opened": opened, "owners": len(self.groups),
                "restarts": sum(g.restarts for g in self.groups), "cluster": self.info.describe()}


def _write_snapshot(folder: Path | None, camera_id: str, jpeg: bytes) -> None:
    """`<folder>/<camera id>.jpg` (`pipelines.cctv.snapshots.write_snapshot`), when snapshots are kept."""
    if folder is not None:
        write_snapshot(folder, camera_id, jpeg)
