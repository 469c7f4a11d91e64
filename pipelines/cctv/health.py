"""Camera health: the stream's state, what the picture says about the camera itself, and a configuration
change a reload refused.

Health is reported as events (a condition starting and ending) and metrics, never as violation
cases: a frozen picture or a covered lens is a maintenance job, not an offence. Picture checks
run on a small grey thumbnail every `check_every_s` media seconds, so they cost little next to
inference. A black-and-white picture (a camera's infrared night mode) is reported too: the verifier's
heads learnt colour daylight photos and, on infrared-like copies, found a tenth of the spillover and
half the stalls (docs/verifier.md, "Degraded pictures"), so staff should know when a zone goes unseen.
The moved-camera check matches ORB features against the scene's reference snapshot
and estimates the shift with RANSAC: vehicles and people in front of the camera hide some
features but do not move the rest, whereas a turned camera shifts them all.

The same measures also say, at each check, whether the picture shows the scene its zones were drawn on at all
(`ImageHealth.view_lost`): black, covered or off the reference now, not after `blind_s` / `moved_s`. While it does
not, the rules hold the camera's open violations (detect.rules): a turned PTZ camera or a covered lens is absence of
evidence, and counted as the stall's absence it cleared the stall's case long before `moved` was reported.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum

import cv2
import numpy as np

from pipelines.cctv.config import HealthConfig

FROZEN_CHANGED = 0.0005
"""A picture whose changed pixels are fewer than this share is the same picture (a clock overlay
alone changes more)."""

MATCH_SIZE = (640, 360)
"""Both images are compared at this size (features, shift), whatever the stream's resolution."""


class HealthKind(StrEnum):
    RECONNECTING = "reconnecting"  # the stream dropped or does not answer; retrying with back-off
    OFFLINE = "offline"  # several attempts in a row failed
    FROZEN = "frozen"  # the same picture for frozen_s
    BLACK = "black"  # a dark picture for blind_s
    COVERED = "covered"  # a featureless picture (lens covered or fogged) for blind_s
    MOVED = "moved"  # the view no longer matches the scene's reference snapshot
    INFRARED = "infrared"  # a black-and-white picture (infrared night mode) for infrared_s: stalls and spillover go unseen
    RESOLUTION_CHANGED = "resolution_changed"  # instantaneous: the stream changed its picture size
    VIEW_LOST = "view_lost"  # at once: the picture is black, covered or off the reference: open violations are held
    CONFIG_REFUSED = "config_refused"  # a reload refused the camera's changed configuration (scene): it runs on its last valid one


@dataclass
class HealthEvent:
    """A health condition starting (`active`) or ending (not `active`) on one camera."""

    camera_id: str
    kind: HealthKind
    active: bool
    at: datetime
    detail: str = ""

    def to_json(self) -> str:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        data["event"] = "camera_health"
        return json.dumps(data, ensure_ascii=False)


class _Condition:
    """A condition that must hold `hold_s` before it is reported, and is reported again when it ends."""

    def __init__(self, kind: HealthKind, hold_s: float):
        self.kind, self.hold_s = kind, hold_s
        self.since: datetime | None = None
        self.active = False

    def update(self, holds: bool, ts: datetime, camera_id: str, detail: str) -> HealthEvent | None:
        if holds:
            self.since = self.since or ts
            if not self.active and (ts - self.since).total_seconds() >= self.hold_s:
                self.active = True
                return HealthEvent(camera_id, self.kind, True, ts, detail)
            return None
        self.since = None
        if self.active:
            self.active = False
            return HealthEvent(camera_id, self.kind, False, ts, "back to normal")
        return None


VIEW_LOST_HELD = "区域内未清除的违规保持开启，不计为离开 (open violations held, not counted as absent)"
"""What the `view_lost` condition's detail adds for staff: why a case stays open while its camera sees nothing."""


