"""A camera's rules state saved and restored: across a `watch` restart (`--state FILE`, with or without `--ray`) and
an owner's restart on a Ray cluster (`pipelines.cluster.watch`, from its checkpoint actor).

Without it a restarted watcher started every camera afresh: a car parked throughout got a new violation id
at its next dwell, so a second case, and its first case was never cleared. Restored, violations keep their
ids (the case store drafts one case per violation id), an opened one whose case or evidence never reached the
store is opened again at its next sighting (`violations_to_reopen`), and the time the watcher was down is a
stream outage for the rules (neither absence nor presence). A state is restored only into the same camera
configuration (`camera_key`): a changed camera starts afresh, as a reload restarts it.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from detect.config_io import write_bytes_atomic
from detect.registry import may_write
from detect.rules import CameraRules
from pipelines.cases.intake import Intake
from pipelines.cctv.runtime import CameraRuntime

log = logging.getLogger(__name__)

#: The fields of a camera's runtime that a saved state holds (`pipelines.cctv.runtime.CameraRuntime`).
SAVED = ("rules", "texts", "next_ocr", "next_verify", "strips_due")

#: A camera's saved state: (its `camera_key`, the time of the last frame judged, the pickled SAVED fields).
State = tuple[str, datetime, bytes]


class NoStateFolder(ValueError):
    """No folder this user may write for the cameras' rules states: the message names the file and what to set."""


def state_file(cameras_file: Path, given: Path | None, data_dir: Path) -> Path:
    """Where `watch` keeps its cameras' states: `given` (--state); else beside the cameras file, as `<its name>.state`,
    when that folder may be written; else in `data_dir` (service.data_dir) as `watch/<its name>-<8 hex of its
    path>.state`. One file per cameras file, so two watchers on one machine never overwrite each other's; on by default
    because a 24/7 deployment that never heard of `--state` duplicated every standing case at each restart. Checked
    at the start: a cameras file installed read-only (/etc, root's) ran all day and said only at the stop that nothing
    was saved, every restart starting afresh. Raises `NoStateFolder` when the file's folder cannot be written."""
    if given is not None:
        if not may_write(given.parent):
            raise NoStateFolder(f"--state {given}: this user may not write {given.parent}, so the cameras' rules states "
                                "would be lost at every stop; give --state a file in a folder you may write, or --no-state")
        return given
    beside = cameras_file.with_name(cameras_file.name + ".state")
    if may_write(beside.parent):
        return beside
    digest = hashlib.sha256(str(cameras_file.absolute()).encode()).hexdigest()[:8]
    kept = (data_dir / "watch" / f"{cameras_file.name}-{digest}.state").absolute()
    if may_write(kept.parent):
        log.info("%s: its folder cannot be written, so the cameras' rules states are kept in %s (service.data_dir)",
                 cameras_file, kept)
        return kept
    raise NoStateFolder(f"--cameras {cameras_file}: no folder this user may write for the cameras' rules states: tried "
                        f"{beside.parent} (beside it) and {kept.parent} (service.data_dir); give --state FILE in a folder "
                        "you may write, set service.data_dir to one, or give --no-state")


def camera_key(camera) -> str:
    """Identifies a camera's configuration: a saved state is restored only into the same camera."""
    return hashlib.sha256(repr((camera.config, camera.scene, camera.tracking, camera.rules)).encode()).hexdigest()[:16]


def capture(runtime: CameraRuntime, ts: datetime) -> State:
    """The runtime's state as of the frame at `ts` (call it from the thread that judges the camera's frames)."""
    return camera_key(runtime.camera), ts, pickle.dumps({name: getattr(runtime, name) for name in SAVED}, protocol=5)


def capture_last(runtimes: dict[str, CameraRuntime]) -> dict[str, State]:
    """Each camera's state as of its last judged frame (after its frames stopped coming); none for a camera that judged
    none. What a graceful stop keeps, on one machine (`Watcher`) and on a cluster (each owner, for the driver)."""
    return {cid: capture(r, r.rules.last_frame_at) for cid, r in runtimes.items() if r.rules.last_frame_at is not None}


