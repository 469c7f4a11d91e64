"""The bounded queue between camera readers and the inference worker.

Readers must never block on inference (DESIGN §4): when the worker falls behind, the oldest
frame waiting is dropped and counted, so what gets analysed is always the most recent view and
lag stays bounded. Replay is the exception: it must judge every sampled frame, so its readers
wait for room instead (`block=True`). The worker takes frames in batches across cameras.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from detect.frames import Frame


class FrameQueue:
    def __init__(self, maxsize: int, on_drop: Callable[[Frame], None] = lambda frame: None):
        self.maxsize = maxsize
        self.on_drop = on_drop
        self._items: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, frame: Frame, block: bool = False) -> bool:
        """Add a frame; when full, drop the oldest (or wait, with `block`). False once closed."""
        dropped = None
        with self._cond:
            if block:
                self._cond.wait_for(lambda: self._closed or len(self._items) < self.maxsize)
            if self._closed:
                return False
            if len(self._items) >= self.maxsize:
                dropped = self._items.popleft()
                self.dropped += 1
            self._items.append(frame)
            self._cond.notify_all()
        if dropped is not None:
            self.on_drop(dropped)
        return True

    def get_batch(self, max_items: int, timeout: float | None = None, linger_s: float = 0.0) -> list[Frame]:
        """Up to `max_items` frames, oldest first; waits up to `timeout` for the first, then up to
        `linger_s` more for the batch to fill (a batch of 8 costs far less than 8 batches of 1).
        [] when nothing came (or the queue is closed and empty)."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed, timeout)
            if linger_s > 0 and self._items and not self._closed:
                self._cond.wait_for(lambda: len(self._items) >= max_items or self._closed, linger_s)
            batch = [self._items.popleft() for _ in range(min(max_items, len(self._items)))]
            if batch:
                self._cond.notify_all()
            return batch

    def close(self) -> None:
        """No more frames are accepted; frames already queued can still be taken (drained)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
