"""Evidence bundles: the frames, crops and facts of one violation, hashed and signed.

A bundle is a directory (uploaded as-is to the evidence store):

    originals/   full frames exactly as received (photo file bytes) or as captured (camera JPEG)
    annotated/   the same frames with the evidence boxes, the zone and a caption drawn
    crops/       clean crops of the evidence objects at opening
    strip/       a few frames around the opening from the camera's ring buffer (optional)
    shared/      privacy-blurred copies of annotated frames and crops (optional)
    verification/ frames of the re-checks after the case was handled (added later)
    manifest.json, signature.json

Everything a reviewer needs to trust it is in `manifest.json` (see docs/cases-and-dispatch.md);
`signature.json` binds the manifest (and through its hashes every image) to the HMAC key and,
when one is configured, to a public signing key anyone can verify with.
"""

from __future__ import annotations

import json
import mimetypes
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import cv2
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from detect import fields
from detect.events import ViolationEvent
from detect.evidence import FORMAT, SIGNATURE
from detect.evidence.config import EvidenceConfig
from detect.evidence import drawing
from detect.evidence.privacy import blur_private
from detect.evidence.ring import evenly
from detect.evidence.signing import read_manifest, write_signed_manifest
from detect.digests import sha256_bytes, sha256_file
from detect.frames import TIME_SOURCE, Frame, GeoPoint

if TYPE_CHECKING:
    import supervision as sv  # imported where used: with scipy it takes 1.2-1.5 s, which the store's commands skip

WINDOWS_REFUSED = '<>:"/\\|?*'
"""Characters Windows refuses in a file name (and `/`, `\\`, which would make a folder)."""


@dataclass(frozen=True)
class VerifierInfo:
    """Which verifier heads judged what the detector saw: the card's id and the SHA-256 of the card (thresholds) and of
    its heads file (weights); id `none` when the detector's classes judged alone. Without it a bundle named the detector
    only, and a case found by street-v7's heads could not be told from one found after another verifier's promotion."""

    id: str
    card_sha256: str | None = None
    heads_sha256: str | None = None

    @classmethod
    def of(cls, judgement) -> VerifierInfo:
        """The verifier a `detect.judgement.Judgement` judges with, after its `check` (a promoted one that stepped aside
        is `none`, as the run judges)."""
        if judgement.verifier is None:
            return cls("none")
        heads = judgement.verifier.heads
        return cls(heads.card.id, sha256_file(heads.path), sha256_file(heads.path.parent / heads.card.weights))

    def to_json(self) -> dict[str, str | None]:
        return {"id": self.id, "card_sha256": self.card_sha256, "heads_sha256": self.heads_sha256}


@dataclass(frozen=True)
class ModelInfo:
    """Which models saw it: the detector's id (name/version) and the SHA-256 of its weight file, and the verifier that
    judged with it (None: not known to the writer, which builds no bundle, as a spool retry)."""

    id: str
    sha256: str | None = None
    verifier: VerifierInfo | None = None

    @classmethod
    def of(cls, detector, judgement=None) -> ModelInfo:
        """The model a `detect.engine.Detector` runs, with the digest of the file it loaded, and the verifier of
        `judgement` (checked against that detector)."""
        return cls(detector.model_id, sha256_file(detector.model_path), VerifierInfo.of(judgement) if judgement else None)


@dataclass
class BundleContext:
    """Facts about a violation's source that the event does not carry (scene/camera config, photo batch).

    `zone_polygon` is in normalised [0, 1] image coordinates, as in scene files (it is drawn
    scaled to each frame). `privacy_detections` are all boxes of the opening frame (not only the
    evidence) so passers-by are blurred in shared copies too; `first_detections` are the boxes at
    first sight if known. `strip` is the frames around the opening from a `FrameRing` (CCTV).
    """

    source_kind: str = "camera"  # camera | photo_batch
    source_id: str | None = None  # camera id or photo batch id (default: the event's source_id)
    address: str | None = None
    grid_cell: str | None = None
    geo: GeoPoint | None = None
    zone_polygon: list[tuple[float, float]] | None = None
    photo_ids: list[str] = field(default_factory=list)
    strip: list[Frame] = field(default_factory=list)
    first_detections: sv.Detections | None = None
    privacy_detections: sv.Detections | None = None


