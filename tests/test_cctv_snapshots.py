"""Latest-frame snapshots handed from `watch` to the service's camera page."""

from __future__ import annotations

from datetime import UTC, datetime

import cv2

from detect.frames import Frame
from detect.imageio import read_image
from pipelines.cctv.snapshots import SnapshotWriter


def test_snapshots_are_replaced_atomically_and_throttled(tmp_path, bus_jpg, zidane_jpg):
    bus, zidane = read_image(bus_jpg), read_image(zidane_jpg)
    writer = SnapshotWriter(tmp_path / "snaps", every_s=3600)
    writer(Frame(image=bus, source_id="cam-7", ts=datetime.now(UTC)))
    writer(Frame(image=zidane, source_id="cam-7", ts=datetime.now(UTC)))  # inside the interval: kept back
    writer(Frame(image=zidane, source_id="cam-8", ts=datetime.now(UTC)))
    assert cv2.imread(str(tmp_path / "snaps" / "cam-7.jpg")).shape == bus.shape
    assert cv2.imread(str(tmp_path / "snaps" / "cam-8.jpg")).shape == zidane.shape
    assert sorted(p.name for p in (tmp_path / "snaps").iterdir()) == ["cam-7.jpg", "cam-8.jpg"]  # no temp files left

    every_frame = SnapshotWriter(tmp_path / "snaps", every_s=0)
    every_frame(Frame(image=zidane, source_id="cam-7", ts=datetime.now(UTC)))
    assert cv2.imread(str(tmp_path / "snaps" / "cam-7.jpg")).shape == zidane.shape
