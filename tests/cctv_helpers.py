"""Helpers of the CCTV tests: generated clips from real photos, cameras files, an intake on tmp folders."""

from __future__ import annotations

import http.server
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from detect.evidence.builder import EvidenceBuilder, ModelInfo
from detect.evidence.config import EvidenceConfig
from pipelines.cases import CaseStore
from pipelines.cases.intake import Intake
from benchmarks.media import Sprite, parked_vehicle_clip, street_view, write_scene
from pipelines.evidence_store import LocalEvidenceStore

KEY = b"cctv-test-key-0123456789"
SIZE = (640, 360)
STREET = "facades-ads/images/img_172.jpg"
"""A real street facade with a sidewalk and no vehicles: the camera's view."""


def street(real_sample_dir: Path) -> Path:
    return real_sample_dir / STREET


def other_view(real_sample_dir: Path, start_s: float, end_s: float) -> Sprite:
    """Another real street (street-scenes) over the whole picture from `start_s` to `end_s`: a PTZ camera turned away."""
    photo = real_sample_dir.parent / "street-scenes/images/cn2/lindsay__IMG_1839.jpg"
    return Sprite(street_view(photo, SIZE), x=0.5, bottom=1.0, height=1.0, start_s=start_s, end_s=end_s)


def parked_clip(path: Path, bus_jpg: Path, real_sample_dir: Path, **kw):
    """A 640x360 clip (2 fps, 1 s key frames) in which the bus stands in the no-parking zone."""
    kw.setdefault("size", SIZE)
    return parked_vehicle_clip(path, bus_jpg, street(real_sample_dir), **kw)


def scene_for(folder: Path, camera_id: str, real_sample_dir: Path, **kw) -> Path:
    """The camera's scene (no-parking strip under the bus) with the empty street as reference snapshot."""
    return write_scene(folder / f"{camera_id}.yaml", camera_id, reference=street_view(street(real_sample_dir), SIZE), **kw)


class CameraHandler(http.server.BaseHTTPRequestHandler):
    """A camera on loopback HTTP for the tests: its requests kept out of the test's output (they would bury the
    failure), and `send_jpeg` answering a snapshot as a camera's /snapshot.jpg does."""

    def send_jpeg(self, jpeg: bytes) -> None:
        """200 with `jpeg` (an encoded picture) and its length, as a snapshot camera answers."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(jpeg)))
        self.end_headers()
        self.wfile.write(jpeg)

    def log_message(self, *args) -> None:
        pass


def cameras_file(path: Path, cameras: list[dict], **top) -> Path:
    path.write_text(yaml.safe_dump({"cameras": cameras, **top}, sort_keys=False), encoding="utf-8")
    return path


def make_intake(folder: Path, detector_id: str = "yolo11n", *, privacy_blur: bool = False) -> Intake:
    store = CaseStore(f"sqlite:///{folder}/cases.db")
    builder = EvidenceBuilder(EvidenceConfig(privacy_blur=privacy_blur), KEY, ModelInfo(detector_id))
    return Intake(store, LocalEvidenceStore(folder / "evidence"), builder, folder / "spool")


def _ffmpeg() -> str:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.fail("ffmpeg is needed: run scripts/install-system-deps.sh")
    return ffmpeg


def rotated_copy(src: Path, dst: Path, degrees: int = 90) -> Path:
    """`src` with a display rotation and its pixels untouched: what a phone writes for a video filmed upright."""
    subprocess.run([_ffmpeg(), "-loglevel", "error", "-y", "-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}",
                    str(dst)], check=True, timeout=60)
    return dst


def pattern_video(dst: Path, width: int, height: int, creation_time: str, seconds: int = 2) -> Path:
    """A real H.264 video of FFmpeg's test pattern, `width` x `height` at 2 fps, tagged `creation_time`: a few kB."""
    subprocess.run([_ffmpeg(), "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size={width}x{height}:rate=2",
                    "-t", str(seconds), "-pix_fmt", "yuv420p", "-metadata", f"creation_time={creation_time}", str(dst)],
                   check=True, timeout=60)
    return dst


def retagged_copy(src: Path, dst: Path, creation_time: str) -> Path:
    """`src` with another creation_time tag (what a camera's clock said when it began the file)."""
    subprocess.run([_ffmpeg(), "-loglevel", "error", "-y", "-i", str(src), "-c", "copy", "-metadata", f"creation_time={creation_time}",
                    str(dst)], check=True, timeout=60)
    return dst


def ts_copy(src: Path, dst: Path, offset_s: float, from_s: float = 0.0) -> Path:
    """`src` remuxed to MPEG-TS (a dashcam's format) whose timestamps start `offset_s` (plus the muxer's 1.4 s) in.
    `from_s`: only `src` from that second on, cut without waiting for a key frame (a recorder that began between
    key frames: its playback starts there, its first picture at the next key frame)."""
    cut = ["-ss", str(from_s), "-copyinkf"] if from_s else []
    subprocess.run([_ffmpeg(), "-loglevel", "error", "-y", "-i", str(src), *cut, "-c", "copy", "-output_ts_offset", str(offset_s),
                    str(dst)], check=True, timeout=60)
    return dst


def cbr_ts_copy(src: Path, dst: Path, mbit_s: float) -> Path:
    """`src` remuxed to a constant-rate MPEG-TS (`-muxrate`, padded with null packets) as broadcast encoders and some
    dashcams write it: a 30 s drive of `mbit_s` Mbit/s is a real video of tens of megabytes."""
    subprocess.run([_ffmpeg(), "-loglevel", "error", "-y", "-i", str(src), "-c", "copy", "-f", "mpegts", "-muxrate", f"{mbit_s}M",
                    str(dst)], check=True, timeout=60)
    return dst


def played_picture(video: Path, folder: Path) -> np.ndarray:
    """The first picture of `video` as FFmpeg's player shows it (display rotation applied), BGR."""
    png = folder / f"{video.stem}-played.png"
    subprocess.run([_ffmpeg(), "-loglevel", "error", "-y", "-i", str(video), "-frames:v", "1", str(png)], check=True, timeout=60)
    return cv2.imread(str(png))