@dataclass(frozen=True)
class Bundle:
    path: Path
    digest: str
    manifest: dict[str, Any]

    def artifacts(self, role: str | None = None) -> list[dict[str, Any]]:
        return [a for a in self.manifest["artifacts"] if role is None or a["role"] == role]

    @classmethod
    def read(cls, path: str | Path) -> Bundle:
        """A bundle on disk (digest as signed; `verify_bundle` checks it)."""
        path = Path(path)
        return cls(path=path, digest=cls.from_signature((path / SIGNATURE).read_bytes()), manifest=read_manifest(path))

    @staticmethod
    def from_signature(data: bytes) -> str:
        """The digest a `signature.json` states (ValueError/KeyError when it is not one)."""
        return str(json.loads(data)["digest"])


class EvidenceError(ValueError):
    """An event that cannot be turned into evidence (named reason)."""


class EvidenceBuilder:
    """Writes and re-signs bundles. `model` is the detector that saw the violations (id + weights
    SHA-256); `taxonomy` supplies type names and the city's 大类/小类 codes."""

    def __init__(self, config: EvidenceConfig, key: bytes, model: ModelInfo, taxonomy: Any = None,
                 signer: Ed25519PrivateKey | None = None):
        self.config = config
        self.key = key
        self.signer = signer  # Ed25519 key: a second, publicly verifiable signature (detect.evidence.keys)
        self.model = model
        if taxonomy is None:
            from detect.taxonomy import load_taxonomy

            taxonomy = load_taxonomy()
        self.taxonomy = taxonomy
        self.tz = ZoneInfo(config.timezone)

    # ---- public ----------------------------------------------------------------------------

    def build(self, event: ViolationEvent, bundle_dir: str | Path, case_id: str, ctx: BundleContext | None = None) -> Bundle:
        """Write a new bundle for an opened violation (photos: their only event).

        The bundle is written under `<bundle_dir>.partial` and renamed when complete, so a crash
        never leaves a half-written directory that looks like a bundle.
        """
        if event.frame is None:
            raise EvidenceError(f"violation {event.violation_id}: event has no frame to build evidence from")
        final = Path(bundle_dir)
        if final.exists() and any(final.iterdir()):
            raise EvidenceError(f"{final}: bundle directory is not empty")
        bundle = final.with_name(final.name + ".partial")
        shutil.rmtree(bundle, ignore_errors=True)
        bundle.mkdir(parents=True)
        try:
            built = self._build(event, bundle, case_id, ctx or BundleContext())
        except BaseException:
            shutil.rmtree(bundle, ignore_errors=True)
            raise
        if final.exists():
            final.rmdir()
        bundle.rename(final)
        return Bundle(path=final, digest=built.digest, manifest=built.manifest)

    def _build(self, event: ViolationEvent, bundle: Path, case_id: str, ctx: BundleContext) -> Bundle:
        import supervision as sv

        assert event.frame is not None
        writer = _Writer(bundle, self.config.jpeg_quality)
        opened_at = event.opened_at or event.at
        caption = f"{case_id}  {self._type_named(event.violation_type)}  {event.source_id}"

        first = event.first_frame
        if first is not None and first is not event.frame and (not first.frame_id or first.frame_id != event.frame.frame_id):
            self._moment(writer, "first_seen", first, ctx.first_detections or sv.Detections.empty(), ctx, caption)
        self._moment(writer, "opened", event.frame, event.detections, ctx, caption)
        self._crops(writer, event.frame, event.detections, ctx)
        self._strip(writer, ctx.strip)

        geo = ctx.geo or event.frame.geo
        manifest = {
            "format": FORMAT,
            "case_id": case_id,
            "violation_id": event.violation_id,
            "violation": self._codes(event.violation_type),
            "source": {"kind": ctx.source_kind, "id": ctx.source_id or event.source_id, "photo_ids": ctx.photo_ids,
                       "frame_ids": {a["role"]: a["frame_id"] for a in writer.artifacts if a.get("frame_id")
                                     and a["role"].startswith("original")}},
            "zone": {"id": event.zone_id, "kind": event.zone_kind, "polygon": ctx.zone_polygon},
            "location": {"lat": geo.lat if geo else None, "lon": geo.lon if geo else None,
                         "address": ctx.address, "grid_cell": ctx.grid_cell},
            "times": {"timezone": self.config.timezone, "first_seen": self._time(event.first_seen),
                      "opened": self._time(opened_at), "cleared": self._time(event.cleared_at),
                      "latest": self._time(event.at), **_time_sources(event)},
            "dwell_s": round(float(event.dwell_s), 3),
            "score": round(float(event.score), 4),
            "object_count": event.object_count,
            "model": {"id": self.model.id, "sha256": self.model.sha256},
            "verifier": self.model.verifier.to_json() if self.model.verifier else None,
            "thresholds": dict(event.thresholds),
            "detections": detections_json(event.detections),
            "text": {"texts": list(event.texts), "phones": list(event.phones)},
            "privacy": {"shared_copies_blurred": self.config.privacy_blur,
                        "method": "heuristic head/plate regions from person/vehicle boxes" if self.config.privacy_blur
                        else None},
            "verifications": [],
            "created_at": datetime.now(UTC).isoformat(),
        }
        return self._sign(bundle, manifest, writer.artifacts)

    def update(self, bundle_dir: str | Path, event: ViolationEvent, ctx: BundleContext | None = None) -> Bundle:
        """Add the latest frame of an `updated`/`cleared` event and its times, then re-sign."""
        bundle = Path(bundle_dir)
        manifest = read_manifest(bundle)
        kept = [a for a in manifest["artifacts"] if not a["role"].endswith("latest")]
        for gone in manifest["artifacts"]:
            if gone not in kept:
                (bundle / gone["path"]).unlink(missing_ok=True)
        writer = _Writer(bundle, self.config.jpeg_quality, kept)
        if event.frame is not None:
            ctx = ctx or BundleContext(zone_polygon=manifest["zone"]["polygon"])
            caption = f"{manifest['case_id']}  {self._type_named(event.violation_type)}  {event.source_id}  {event.kind}"
            self._moment(writer, "latest", event.frame, event.detections, ctx, caption)
        manifest["times"]["latest"] = self._time(event.at)
        if event.cleared_at is not None:
            manifest["times"]["cleared"] = self._time(event.cleared_at)
        manifest["dwell_s"] = round(float(event.dwell_s), 3)
        manifest["object_count"] = event.object_count
        manifest["updated_at"] = datetime.now(UTC).isoformat()
        return self._sign(bundle, manifest, writer.artifacts)

    def add_strip(self, bundle_dir: str | Path, frames: list[Frame]) -> Bundle:
        """Append frames from after the opening (the ring buffer had only the seconds before it
        when the bundle was built), at most `strip_max_frames` more, then re-sign."""
        bundle = Path(bundle_dir)
        manifest = read_manifest(bundle)
        writer = _Writer(bundle, self.config.jpeg_quality, manifest["artifacts"])
        self._strip(writer, frames)
        manifest["updated_at"] = datetime.now(UTC).isoformat()
        return self._sign(bundle, manifest, writer.artifacts)

    def add_verification(self, bundle_dir: str | Path, frame: Frame, detections: sv.Detections, outcome: str,
                         *, at: datetime | None = None) -> Bundle:
        """Record a re-check after the case was handled (`verified_cleared` or `still_present`)."""
        bundle = Path(bundle_dir)
        manifest = read_manifest(bundle)
        n = len(manifest["verifications"]) + 1
        writer = _Writer(bundle, self.config.jpeg_quality, manifest["artifacts"])
        ctx = BundleContext(zone_polygon=manifest["zone"]["polygon"])
        caption = f"{manifest['case_id']}  re-check {n}: {outcome}"
        self._moment(writer, f"verification_{n}", frame, detections, ctx, caption, folder="verification")
        manifest["verifications"].append({"n": n, "outcome": outcome, "at": self._time(at or frame.ts),
                                          "artifact": f"verification/verification_{n}.jpg",
                                          "frame_id": frame.frame_id, "detections": detections_json(detections)})
        manifest["updated_at"] = datetime.now(UTC).isoformat()
        return self._sign(bundle, manifest, writer.artifacts)

    def add_record(self, bundle_dir: str | Path, section: str, record: dict[str, Any]) -> Bundle:
        """Append a fact of the case's workflow (a warning before it, a check of the handler's photo) to
        `manifest[section]` (a list), then re-sign: the bundle then proves it like its frames."""
        bundle = Path(bundle_dir)
        manifest = read_manifest(bundle)
        manifest.setdefault(section, []).append(record)
        manifest["updated_at"] = datetime.now(UTC).isoformat()
        return self._sign(bundle, manifest, manifest["artifacts"])

    # ---- pieces ----------------------------------------------------------------------------

    def _codes(self, type_id: str) -> dict[str, Any]:
        try:
            vt = self.taxonomy.get(type_id)
            code = self.taxonomy.city_code(type_id, self.config.city)
        except KeyError as exc:
            raise EvidenceError(str(exc.args[0])) from None
        return {"type": type_id, "name_zh": vt.name_zh, "name_en": vt.name_en, "major_class": vt.major_class,
                "minor_class": vt.minor_class, "city": self.config.city, "major_code": code.major_code,
                "minor_code": code.minor_code, "open311_service_code": vt.open311_service_code}

    def _type_named(self, type_id: str) -> str:
        """A violation type as the caption names it: its Chinese name beside its id where the images are lettered in
        Chinese (`detect.evidence.drawing`), else its id."""
        if drawing.chinese_font() is None or type_id not in self.taxonomy.types:
            return type_id
        return f"{self.taxonomy.get(type_id).name_zh} {type_id}"

    def _time(self, t: datetime | None) -> dict[str, str] | None:
        if t is None:
            return None
        return {"utc": t.astimezone(UTC).isoformat(), "local": t.astimezone(self.tz).isoformat()}

    def _moment(self, writer: _Writer, name: str, frame: Frame, detections: sv.Detections, ctx: BundleContext,
                caption: str, folder: str | None = None) -> None:
        """Original + annotated (+ blurred shared copy) of one frame."""
        facts = {"ts": frame.ts.isoformat(), "frame_id": frame.frame_id}
        orig_dir, ann_dir = (folder, folder) if folder else ("originals", "annotated")
        source = Path(frame.path) if frame.path else None
        if source is not None and source.is_file():  # a photo: keep the file exactly as received (EXIF too)
            writer.copy(f"{orig_dir}/{name}_original{source.suffix.lower()}", source, f"original_{name}", **facts)
        else:
            writer.image(f"{orig_dir}/{name}_original.jpg", frame.image, f"original_{name}", **facts)
        text = f"{caption}  {drawing.stamp(frame.ts.astimezone(self.tz))}"
        polygon = _pixels(ctx.zone_polygon, frame.width, frame.height)
        names_zh = self.taxonomy.class_names_zh
        writer.image(f"{ann_dir}/{name}.jpg", drawing.annotate(frame.image, detections, polygon, text, names_zh),
                     f"annotated_{name}", **facts)
        if self.config.privacy_blur:
            blurred = blur_private(frame.image, _privacy_boxes(detections, ctx), self.taxonomy)
            writer.image(f"shared/{name}.jpg", drawing.annotate(blurred, detections, polygon, text, names_zh),
                         f"shared_{name}", **facts)

    def _strip(self, writer: _Writer, frames: list[Frame]) -> None:
        """Strip frames, numbered on from those already in the bundle (file order = time order)."""
        start = sum(1 for a in writer.artifacts if a["role"] == "strip")
        for i, frame in enumerate(evenly(sorted(frames, key=lambda f: f.ts), self.config.strip_max_frames), start):
            writer.image(f"strip/{i:02d}.jpg", _resize_width(frame.image, self.config.strip_width), "strip",
                         ts=frame.ts.isoformat(), frame_id=frame.frame_id)

    def _crops(self, writer: _Writer, frame: Frame, detections: sv.Detections, ctx: BundleContext) -> None:
        import supervision as sv

        names = detections.data.get(fields.CLASS_NAME, np.array(["object"] * len(detections)))
        blurred = blur_private(frame.image, _privacy_boxes(detections, ctx), self.taxonomy) if self.config.privacy_blur else None
        for i, (box, name) in enumerate(zip(detections.xyxy, names, strict=True)):
            xyxy = _padded(box, self.config.crop_margin, frame.width, frame.height)
            facts = {"ts": frame.ts.isoformat(), "class_name": str(name), "xyxy": [int(v) for v in xyxy]}
            part = file_part(str(name))
            writer.image(f"crops/{i:02d}_{part}.jpg", sv.crop_image(frame.image, xyxy), "crop", **facts)
            if blurred is not None:
                writer.image(f"shared/crop_{i:02d}_{part}.jpg", sv.crop_image(blurred, xyxy), "shared_crop", **facts)

    def _sign(self, bundle: Path, manifest: dict[str, Any], artifacts: list[dict[str, Any]]) -> Bundle:
        manifest["artifacts"] = sorted(artifacts, key=lambda a: a["path"])
        # What may leave the building: blurred copies when privacy is on, else annotated frames + crops.
        shared = ("shared_",) if self.config.privacy_blur else ("annotated_", "crop")
        # The opening frame first: protocols that take one image (Open311 media_url) get the best one.
        order = ("opened", "crop", "latest", "first_seen")
        rank = lambda a: next((i for i, key in enumerate(order) if a["role"].endswith(key)), len(order))  # noqa: E731
        manifest["dispatch_attachments"] = [a["path"] for a in sorted(manifest["artifacts"], key=lambda a: (rank(a), a["path"]))
                                            if a["role"].startswith(shared)]
        digest = write_signed_manifest(bundle, manifest, self.key, self.signer)
        return Bundle(path=bundle, digest=digest, manifest=manifest)


