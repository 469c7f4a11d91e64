"""What every route depends on: the app's context (stores, jobs, cameras, metrics) and `get_ctx`.

Kept apart from `api.app` so that routers and auth import it without importing the app that
includes them: the dependency graph runs app -> routers -> auth -> context, never back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request

from api.accounts import Accounts
from api.cameras import Cameras
from api.config import ServiceConfig, named_files
from api.exports import ExportGate
from api.jobs import TriageJobs
from api.metrics import ApiMetrics
from detect.taxonomy import Taxonomy
from pipelines.cases.store import CaseStore
from pipelines.dispatch.webhook import SeenCalls
from pipelines.evidence_store import EvidenceStore, open_evidence_store
from pipelines.logs import RecurringLog
from pipelines.settings import Settings
from pipelines.url_signing import UrlSigner


@dataclass
class AppContext:
    """Everything the routers use, built once per app (reachable as `request.app.state.ctx`)."""

    settings: Settings
    service: ServiceConfig
    store: CaseStore
    accounts: Accounts
    evidence: EvidenceStore
    signer: UrlSigner
    jobs: TriageJobs
    cameras: Cameras
    metrics: ApiMetrics
    taxonomy: Taxonomy
    exports: ExportGate  # the case, call-out and scores-workbook exports' and the map's own threads (`service.export_concurrency`)
    webhook_calls: SeenCalls  # timestamped webhook calls taken: in the case store, shared by the site's processes
    #: The errors a request may meet on every call while they last (the store down, a setting not set), logged bounded
    errors_log: RecurringLog = field(default_factory=lambda: RecurringLog(logging.getLogger("api.problems")))

    @property
    def page_tz(self) -> ZoneInfo:
        """The zone the pages show every time in (`GET /meta`'s `timezone`) and read the times staff type in (the
        patrol upload's 开始时间 Start): `analytics.timezone`, the settings' top-level (city) `timezone` unless that
        section sets its own. One zone for both, so that a time typed on a page means what the page shows."""
        return ZoneInfo(self.settings.analytics.timezone)

    def config_error(self, exc: Exception | str) -> str:
        """A configuration file's error as the API answers it: each file named by its setting, a camera's scene and
        grades files as the cameras file names them, the map zones' grades file as theirs does (`api.config.named_files`),
        never by its server path (the log may keep it): `Settings.named_by_setting`."""
        return self.settings.named_by_setting(str(exc), files=named_files(self.service))

    def close(self) -> None:
        self.jobs.shutdown(wait=True)
        self.store.close()


def build_context(settings: Settings, service: ServiceConfig, detector_factory: Callable[[], Any] | None = None) -> AppContext:
    store = settings.cases.open()
    evidence = open_evidence_store(settings.evidence_store, service.url_key())  # one client for the routes and the jobs
    metrics = ApiMetrics()
    taxonomy = settings.load_taxonomy()
    return AppContext(
        settings=settings, service=service, store=store, accounts=Accounts(engine=store.engine),
        evidence=evidence, signer=UrlSigner(service.url_key(), service.url_expiry_s),
        jobs=TriageJobs(service, settings, metrics, detector_factory, store=store, evidence=evidence),
        cameras=Cameras(service.cameras_file, service.camera_events, service.snapshot_dir, taxonomy),
        metrics=metrics, taxonomy=taxonomy, exports=ExportGate(service.export_concurrency, service.export_queue),
        webhook_calls=SeenCalls(store.engine),
    )


def get_ctx(request: Request) -> AppContext:
    """Dependency: the app's context (stores, jobs, cameras, metrics)."""
    return request.app.state.ctx
