"""Wall time per stage of the detect loop: preprocess, infer, postprocess.

The benchmark sets `Detector.profile` to one of these to report how much of a batch's time is
spent outside the network. On a GPU that share is what Python, data movement and CPU-side
decoding cost, and it is the number to drive down. Off by default because an honest split has to
wait for the device at every stage boundary, which itself costs a little.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

STAGES = ("preprocess", "infer", "postprocess")


@dataclass
class StageProfile:
    """Seconds spent in each stage, summed over `batches` network calls holding `images` images."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    batches: int = 0
    images: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, stage: str, seconds: float) -> None:
        """Thread-safe: photo triage adds from its worker and writer threads at once."""
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the wall time of the `with` block to `stage`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def ms_per_image(self) -> dict[str, float]:
        n = max(self.images, 1)
        return {stage: s * 1000 / n for stage, s in self.seconds.items()}

    def outside_model_fraction(self) -> float | None:
        """Share of the measured time not spent in `infer` (None before anything was measured)."""
        total = self.total
        return (total - self.seconds.get("infer", 0.0)) / total if total > 0 else None