class _Writer:
    """Writes artifact files and keeps their manifest entries (path, role, size, SHA-256, type)."""

    def __init__(self, bundle: Path, quality: int, artifacts: list[dict[str, Any]] | None = None):
        self.bundle, self.quality = bundle, quality
        self.artifacts = list(artifacts or [])

    def image(self, rel: str, image: np.ndarray, role: str, **facts: Any) -> None:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise EvidenceError(f"{rel}: JPEG encoding failed for image of shape {image.shape}")
        self.write(rel, buf.tobytes(), role, width=int(image.shape[1]), height=int(image.shape[0]), **facts)

    def copy(self, rel: str, source: Path, role: str, **facts: Any) -> None:
        (self.bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, self.bundle / rel)
        self._record(rel, (self.bundle / rel).read_bytes(), role, **facts)

    def write(self, rel: str, data: bytes, role: str, **facts: Any) -> None:
        path = self.bundle / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self._record(rel, data, role, **facts)

    def _record(self, rel: str, data: bytes, role: str, **facts: Any) -> None:
        self.artifacts = [a for a in self.artifacts if a["path"] != rel]
        self.artifacts.append({"path": rel, "role": role, "sha256": sha256_bytes(data), "bytes": len(data),
                               "content_type": mimetypes.guess_type(rel)[0] or "application/octet-stream", **facts})


