"""A time-bounded ring buffer of recent frames, so a bundle can show the seconds around an opening."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

from detect.frames import Frame


class FrameRing:
    """Keeps the frames of the last `seconds` of one source (by frame time, not arrival time).

    At ~1 frame/s a 20 s ring holds ~20 frames; frames are references, not copies, so the memory
    cost is the frames the reader already produced.
    """

    def __init__(self, seconds: float = 20.0, max_frames: int = 200):
        self.span = timedelta(seconds=seconds)
        self._frames: deque[Frame] = deque(maxlen=max_frames)

    def push(self, frame: Frame) -> None:
        self._frames.append(frame)
        while self._frames and frame.ts - self._frames[0].ts > self.span:
            self._frames.popleft()

    def __len__(self) -> int:
        return len(self._frames)

    def around(self, at: datetime, before_s: float, after_s: float) -> list[Frame]:
        """Frames with `at - before_s <= ts <= at + after_s`, oldest first."""
        lo, hi = at - timedelta(seconds=before_s), at + timedelta(seconds=after_s)
        return [f for f in self._frames if lo <= f.ts <= hi]


def evenly(frames: list[Frame], n: int) -> list[Frame]:
    """At most `n` frames spread evenly over `frames` (first and last kept)."""
    if n <= 0:
        return []
    if len(frames) <= n:
        return list(frames)
    if n == 1:
        return [frames[-1]]
    step = (len(frames) - 1) / (n - 1)
    return [frames[round(i * step)] for i in range(n)]