def restore_saved(runtime: CameraRuntime, state: State, intake: Intake, source: object) -> bool:
    """`restore`, where a state that cannot be restored (saved by another version) is named with `source` (its file or
    checkpoint) and the reason, and the camera starts afresh: a camera must start whatever was saved."""
    try:
        restored = restore(runtime, state, intake)
    except Exception as exc:  # noqa: BLE001 - unpickling another version's state can raise almost anything
        log.warning("camera %s: saved rules state in %s cannot be restored (%s: %s); it starts afresh", runtime.id, source,
                    type(exc).__name__, exc)
        return False
    if restored:
        log.info("camera %s: rules state restored from %s (last frame judged %s)", runtime.id, source, state[1].isoformat())
    return restored


def restore(runtime: CameraRuntime, state: State, intake: Intake) -> bool:
    """Put a saved state into a runtime whose reader has not started; False when the camera changed since."""
    key, ts, blob = state
    if key != camera_key(runtime.camera):
        return False
    for name, value in pickle.loads(blob).items():
        setattr(runtime, name, value)
    lost = violations_to_reopen(runtime.rules, intake)
    if lost:
        log.warning("camera %s: %d opened violation(s) without a case or its evidence after the restart: opened again",
                    runtime.id, len(lost))
        runtime.rules.reopen(lost)
    hooks = runtime.reader.hooks
    runtime.reader.hooks = replace(hooks, frame=frames_after(ts, hooks.frame), health=frames_after(ts, hooks.health, lambda e: e.at))
    return True


def violations_to_reopen(rules: CameraRules, intake: Intake) -> list[str]:
    """Of a restored camera's open violations, those to announce again at their next sighting: the owner died
    after saving them as opened but before their case reached the store, or while its evidence bundle was
    being built (the case then has no evidence, stored or sealed in the spool, and nothing else would
    build it: its `opened` event is not coming again). Bundles the dead owner left in the spool are settled
    first, sealed ones uploaded and half-built ones cleared, so that "no evidence" is known."""
    intake.retry_evidence()
    out = []
    for vid in rules.opened_ids():
        case = intake.store.find(violation_id=vid)
        if case is None or intake.unfinished(case):
            out.append(vid)
    return out


def frames_after(ts: datetime, deliver: Callable[[Any], None], when: Callable[[Any], datetime] = lambda f: f.ts) -> Callable[[Any], None]:
    """A reader's hook that drops what a restored state has already judged (replayed files): its frames, and (`when`:
    a health event's time) the health their pictures showed, which the first pass reported (a black-and-white
    recording replayed again reported its `infrared` start a second time)."""

    def hook(item: Any) -> None:
        if when(item) > ts:
            deliver(item)

    return hook


def save_file(path: Path, states: dict[str, State]) -> None:
    """Write the cameras' states to `path`, replaced whole (a stop killed mid-write leaves the previous file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, pickle.dumps(states, protocol=5))


def keep_file(path: Path, states: dict[str, State]) -> None:
    """`save_file` at a stop, which must end whatever happens: a folder that cannot be written is logged (the cameras
    will start afresh), not raised."""
    try:
        save_file(path, states)
    except OSError as exc:
        log.error("%s: rules states not saved (%s); the cameras will start afresh", path, exc)
        return
    log.info("rules states of %d camera(s) saved to %s", len(states), path)


def load_file(path: Path) -> dict[str, State]:
    """The states saved in `path`; {} when there is none yet. One that cannot be read (damaged, from another
    version) is named with the reason and the cameras start afresh: a watcher must start whatever the file holds."""
    if not path.exists():
        return {}
    try:
        states = pickle.loads(path.read_bytes())
        if not isinstance(states, dict):
            raise ValueError(f"holds a {type(states).__name__}, not the cameras' states")
        return states
    except Exception as exc:  # noqa: BLE001 - unpickling can raise almost anything
        log.warning("%s: saved rules states cannot be read (%s: %s); every camera starts afresh", path, type(exc).__name__, exc)
        return {}