def _privacy_boxes(detections: sv.Detections, ctx: BundleContext) -> sv.Detections:
    import supervision as sv

    if ctx.privacy_detections is None:
        return detections
    # Only boxes and class names matter for blurring. The two sets differ in their other fields (the
    # frame's boxes have no tracker ids, the event's do; OCR text data), which `Detections.merge` refuses.
    parts = [ctx.privacy_detections, detections]
    names = [np.asarray(d.data.get(fields.CLASS_NAME, [""] * len(d)), dtype=object).reshape(-1) for d in parts]
    return sv.Detections(xyxy=np.concatenate([d.xyxy.reshape(-1, 4) for d in parts]).astype(float),
                         data={fields.CLASS_NAME: np.concatenate(names)})


def _pixels(polygon: list | None, width: int, height: int) -> np.ndarray | None:
    """A normalised [0, 1] polygon in this frame's pixels."""
    if not polygon:
        return None
    return (np.asarray(polygon, dtype=float).reshape(-1, 2) * [width, height]).round().astype(np.int64)


def file_part(name: str) -> str:
    """`name` as part of a file name a bundle copied to Windows can hold (`verified:street_stall` ->
    `verified-street_stall`): its refused characters and control characters become `-`.

    Only names of new files: bundles sealed before keep theirs (`crops/00_verified:street_stall.jpg`), since
    their manifest lists them and verification reads the manifest.
    """
    return "".join("-" if c in WINDOWS_REFUSED or ord(c) < 32 else c for c in name)


