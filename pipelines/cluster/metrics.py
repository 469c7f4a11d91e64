"""One Prometheus scrape for a whole cluster run: every owner's metrics, with the node that holds it.

Each owner actor keeps the single-process watcher's registry (`pipelines.cctv.metrics.Metrics`:
frames read, analysed and dropped, lag, cases, camera status and health, per camera). The
supervisor takes their samples at each poll and serves them from the driver, on the address
`watch --metrics-addr` gives (127.0.0.1 by default), each sample labelled with the `node` and the
`owner` it came from, next to the supervisor's own: owner failures and the inference actors'
batches. A restarted owner's counters start again from zero, which Prometheus reads as a counter
reset. Nothing here needs Ray's own metrics agent (the `ray[default]` install).
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import Metric

from pipelines.cctv.metrics import LATENCY_BUCKETS


class ClusterMetrics:
    """The driver's registry: its own metrics plus the latest samples of every owner."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.owner_failures = Counter("streetwatch_cluster_owner_failures", "Owner actors that died (their cameras restart elsewhere)",
                                      ["owner"], registry=r)
        self.inference = Histogram("streetwatch_cluster_inference_seconds", "Detector time per batch in an inference actor",
                                   ["actor"], registry=r, buckets=LATENCY_BUCKETS)
        self.batch = Histogram("streetwatch_cluster_batch_frames", "Frames per detector call in an inference actor (across owners)",
                               ["actor"], registry=r, buckets=(1, 2, 4, 8, 16, 32, 64))
        self._latest: dict[str, tuple[str, list[Metric]]] = {}
        self._lock = threading.Lock()
        r.register(self)

    def update(self, owner: str, node: str, families: list[Metric]) -> None:
        with self._lock:
            self._latest[owner] = (node, families)

    def forget(self, owner: str) -> None:
        """A dead owner's samples go (its replacement reports its own)."""
        with self._lock:
            self._latest.pop(owner, None)

    def observe_batch(self, actor: str, frames: int, seconds: float) -> None:
        self.batch.labels(actor).observe(frames)
        self.inference.labels(actor).observe(seconds)

    def collect(self):
        """Families of every owner merged by name, each sample with its `node` and `owner` labels."""
        with self._lock:
            latest = dict(self._latest)
        merged: dict[str, Metric] = {}
        for owner, (node, families) in sorted(latest.items()):
            for family in families:
                out = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
                for s in family.samples:
                    out.add_sample(s.name, {**s.labels, "node": node, "owner": owner}, s.value, s.timestamp, s.exemplar)
        yield from merged.values()

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples named `name` whose labels include `labels` (tests, summaries)."""
        return sum(s.value for family in self.registry.collect() for s in family.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def serve(self, port: int, addr: str = "127.0.0.1"):
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server
