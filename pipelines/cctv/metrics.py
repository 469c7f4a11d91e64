"""Prometheus metrics of the CCTV service (one registry per service, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, start_http_server

from pipelines.cctv.reader import Status

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)

CAMERA_STATES = [s.value for s in Status if s is not Status.LEFT_BEHIND]
"""The states `streetwatch_cctv_camera_status` may show. Not `left_behind`: `watch --ray`'s driver decides it only once
`cluster.stop_wait_s` has run out at the stop and then exits (state file, summary), its /metrics with it, so no scrape
could ever read it; during the wait a scrape sees the owner's last polled state, after it the target is down. The
exit summary, the log line and the events file's `camera_status` record (the cameras page) carry it."""


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        cam = ["camera"]
        self.frames_read = Counter("streetwatch_cctv_frames_read", "Pictures decoded", cam, registry=r)
        self.frames_queued = Counter("streetwatch_cctv_frames_queued", "Sampled frames handed to inference", cam, registry=r)
        self.frames_analysed = Counter("streetwatch_cctv_frames_analysed", "Frames through detector and rules", cam, registry=r)
        self.frames_dropped = Counter("streetwatch_cctv_frames_dropped", "Frames dropped because inference was behind", cam, registry=r)
        self.inference = Histogram("streetwatch_cctv_inference_seconds", "Detector time per batch", registry=r, buckets=LATENCY_BUCKETS)
        self.batch = Histogram("streetwatch_cctv_batch_frames", "Frames per inference batch", registry=r, buckets=(1, 2, 4, 8, 16, 32))
        self.lag = Histogram("streetwatch_cctv_lag_seconds", "Analysis time minus frame time (live cameras)", cam, registry=r,
                             buckets=LATENCY_BUCKETS)
        self.queue_depth = Gauge("streetwatch_cctv_queue_depth", "Frames waiting for inference", registry=r)
        self.events = Counter("streetwatch_cctv_violation_events", "Violation events from the rules", ["camera", "type", "kind"], registry=r)
        self.cases_opened = Counter("streetwatch_cctv_cases_opened", "Candidate cases drafted", ["camera", "type"], registry=r)
        self.reverifications = Counter("streetwatch_cctv_reverifications", "Re-checks of handled cases", ["camera", "outcome"], registry=r)
        self.status = Enum("streetwatch_cctv_camera_status", "Camera stream state", cam, states=CAMERA_STATES, registry=r)
        self.health_active = Gauge("streetwatch_cctv_health_active", "1 while a health condition holds", ["camera", "kind"], registry=r)
        self.reconnect_attempts = Counter("streetwatch_cctv_reconnect_attempts", "Failed connection attempts, each retried", cam, registry=r)
        self.health_events = Counter("streetwatch_cctv_health_events", "Health conditions that started", ["camera", "kind"], registry=r)

    def end_health(self, camera_id: str, keep: frozenset[str] = frozenset()) -> None:
        """Set the camera's active health conditions, but those of the kinds in `keep`, to 0: a reader that starts
        (a reload, a camera removed) begins its conditions afresh and never ends those of the reader before it."""
        for metric in self.health_active.collect():
            for sample in metric.samples:
                if sample.labels["camera"] == camera_id and sample.value and sample.labels["kind"] not in keep:
                    self.health_active.labels(camera_id, sample.labels["kind"]).set(0)

    def serve(self, port: int, addr: str = "127.0.0.1"):
        """Expose /metrics on `addr:port`; returns the server (call `.shutdown()` to stop it)."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 if absent): for tests, logs and the final summary."""
        return self.registry.get_sample_value(name, labels) or 0.0