def _padded(box: np.ndarray, margin: float, width: int, height: int) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    return np.array([max(0, x1 - dx), max(0, y1 - dy), min(width, x2 + dx), min(height, y2 + dy)]).round().astype(int)


def _resize_width(image: np.ndarray, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w <= width:
        return image
    return cv2.resize(image, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)


def _time_sources(event: ViolationEvent) -> dict[str, dict[str, str]]:
    """`{"sources": {"first_seen": …, "opened": …}}`: where the frames' times came from (`detect.frames.TIME_SOURCE`:
    a photo's EXIF or name …, a camera's stream or a replay's start), when their frames say; nothing otherwise."""
    assert event.frame is not None
    first = event.first_frame or event.frame
    sources = {moment: frame.meta[TIME_SOURCE] for moment, frame in (("first_seen", first), ("opened", event.frame))
               if frame.meta.get(TIME_SOURCE)}
    return {"sources": sources} if sources else {}


def detections_json(detections: sv.Detections) -> list[dict[str, Any]]:
    """Evidence boxes as plain JSON (class, xyxy in frame pixels, confidence; OCR text if any).

    The same records go to the manifest and to the case store, where review and retraining read them.
    """
    names = detections.data.get(fields.CLASS_NAME, np.array([None] * len(detections)))
    texts = detections.data.get(fields.TEXT)
    out = []
    for i in range(len(detections)):
        item = {
            "class_name": None if names[i] is None else str(names[i]),
            "confidence": None if detections.confidence is None else round(float(detections.confidence[i]), 4),
            "xyxy": [round(float(v), 1) for v in detections.xyxy[i]],
            "tracker_id": None if detections.tracker_id is None else int(detections.tracker_id[i]),
        }
        if texts is not None and str(texts[i]):
            item["text"] = str(texts[i])
        out.append(item)
    return out
