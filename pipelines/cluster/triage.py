"""Photo triage on a Ray cluster: the per-photo steps of `pipelines.triage` as a Ray Data pipeline.

    driver          read tasks (CPU)          see actors                       driver (as a single-process run)
    listing  ─────► bytes, SHA-256,    ─────► detector + verifier       ─────► in input order: duplicates,
    (expand_         reduced decode,          (+ text and verified              rules, thumbnail, results.jsonl;
     sources)        EXIF                      regions on CPU clusters)         then groups, cases, report

Every stage calls the `PhotoSteps` the worker threads of a single-process run call (`read`, `look`,
`finish`), and the outcomes feed the same `record_outcomes` loop and writer: results.jsonl,
report.html and the cases come out as they do without Ray, and `--resume` reads the same journal
(its resume indexes travel to the read tasks). On a cluster with GPUs each see actor holds one GPU
and gets `cluster.photos_per_batch` photos per detector call; text (OCR, CPU-bound) and the
verified regions then run in CPU actors of their own, so a GPU never waits for OCR. On CPU
clusters a see actor finishes its photos itself (one hop less) with one inference thread, as a
worker thread does.

A dead actor (or node) loses no photo: Ray Data starts the actor again and runs its batch again,
and only the driver records, once per outcome it receives, so nothing is recorded twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detect.engine import Detector, load_detector
from detect.judgement import Judgement, load_judgement
from detect.taxonomy import Taxonomy
from pipelines.cluster.connect import ClusterError, ClusterInfo
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

#: CPU clusters: Ray's CPU share of a see actor (one inference thread) and of a read task. Per photo,
#: decoding takes about a quarter of the CPU that inference does (benchmarks/README.md, stage split),
#: so on each core three quarters go to inference and one quarter to reading.
SEE_CPUS = 0.75
READ_CPUS = 0.25


@dataclass(frozen=True)
class Plan:
    """How the run uses the cluster (`plan`)."""

    device: str  # the see actors' device
    see_actors: int
    see_gpus: float
    see_cpus: float
    finish_actors: int  # 0: the see actors finish their photos themselves
    batch: int  # photos per read task and per detector call
    threads: int | None  # inference threads per see actor (None: the backend's default, on a GPU)

    def describe(self) -> dict:
        return {"device": self.device, "see_actors": self.see_actors, "gpus_per_actor": self.see_gpus,
                "finish_actors": self.finish_actors, "photos_per_batch": self.batch}


def plan(info: ClusterInfo, config: ClusterConfig, settings: TriageSettings) -> Plan:
    """GPU actors when the cluster has GPUs (unless the run set a CPU device), CPU actors otherwise."""
    gpus = int(info.gpus)
    device = settings.device
    if gpus and "device" not in settings.model_fields_set:
        device = "cuda"
    if device.startswith(("cuda", "tensorrt")):
        if not gpus:
            raise ClusterError(f"--device {device}, but the Ray cluster at {info.address} has no GPU")
        n = config.inference_actors or gpus
        finish = max(1, int((info.cpus - n) * SEE_CPUS))
        return Plan(device, n, 1.0, 1.0, finish, config.photos_per_batch, None)
    n = config.inference_actors or max(1, round(info.cpus * SEE_CPUS))
    return Plan(device, n, 0.0, SEE_CPUS, 0, config.photos_per_batch, 1)


@dataclass
class StepsSpec:
    """What an actor or task needs to build its own `PhotoSteps` (a judgement, a detector and an
    archive cache do not travel; they are built where they run)."""

    settings: TriageSettings
    journal: Journal
    grid: GridCells | None
    taxonomy: Taxonomy
    plan: Plan
    features: bool
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def reader(self) -> PhotoSteps:
        """Steps that read only (no verifier, no detector), cached per worker process for this run."""
        steps = _READERS.get(self.token)
        if steps is None:
            _READERS.clear()  # another run's reader
            steps = _READERS[self.token] = PhotoSteps(self.settings, self.journal, self.grid, Judgement(None, self.taxonomy))
        return steps

    def judging(self, detector: Detector | None = None) -> PhotoSteps:
        judgement = load_judgement(self.settings.verifier, self.taxonomy)
        if detector is not None:
            judgement.check(detector)
        return PhotoSteps(self.settings, self.journal, self.grid, judgement, detector)

    def detector(self) -> Detector:
        s, p = self.settings, self.plan
        return load_detector(s.model, backend=s.backend, device=p.device, conf=s.conf, imgsz=s.imgsz, threads=p.threads,
                             max_batch=p.batch, features=self.features)


_READERS: dict[str, PhotoSteps] = {}


def _rows(batch: dict[str, np.ndarray], outcomes: list[Any], steps: PhotoSteps) -> dict[str, np.ndarray]:
    """A batch of outcomes as Ray Data rows; the stage seconds of this batch ride on its first row."""
    timing = [json.loads(t) for t in batch["stages"]] if "stages" in batch else [{} for _ in outcomes]
    if timing:
        for stage, seconds in steps.stages.seconds.items():
            if seconds:
                timing[0][stage] = timing[0].get(stage, 0.0) + seconds
        steps.stages.seconds = dict.fromkeys(STAGES, 0.0)
    return {"i": batch["i"], "outcome": _objects([pickle.dumps(o, protocol=5) for o in outcomes]),
            "stages": np.array([json.dumps(t) for t in timing])}


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def read_photos(batch: dict[str, np.ndarray], spec: StepsSpec) -> dict[str, np.ndarray]:
    """Read task: listed inputs -> decoded photos (or skips and error records)."""
    steps = spec.reader()
    outcomes = [steps.read(pickle.loads(item)) for item in batch["item"]]
    return _rows(batch, outcomes, steps)


class SeePhotos:
    """See actor: detector + verifier on the batch's photos (one call), and on CPU clusters the rest
    of the steps too; anything else (skips, error records) passes through."""

    def __init__(self, spec: StepsSpec, finish: bool) -> None:
        self.steps = spec.judging(spec.detector())
        self.finish = finish

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outcomes = [pickle.loads(b) for b in batch["outcome"]]
        photos = [o for o in outcomes if isinstance(o, Photo)]
        looked = iter(self.steps.look(photos) if photos else [])
        outcomes = [next(looked) if isinstance(o, Photo) else o for o in outcomes]
        if self.finish:
            outcomes = [self.steps.finish(o) if isinstance(o, tuple) else o for o in outcomes]
        return _rows(batch, outcomes, self.steps)


class FinishPhotos:
    """CPU actor beside GPU see actors: text lines (OCR) and the verified regions of looked-at photos."""

    def __init__(self, spec: StepsSpec) -> None:
        self.steps = spec.judging()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outcomes = [pickle.loads(b) for b in batch["outcome"]]
        outcomes = [self.steps.finish(o) if isinstance(o, tuple) else o for o in outcomes]
        return _rows(batch, outcomes, self.steps)


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

    def load_detector(self, settings: TriageSettings, features: bool) -> Detector:
        self.plan = plan(self.info, self.config, settings)
        driver = triage_detector(settings.model_copy(update={"device": "cpu", "workers": os.cpu_count() or 1}), features=features)
        return ClusterModel(driver, self.plan, self.info)  # type: ignore[return-value]

    def process(self, sources: list[PhotoSource | Refused], settings: TriageSettings, detector: Detector, analyser: Analyser,
                journal: Journal, grid: GridCells | None, judgement: Judgement, show_progress: bool) -> RunStats:
        import ray.data

        p = self.plan or plan(self.info, self.config, settings)
        stats = RunStats(listed=len(sources))
        if not sources:
            return record_outcomes([], stats, analyser, journal, show_progress=show_progress)
        spec = StepsSpec(settings, journal, grid, analyser.taxonomy, p, features=judgement.needs_features)
        items = [{"i": i, "item": pickle.dumps(s)} for i, s in enumerate(sources)]
        ds = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / p.batch))
        ds = ds.map_batches(read_photos, fn_kwargs={"spec": spec}, batch_size=p.batch, num_cpus=READ_CPUS, batch_format="numpy")
        ds = ds.map_batches(SeePhotos, fn_constructor_kwargs={"spec": spec, "finish": not p.finish_actors},
                            compute=ray.data.ActorPoolStrategy(size=p.see_actors), batch_size=p.batch,
                            num_cpus=p.see_cpus, num_gpus=p.see_gpus or None, batch_format="numpy")
        if p.finish_actors:
            ds = ds.map_batches(FinishPhotos, fn_constructor_kwargs={"spec": spec},
                                compute=ray.data.ActorPoolStrategy(size=p.finish_actors), batch_size=p.batch,
                                num_cpus=1, batch_format="numpy")
        log.info("triage on Ray (%s): %s", self.info.describe(), p.describe())
        return record_outcomes(self._outcomes(ds, stats), stats, analyser, journal, show_progress=show_progress)

    @staticmethod
    def _outcomes(ds, stats: RunStats):
        """Outcomes in input order, the remote stage seconds added to the run's."""
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for blob, timing in zip(batch["outcome"], batch["stages"], strict=True):
                for stage, seconds in json.loads(timing).items():
                    stats.stages.add(stage, seconds)
                outcome: Outcome = pickle.loads(blob)
                yield outcome
