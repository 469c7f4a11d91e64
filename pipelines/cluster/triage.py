"""Photo triage on a Ray cluster: the per-photo steps of `pipelines.triage` in warm actors.

    driver           CPU cluster: worker actors             driver (as a single-process run)
    listing  ─────►  read + detector/verifier + text  ─────► in input order: duplicates, rules,
    (expand_         (one `PhotoSteps` per actor, the        thumbnail, results.jsonl; then groups,
     sources)         steps a worker thread runs)            cases, report
                     GPU cluster: read actors (CPU) ─► see actors (GPU, batched) ─► finish actors (CPU)

Every actor calls the `PhotoSteps` the worker threads of a single-process run call (`read`, `look`,
`finish`), and the outcomes feed the same `record_outcomes` loop and writer: results.jsonl,
report.html and the cases come out as they do without Ray, and `--resume` reads the same journal
(its resume indexes travel with the run's spec).

Why actors that outlive a run, not a Ray Data pipeline: a Ray Data actor pool lives and dies with
one dataset execution, so every run started new worker processes, imported streetwatch in each and
loaded a detector in each: about 6-8 s before the first photo on 2 cores (benchmarks/results/
ray-triage-cpu-2026-12-02-quiet.json), as long as the single-process run of 40 photos takes. Here
the actors are named by what they hold (code, role, detector settings) and stay up for
`cluster.keep_actors_s` after their last photo, so the next run on the same cluster (another
`streetwatch triage --ray ADDRESS`, a benchmark round) finds them warm. Ray places them and
restarts them when they die; the driver only keeps the input order and a bounded window of
batches in flight (round-robin over same-sized actors).

A dead actor (or node) loses no photo: Ray restarts the actor and runs its call again, and only the
driver records, once per outcome it receives, so nothing is recorded twice. An actor that stopped
for good (idle expiry racing a new run, or `ray kill` by an operator) is started again by the
driver and its batch resent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detect.engine import Detector, load_detector
from detect.judgement import Judgement, load_judgement
from detect.taxonomy import Taxonomy
from pipelines.cluster.connect import LOCAL, ClusterError, ClusterInfo
from pipelines.grid import GridCells
from pipelines.settings import ClusterConfig
from pipelines.triage.analyse import Analyser
from pipelines.triage.journal import Journal
from pipelines.triage.photos import Photo
from pipelines.triage.pipeline import STAGES, Outcome, PhotoSteps, RunStats, record_outcomes
from pipelines.triage.run import triage_detector
from pipelines.triage.settings import TriageSettings
from pipelines.triage.sources import PhotoSource, Refused

log = logging.getLogger(__name__)

#: GPU clusters: of the CPUs beside the see actors, this share reads photos and the rest reads text
#: (OCR) and verified regions. Per photo, decoding takes about a quarter of the CPU that the rest
#: does (benchmarks/README.md, stage split).
READ_SHARE = 0.25
#: Batches in flight per actor of the widest stage: one running, one waiting, so an actor never idles
#: while the driver collects.
IN_FLIGHT_PER_ACTOR = 2
#: A batch whose actor stopped for good is resent this often before the run gives up.
RESENDS = 3
ACTOR_PREFIX = "streetwatch-triage-"
#: A warm actor gives its resources up to another run only after this long without a batch: a run
#: in progress keeps its actors busy with no gap near this long (two batches queued per actor).
RETIRE_IDLE_S = 2.0


@dataclass(frozen=True)
class DetectorArgs:
    """What a see actor loads (`load_detector` arguments); part of its name, so a run with other
    detector settings never borrows it."""

    model: str | None  # None: the default model
    backend: str
    device: str
    conf: float
    imgsz: int
    threads: int | None
    max_batch: int
    features: bool

    def load(self) -> Detector:
        return load_detector(self.model, backend=self.backend, device=self.device, conf=self.conf, imgsz=self.imgsz,
                             threads=self.threads, max_batch=self.max_batch, features=self.features)


@dataclass(frozen=True)
class Stage:
    """One hop of the chain: `count` actors of `role`, each calling `method` on a batch."""

    role: str  # "worker" (all steps), "read", "see", "finish"
    method: str
    count: int
    cpus: float
    gpus: float = 0.0
    detector: DetectorArgs | None = None


@dataclass(frozen=True)
class Plan:
    """How the run uses the cluster (`plan`)."""

    device: str
    stages: tuple[Stage, ...]
    batch: int  # photos per actor call (a GPU batch)

    def count(self, role: str) -> int:
        return sum(s.count for s in self.stages if s.role == role)

    def describe(self) -> dict:
        see = next(s for s in self.stages if s.detector is not None)
        return {"device": self.device, "see_actors": see.count, "gpus_per_actor": see.gpus, "read_actors": self.count("read"),
                "finish_actors": self.count("finish"), "photos_per_batch": self.batch}


def plan(info: ClusterInfo, config: ClusterConfig, settings: TriageSettings, features: bool | None = None) -> Plan:
    """GPU actors when the cluster has GPUs (unless the run set a CPU device), CPU actors otherwise.

    CPU clusters: one actor per CPU runs all steps of its photos with one inference thread, one photo
    per call, as a worker thread of a single-process run does (no photo crosses processes before it
    is judged, and the driver records each as it comes).
    GPU clusters: a see actor per GPU gets `photos_per_batch` photos per detector call, read by CPU
    actors before it and finished (OCR, verified regions) by CPU actors after it, so a GPU never
    waits for decoding or OCR."""
    features = (str(settings.verifier).lower() != "none") if features is None else features
    gpus = int(info.gpus)
    device = settings.device
    if gpus and "device" not in settings.model_fields_set:
        device = "cuda"
    batch = config.photos_per_batch

    def detector(threads: int | None, batch: int) -> DetectorArgs:
        model = None if settings.model is None else str(settings.model)
        return DetectorArgs(model, settings.backend, device, settings.conf, settings.imgsz, threads, batch, features)

    if device.startswith(("cuda", "tensorrt")):
        if not gpus:
            raise ClusterError(f"--device {device}, but the Ray cluster at {info.address} has no GPU")
        n = config.inference_actors or gpus
        rest = max(2, int(info.cpus) - n)
        readers = max(1, round(rest * READ_SHARE))
        return Plan(device, (Stage("read", "read", readers, 1.0), Stage("see", "look", n, 1.0, 1.0, detector(None, batch)),
                             Stage("finish", "finish", max(1, rest - readers), 1.0)), batch)
    n = config.inference_actors or max(1, int(info.cpus))
    return Plan(device, (Stage("worker", "run", n, 1.0, 0.0, detector(1, 1)),), 1)


@dataclass
class StepsSpec:
    """What an actor needs to build a run's `PhotoSteps` (a judgement and an archive cache do not
    travel; they are built where they run). Put in the object store once per run; actors fetch it
    on the first batch of a run (`token`) and keep the steps for the next batches."""

    settings: TriageSettings
    journal: Journal
    grid: GridCells | None
    taxonomy: Taxonomy
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def steps(self, detector: Detector | None, judging: bool) -> PhotoSteps:
        if not judging:  # reading only: no verifier, no detector
            return PhotoSteps(self.settings, self.journal, self.grid, Judgement(None, self.taxonomy))
        judgement = load_judgement(self.settings.verifier, self.taxonomy)
        if detector is not None:
            judgement.check(detector)
        return PhotoSteps(self.settings, self.journal, self.grid, judgement, detector)


@dataclass
class Batch:
    """Photos in flight: (input index, source or outcome) pairs and the stage seconds spent on them."""

    items: list[tuple[int, Any]]
    seconds: dict[str, float] = field(default_factory=dict)


class SeePhotos:
    """A warm triage actor (made a Ray actor by `RayPhotos`): reads, looks at (detector + verifier)
    and finishes photos with the steps of the run that sent them. Holds its detector across runs;
    stops itself after `keep_s` seconds without a batch (0: it lives as long as its driver)."""

    RUNS_KEPT = 4  # steps of this many recent runs (concurrent runs may share an actor)

    def __init__(self, detector: DetectorArgs | None, keep_s: float) -> None:
        self._args = detector
        self._detector: Detector | None = None
        self._runs: dict[str, PhotoSteps] = {}
        self._last = time.monotonic()
        self._busy = False
        self._keep_s = keep_s
        if keep_s > 0:
            threading.Thread(target=self._expire, name="expiry", daemon=True).start()

    def read(self, box: list, token: str, batch: Batch) -> Batch:
        return self._call(box, token, batch, False, [_read])

    def look(self, box: list, token: str, batch: Batch) -> Batch:
        return self._call(box, token, batch, True, [_look])

    def finish(self, box: list, token: str, batch: Batch) -> Batch:
        return self._call(box, token, batch, True, [_finish])

    def run(self, box: list, token: str, batch: Batch) -> Batch:
        return self._call(box, token, batch, True, [_read, _look, _finish])

    def retire(self, idle_s: float) -> bool:
        """True when no batch came for `idle_s` seconds: the asking driver then kills this actor (a run
        of another configuration needs the CPUs or GPU). False when busy. The driver kills it, after
        this answer has reached it, with `ray.kill` from outside (Ray's documented way), rather than the
        actor killing itself in the middle of its own call. A batch of a concurrent run that slips in
        before the kill is resent by its driver, as for any actor that stops for good."""
        if self._busy or time.monotonic() - self._last < idle_s:
            return False
        log.info("triage actor stops: a run of another configuration needs its resources")
        return True

    def _call(self, box: list, token: str, batch: Batch, judging: bool,
              fns: list[Callable[[PhotoSteps, list], list]]) -> Batch:
        self._busy = True
        try:
            steps = self._steps(box, token, judging)
            items = batch.items
            for fn in fns:
                items = fn(steps, items)
            seconds = dict(batch.seconds)
            for stage, s in steps.stages.seconds.items():
                if s:
                    seconds[stage] = seconds.get(stage, 0.0) + s
            steps.stages.seconds = dict.fromkeys(STAGES, 0.0)
            return Batch(items, seconds)
        finally:
            self._busy = False
            self._last = time.monotonic()

    def _steps(self, box: list, token: str, judging: bool) -> PhotoSteps:
        steps = self._runs.get(token)
        if steps is None:
            import ray

            spec: StepsSpec = ray.get(box[0])
            if judging and self._args is not None and self._detector is None:
                self._detector = self._args.load()
            while len(self._runs) >= self.RUNS_KEPT:
                self._runs.pop(next(iter(self._runs)))
            steps = self._runs[token] = spec.steps(self._detector, judging)
        return steps

    def _expire(self) -> None:
        while True:
            time.sleep(min(self._keep_s, 10.0))
            if not self._busy and time.monotonic() - self._last > self._keep_s:
                self._stop(f"no photos for {self._keep_s:g} s")
                return

    @staticmethod
    def _stop(why: str) -> None:
        import ray

        log.info("triage actor stops: %s", why)
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


def _read(steps: PhotoSteps, items: list) -> list:
    return [(i, steps.read(source)) for i, source in items]


def _look(steps: PhotoSteps, items: list) -> list:
    photos = [o for _, o in items if isinstance(o, Photo)]
    looked = iter(steps.look(photos) if photos else [])
    return [(i, next(looked) if isinstance(o, Photo) else o) for i, o in items]


def _finish(steps: PhotoSteps, items: list) -> list:
    return [(i, steps.finish(o) if isinstance(o, tuple) else o) for i, o in items]


def code_digest() -> str:
    """Digest of the streetwatch code this process runs, part of every warm actor's name: a driver
    of another version never borrows an actor that runs other code."""
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for package in ("detect", "pipelines"):
        for path in sorted((root / package).rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def retire_idle_actors(namespace: str, keep: set[str] | frozenset[str] = frozenset()) -> tuple[int, int]:
    """Stop the warm triage actors of `namespace` (except those named in `keep`) that are idle, so a
    run of other settings, or `watch --ray`, gets the CPUs and GPUs they hold; returns (stopped, busy).

    An actor that answers "not idle" is asked once more `RETIRE_IDLE_S` later: one whose run ended a
    moment ago (seen in the slow Ray test: 1.9 s before the next run asked) is idle by then, while one
    serving a run in progress has had batches meanwhile."""
    import ray
    from ray.util import list_named_actors

    actors = []
    for entry in list_named_actors(all_namespaces=True):
        name = entry["name"]
        if entry["namespace"] != namespace or not name.startswith(ACTOR_PREFIX) or name in keep:
            continue
        try:
            actors.append(ray.get_actor(name, namespace=namespace))
        except ValueError:  # gone meanwhile
            continue
    stopped, asked = 0, len(actors)
    for attempt in range(2):
        if attempt and actors:
            time.sleep(RETIRE_IDLE_S)
        calls = [(actor, actor.retire.remote(RETIRE_IDLE_S)) for actor in actors]
        actors = []
        for actor, call in calls:
            try:
                idle = bool(ray.get(call, timeout=60))
            except ray.exceptions.RayActorError:  # it stopped before it could answer
                stopped += 1
                continue
            if idle:
                ray.kill(actor, no_restart=True)
                stopped += 1
            else:
                actors.append(actor)
    if asked:
        log.info("warm triage actors of other settings: %d idle ones stopped, %d busy left", stopped, asked - stopped)
    return stopped, asked - stopped


class ClusterModel:
    """The driver's copy of the model (loaded on its CPU: model id, weights, neck output for the
    verifier check, the cases' model digest); `describe()` says where the photos were really seen."""

    def __init__(self, detector: Detector, plan: Plan, info: ClusterInfo) -> None:
        self._detector, self._plan, self._info = detector, plan, info

    def __getattr__(self, name: str) -> Any:
        return getattr(self._detector, name)

    def describe(self) -> dict:
        return {**self._detector.describe(), "device": self._plan.device, "ray": {**self._info.describe(), **self._plan.describe()}}


class RayPhotos:
    """`run_triage(..., photos=RayPhotos(info, config))`: the per-photo steps on the cluster `info`."""

    def __init__(self, info: ClusterInfo, config: ClusterConfig) -> None:
        self.info, self.config = info, config
        self.plan: Plan | None = None
        self._code = code_digest()
        self.actors = {"warm": 0, "started": 0}  # of the last run

    def load_detector(self, settings: TriageSettings, features: bool) -> Detector:
        self.plan = plan(self.info, self.config, settings, features)
        driver = triage_detector(settings.model_copy(update={"device": "cpu", "workers": os.cpu_count() or 1}), features=features)
        return ClusterModel(driver, self.plan, self.info)  # type: ignore[return-value]

    def process(self, sources: list[PhotoSource | Refused], settings: TriageSettings, detector: Detector, analyser: Analyser,
                journal: Journal, grid: GridCells | None, judgement: Judgement, show_progress: bool) -> RunStats:
        import ray

        p = self.plan or plan(self.info, self.config, settings, judgement.needs_features)
        stats = RunStats(listed=len(sources))
        if not sources:
            return record_outcomes([], stats, analyser, journal, show_progress=show_progress)
        spec = StepsSpec(settings, journal, grid, analyser.taxonomy)
        box = [ray.put(spec)]  # in a list, so Ray passes the reference and an actor fetches it once per run
        items = list(enumerate(sources))
        batches = [Batch(items[k:k + p.batch]) for k in range(0, len(items), p.batch)]
        pools = self._pools(p)
        log.info("triage on Ray (%s): %s", self.info.describe(), p.describe())
        try:
            return record_outcomes(self._outcomes(p, pools, box, spec.token, batches, stats), stats, analyser, journal,
                                   show_progress=show_progress)
        finally:
            if self.config.keep_actors_s <= 0:
                for actors in pools:
                    for actor in actors:
                        ray.kill(actor, no_restart=True)

    def _pools(self, p: Plan) -> list[list]:
        """The actors of each stage: the warm ones of this configuration, started where missing;
        idle warm actors of other configurations are asked to give their resources up first."""
        import ray

        keep = self.config.keep_actors_s
        names = [[self._name(stage, k) for k in range(stage.count)] for stage in p.stages]
        if keep > 0:
            retire_idle_actors(self.config.namespace, {n for group in names for n in group})
        pools, started = [], 0
        for stage, group in zip(p.stages, names, strict=True):
            actors = []
            for name in group:
                if keep > 0:
                    try:
                        actors.append(ray.get_actor(name, namespace=self.config.namespace))
                        continue
                    except ValueError:
                        pass
                actors.append(self._start(stage, name))
                started += 1
            pools.append(actors)
        self.actors = {"warm": sum(map(len, pools)) - started, "started": started}
        log.info("triage actors: %s", self.summary())
        return pools

    def summary(self) -> str:
        """A line for the run's output: how many actors were found warm and how long they stay."""
        keep = self.config.keep_actors_s
        if self.info.address == LOCAL:
            stay = "they stop with this run's local cluster"
        elif keep > 0:
            stay = f"they stay up {keep:g} s after their last photo (cluster.keep_actors_s)"
        else:
            stay = "they stopped with the run"
        return f"Ray: {self.actors['warm']} triage actors found warm, {self.actors['started']} started; {stay}"

    def _start(self, stage: Stage, name: str):
        import ray

        keep = self.config.keep_actors_s
        named = dict(name=name, namespace=self.config.namespace, lifetime="detached", get_if_exists=True) if keep > 0 else {}
        return ray.remote(SeePhotos).options(num_cpus=stage.cpus, num_gpus=stage.gpus, max_restarts=-1, max_task_retries=-1,
                                             **named).remote(stage.detector, keep)

    def _name(self, stage: Stage, k: int) -> str:
        key = hashlib.sha256(repr((self._code, stage)).encode()).hexdigest()[:12]
        return f"{ACTOR_PREFIX}{stage.role}-{key}-{k}"

    def _outcomes(self, p: Plan, pools: list[list], box: list, token: str, batches: list[Batch],
                  stats: RunStats) -> Iterator[Outcome]:
        """Outcomes in input order, the remote stage seconds added to the run's; at most
        `IN_FLIGHT_PER_ACTOR` batches per actor of the widest stage in flight."""
        import ray
        from ray.exceptions import RayActorError

        def send(k: int) -> Any:
            ref: Any = batches[k]
            for stage, actors in zip(p.stages, pools, strict=True):
                ref = getattr(actors[k % len(actors)], stage.method).remote(box, token, ref)
            return ref

        window = IN_FLIGHT_PER_ACTOR * max(map(len, pools))
        pending: deque[tuple[int, Any, int]] = deque((k, send(k), 0) for k in range(min(window, len(batches))))
        following = len(pending)
        while pending:
            k, ref, resent = pending.popleft()
            try:
                batch: Batch = ray.get(ref)
            except RayActorError as exc:
                if resent >= RESENDS:
                    raise ClusterError(f"photos {batches[k].items[0][0] + 1}-{batches[k].items[-1][0] + 1}: the triage "
                                       f"actor stopped {resent + 1} times ({exc})") from exc
                log.warning("a triage actor stopped for good (%s); starting it again and resending its photos", exc)
                pools[:] = self._pools(p)
                pending.appendleft((k, send(k), resent + 1))
                continue
            if following < len(batches):
                pending.append((following, send(following), 0))
                following += 1
            for stage, seconds in batch.seconds.items():
                stats.stages.add(stage, seconds)
            for _, outcome in batch.items:
                yield outcome
