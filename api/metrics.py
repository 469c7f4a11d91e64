"""Prometheus metrics of the API service (one registry per app, so tests can build several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("streetwatch_api_requests", "HTTP requests answered", ["method", "handler", "status"], registry=r)
        self.latency = Histogram("streetwatch_api_request_seconds", "Time to answer a request", ["method", "handler"],
                                 registry=r, buckets=LATENCY_BUCKETS)
        self.uploads = Counter("streetwatch_api_upload_bytes", "Bytes of accepted uploads", registry=r)
        self.jobs = Counter("streetwatch_api_triage_jobs", "Triage jobs by outcome (created, done, failed)", ["outcome"], registry=r)
        self.jobs_running = Gauge("streetwatch_api_triage_jobs_running", "Triage jobs running now", registry=r)
        self.reviews = Counter("streetwatch_api_review_actions", "Review actions by kind", ["action"], registry=r)
        self.webhooks = Counter("streetwatch_api_webhooks", "Dispatch webhook calls by target and answer", ["target", "status"], registry=r)