class ViewMatcher:
    """Features of a reference view; `shift(image)` says how far a new view moved from it."""

    def __init__(self, reference: np.ndarray, features: int = 500):
        self.orb = cv2.ORB_create(features)
        self.keypoints, self.descriptors = self._features(reference)
        self.matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)

    def _features(self, image: np.ndarray):
        gray = cv2.cvtColor(cv2.resize(image, MATCH_SIZE, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        return self.orb.detectAndCompute(gray, None)

    def shift(self, image: np.ndarray) -> tuple[int, float | None]:
        """(inlier matches, largest corner displacement as a fraction of the width); None: no fit."""
        kps, desc = self._features(image)
        if desc is None or self.descriptors is None:
            return 0, None
        matches = self.matcher.match(self.descriptors, desc)
        if len(matches) < 4:
            return len(matches), None
        src = np.float32([self.keypoints[m.queryIdx].pt for m in matches])
        dst = np.float32([kps[m.trainIdx].pt for m in matches])
        model, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
        if model is None:
            return 0, None
        w, h = MATCH_SIZE
        corners = np.float32([[0, 0], [w, 0], [0, h], [w, h]])
        moved = np.abs(corners @ model[:, :2].T + model[:, 2] - corners).max()
        return int(inliers.sum()), float(moved) / w


def colour_spread(image: np.ndarray) -> float:
    """How much colour varies over a picture: the larger standard deviation of its two chroma channels (YCrCb, 0-255)
    on a 64-pixel-wide thumbnail. Near 0 for a black-and-white picture, even one a decoder tints evenly (a grey
    H.264 frame came back 3 levels bluer than green everywhere); street-scenes' black-and-white film photos give
    0.5-0.9, its colour photos taken at night or dusk 6.8 and more."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (64, max(1, round(64 * h / w))), interpolation=cv2.INTER_AREA)
    if small.ndim < 3 or small.shape[2] < 3:
        return 0.0
    ycc = cv2.cvtColor(small, cv2.COLOR_BGR2YCrCb).astype(np.float32)
    return float(max(ycc[..., 1].std(), ycc[..., 2].std()))


class ImageHealth:
    """Picture checks of one camera: feed every analysed (or read) picture with its time."""

    def __init__(self, camera_id: str, config: HealthConfig, reference: np.ndarray | None = None):
        self.camera_id, self.config = camera_id, config
        self.matcher = ViewMatcher(reference) if reference is not None else None
        self.frozen = _Condition(HealthKind.FROZEN, config.frozen_s)
        self.black = _Condition(HealthKind.BLACK, config.blind_s)
        self.covered = _Condition(HealthKind.COVERED, config.blind_s)
        self.moved = _Condition(HealthKind.MOVED, config.moved_s)
        self.infrared = _Condition(HealthKind.INFRARED, config.infrared_s)
        self.lost = _Condition(HealthKind.VIEW_LOST, 0.0)
        self.view_lost: str | None = None
        """Why the latest check's picture does not show the zones' scene (None: it does); kept until the next check."""
        self._last: datetime | None = None
        self._sample: np.ndarray | None = None

    @property
    def active(self) -> list[HealthKind]:
        return [c.kind for c in (self.frozen, self.black, self.covered, self.moved, self.infrared, self.lost) if c.active]

    def observe(self, image: np.ndarray, ts: datetime) -> list[HealthEvent]:
        if self._last is not None and (ts - self._last).total_seconds() < self.config.check_every_s:
            return []
        self._last = ts
        cfg = self.config
        h, w = image.shape[:2]
        # Nearest-neighbour sampling keeps sensor noise (averaging would erase it and make every
        # still street look frozen); the small blurred thumbnail is for brightness and contrast.
        sample = cv2.cvtColor(cv2.resize(image, (320, max(1, round(320 * h / w))), interpolation=cv2.INTER_NEAREST), cv2.COLOR_BGR2GRAY)
        thumb = cv2.resize(sample, (64, max(1, round(64 * h / w))), interpolation=cv2.INTER_AREA).astype(np.float32)
        changed = None
        if self._sample is not None and self._sample.shape == sample.shape:
            changed = float((cv2.absdiff(sample, self._sample) > cfg.frozen_tolerance).mean())
        self._sample = sample
        mean, std = float(thumb.mean()), float(thumb.std())
        is_black = mean < cfg.black_level
        is_covered = not is_black and std < cfg.covered_std
        chroma = colour_spread(image)
        events = [
            self.frozen.update(changed is not None and changed < FROZEN_CHANGED, ts, self.camera_id,
                               f"picture unchanged ({(changed or 0) * 100:.3f}% of pixels changed)"),
            self.black.update(is_black, ts, self.camera_id, f"mean grey level {mean:.1f}"),
            self.covered.update(is_covered, ts, self.camera_id, f"grey-level spread {std:.1f}"),
            self.infrared.update(not is_black and chroma < cfg.infrared_chroma, ts, self.camera_id,
                                 f"black-and-white picture (colour spread {chroma:.1f}): verified zones find few stalls and "
                                 "spillover in infrared (docs/verifier.md, 'Degraded pictures')"),
        ]
        lost = f"黑屏 black picture (mean grey level {mean:.1f})" if is_black else (
            f"镜头遮挡 featureless picture (grey-level spread {std:.1f})" if is_covered else None)
        if self.matcher is not None and not (is_black or is_covered):
            matches, shift = self.matcher.shift(image)
            off = matches < cfg.min_matches or shift is None or shift > cfg.moved_shift
            shift_txt = f"{shift:.3f} of the width" if shift is not None else "no fit"
            measure = f"{matches} features match the reference, shift {shift_txt}"
            events.append(self.moved.update(off, ts, self.camera_id, measure))
            lost = f"视角偏移 view off the reference ({measure})" if off else None
        self.view_lost = lost
        events.append(self.lost.update(lost is not None, ts, self.camera_id, f"{lost}: {VIEW_LOST_HELD}"))
        return [e for e in events if e is not None]
