"""Stream time to wall-clock time, and analysis-rate sampling by stream time.

Frames are stamped with the time they show, not the time they were decoded: a burst of
buffered frames after a network stall must not look like one instant to the dwell timers.
- Live streams: media time offsets are anchored to the wall clock at the first frame of a
  connection, and re-anchored when the mapping drifts more than `max_drift_s` from the
  receive time (a camera clock reset, a PTS wrap).
- Replay of files: `start + media time`, where start is the configured start time (naive
  times are in the camera's time zone), else the file's creation_time tag, else its
  modification time, and media time counts from the start of playback as a player shows it
  (`detect.imageio.media_origin`: an MPEG-TS starts at 1.4 s or later, a recording begun
  between key frames shows its first picture seconds in). Nothing waits:
  a 10-minute clip is judged as fast as it decodes, with the rules seeing 10 minutes pass.
Media time is kept continuous across discontinuities (concatenated segments, PTS restarts).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


FUTURE_S = 0.25
"""Frames mapped further than this ahead of the receive time are re-anchored to it."""


class MediaClock:
    """Maps the media seconds of one connection to UTC; `reset()` at every (re)connect."""

    def __init__(self, *, replay_start: datetime | None = None, origin: float | None = None, max_drift_s: float = 5.0,
                 max_gap_s: float = 30.0):
        # in UTC whatever zone it came in: a file's modification time is read in the camera's zone (+08:00), and the
        # frames' times, so the events file's violations, mixed it with its UTC statuses
        self.replay_start = replay_start.astimezone(UTC) if replay_start is not None else None
        self.origin = origin  # raw media seconds of media time 0 (a replayed file's start of playback); None: the first frame
        self.max_drift_s, self.max_gap_s = max_drift_s, max_gap_s
        self.reset()

    def reset(self) -> None:
        self._offset: float | None = None  # added to raw media time to make it continuous
        self._last: float | None = None
        self._step = 0.04
        self._anchor: tuple[float, datetime, float] | None = None  # (media, wall, monotonic)

    def media(self, raw: float) -> float:
        """Continuous media seconds from 0 at `origin`, else at the connection's first frame (also when that
        frame comes before `origin`: nothing is shown before 0)."""
        if self._offset is None:
            self._offset = -min(raw, self.origin if self.origin is not None else raw)
        value = raw + self._offset
        if self._last is not None:
            if value < self._last or value - self._last > self.max_gap_s:  # discontinuity: continue after the last frame
                self._offset += self._last + self._step - value
                value = self._last + self._step
            elif value > self._last:
                self._step = min(value - self._last, 1.0)
        self._last = value
        return value

    def wall(self, media: float | None) -> datetime:
        """UTC time shown by a frame at `media` seconds (None: the stream has no clock; now)."""
        now = datetime.now(UTC)
        if media is None:
            return now
        if self.replay_start is not None:
            return self.replay_start + timedelta(seconds=media)
        if self._anchor is None:
            self._anchor = (media, now, time.monotonic())
        mapped = self._anchor[1] + timedelta(seconds=media - self._anchor[0])
        drift = (mapped - now).total_seconds()
        if drift > FUTURE_S or drift < -self.max_drift_s:
            # A frame cannot be from the future (the server sent a buffered burst at connect); one far
            # in the past means the stream stalled or its clock jumped: map it to now from here on.
            self._anchor = (media, now, time.monotonic())
            return now
        return mapped

    def due_in(self, media: float) -> float:
        """Seconds until a live-paced file should show `media` (a file played as if it were live);
        the first frame anchors the pace."""
        if self._anchor is None:
            self._anchor = (media, datetime.now(UTC), time.monotonic())
        return self._anchor[2] + (media - self._anchor[0]) - time.monotonic()


class Sampler:
    """Picks frames at `fps` by media time: the first frame, then one per period."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps
        self.next: float | None = None

    def reset(self) -> None:
        self.next = None

    def take(self, media: float) -> bool:
        if self.next is not None and media < self.next - 1e-6:
            return False
        step = self.next + self.period if self.next is not None else media + self.period
        self.next = step if step > media else media + self.period
        return True
