"""Heavy exports (the case list, the call-out list, as CSV or Excel; the scores workbook) and the map's layers and case
lists (up to `analytics.map_max_cases` cases read and counted, seconds each) on worker threads of their own.

A plain `def` route runs on the worker threads every route shares (anyio's default limiter, 40 threads) for as long
as it takes: a burst of 200 case exports held all of them, and every other request waited for a thread (p50 16 s in
a load audit). An export's blocking work runs instead on `service.export_concurrency` threads (`ExportGate.limiter`),
its request waiting on the event loop, holding no thread, while they are busy; at most `service.export_queue` more
exports wait their turn, and the next is answered 503 with `Retry-After` before any work is done.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import anyio.to_thread
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from api.problems import Problem

#: Seconds a client waits before asking again for an export refused because too many were running or waiting.
EXPORT_RETRY_AFTER_S = 10


@dataclass
class Export:
    """What an export's blocking part (`ExportGate.answer`'s `build`) gives: its bytes, or chunks read as they are sent."""

    content: bytes | Iterator[bytes]
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)


class ExportGate:
    """Admits exports (`answer`) while fewer than `concurrency + queue` run or wait, and runs their blocking work, the
    streaming of their chunks included, on at most `concurrency` threads. Its count is kept on the event loop only."""

    def __init__(self, concurrency: int, queue: int) -> None:
        self.limiter = anyio.CapacityLimiter(concurrency)
        self.concurrency, self.queue = concurrency, queue
        self.admitted = 0  # exports between their admission and their last byte sent (or their failure)

    async def answer(self, build: Callable[[], Export]) -> Response:
        """The response of the export `build` makes (blocking: run on the gate's threads), or 503 `exports-busy` when
        `concurrency + queue` exports are running or waiting already."""
        self._admit()
        try:
            export = await anyio.to_thread.run_sync(build, limiter=self.limiter)
        except BaseException:
            self.release()
            raise
        if isinstance(export.content, bytes):
            self.release()
            return Response(export.content, media_type=export.media_type, headers=export.headers)
        return _GatedStream(self, export)

    def _admit(self) -> None:
        if self.admitted >= self.concurrency + self.queue:
            raise Problem(503, f"导出和地图请求过多：已有 {self.admitted} 个导出或地图在进行或排队（service.export_concurrency 同时 "
                               f"{self.concurrency} 个，service.export_queue 排队 {self.queue} 个），请 {EXPORT_RETRY_AFTER_S} "
                               f"秒后重试 — too many exports and map views at once: {self.admitted} running or waiting "
                               f"(service.export_concurrency {self.concurrency}, service.export_queue {self.queue}); "
                               f"try again in {EXPORT_RETRY_AFTER_S} s",
                          slug="exports-busy", headers={"Retry-After": str(EXPORT_RETRY_AFTER_S)})
        self.admitted += 1

    def release(self) -> None:
        """One admitted export finished (answered, streamed, failed or left by its client)."""
        self.admitted -= 1

    async def chunks(self, content: Iterator[bytes]) -> AsyncIterator[bytes]:
        """`content`'s chunks, each read on the gate's threads (Starlette reads a plain iterator on the shared ones)."""
        while (chunk := await anyio.to_thread.run_sync(next, content, None, limiter=self.limiter)) is not None:
            yield chunk


class _GatedStream(StreamingResponse):
    """An admitted export's streamed answer: the gate counts it until its last byte is sent or the client went away."""

    def __init__(self, gate: ExportGate, export: Export) -> None:
        super().__init__(gate.chunks(export.content), media_type=export.media_type, headers=export.headers)  # type: ignore[arg-type]
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.gate.release()
