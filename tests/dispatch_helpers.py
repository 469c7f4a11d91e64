"""Helpers for dispatch tests: a simulator subprocess and queued cases with real evidence bundles."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import httpx

from detect.evidence.builder import BundleContext, EvidenceBuilder, ModelInfo, VerifierInfo
from detect.evidence.config import EvidenceConfig
from detect.frames import GeoPoint
from pipelines.cases import CaseStore
from pipelines.cases.intake import Intake
from tests.conftest import REPO, start_server, stop_process
from tests.pg import free_port

KEY = b"test-key-0123456789abcdef"
MODEL = ModelInfo("yolo11n-int8dq", "ab" * 32, VerifierInfo("street-v7", "cd" * 32, "ef" * 32))  # digests as a manifest holds them


class Sim:
    """A `streetwatch dispatch-sim` subprocess on a free loopback port."""

    def __init__(self, log_dir: Path, *args: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "streetwatch.cli", "dispatch-sim", "--port", str(self.port), "--seed", "7", *args]
        self.proc = start_server(cmd, "127.0.0.1", self.port, log_dir / f"sim-{self.port}.log", cwd=REPO)

    def received(self) -> dict:
        return httpx.get(f"{self.base}/sim/received", timeout=10).json()

    def cases(self, protocol: str | None = None) -> list[dict]:
        return [c for c in self.received()["cases"] if protocol is None or c["protocol"] == protocol]

    def faults(self, **kw) -> dict:
        return httpx.post(f"{self.base}/sim/faults", json=kw, timeout=10).json()

    def set_status(self, ref: str, status: str, note: str | None = None) -> dict:
        return httpx.post(f"{self.base}/sim/cases/{ref}/{status}", json={"note": note}, timeout=20).json()

    def stop(self) -> None:
        stop_process(self.proc)


Answer = tuple[int, dict[str, str], bytes]


class Platform(ThreadingHTTPServer):
    """A real HTTP server on a free loopback port that answers every request with `answer(handler)`:
    (status, headers, body). For platforms the simulator does not imitate (redirects, Retry-After,
    broken encodings ...). `requests` records (method, path, body) of each call."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], Answer]):
        self.answer, self.requests = answer, []
        super().__init__(("127.0.0.1", 0), _PlatformHandler)
        self.base = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _PlatformHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.command, self.path, body))
        status, headers, data = self.server.answer(self)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer


def small_event(bus_event):
    """The real bus event on a 1/3-scale frame (fast to encode when a test needs hundreds of bundles)."""
    event, _ = bus_event
    frame = event.frame
    image = cv2.resize(frame.image, (frame.width // 3, frame.height // 3), interpolation=cv2.INTER_AREA)
    dets = event.detections[:]
    dets.xyxy = dets.xyxy / 3
    small = replace(frame, image=image, path=None)
    return replace(event, frame=small, first_frame=small, detections=dets)


def queue_cases(store: CaseStore, evidence, spool: Path, event, n: int, target: str, *, source_kind: str = "camera",
                geo: GeoPoint | None = GeoPoint(30.2741, 120.1551), address: str | None = "杭州市西湖区文三路 1 号",
                prefix: str = "cam-01", signer=None, model: ModelInfo = MODEL) -> list[str]:
    """`n` cases through the real intake (bundle built, stored, case auto-queued for `target`); their ids.
    `signer`: an Ed25519 private key that also signs the bundles; `model`: what their bundles say saw and judged them."""
    intake = Intake(store, evidence, EvidenceBuilder(EvidenceConfig(), KEY, model, signer=signer), spool, auto_queue=target)
    ctx = BundleContext(source_kind=source_kind, source_id=prefix, address=address, grid_cell="330106001001", geo=geo)
    event = replace(event, frame=replace(event.frame, geo=None))
    ids = []
    for i in range(n):
        case = intake.record_event(replace(event, violation_id=f"{prefix}:z1:illegal_parking:t{i}"), ctx)
        assert case.state.value == "queued", case
        ids.append(case.id)
    return ids
