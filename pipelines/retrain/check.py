"""`data check`: every problem of a dataset version, one line per file with the reason.

Errors make a dataset unusable for training (`streetwatch train` refuses it unless told
otherwise): unreadable images, images without a label file, label files without an image, bad
label lines (see `dataset.parse_labels`), files changed since the manifest was written, and
leakage between train and val (one group on both sides, the same picture on both sides, or a
near-duplicate picture on both sides by perceptual hash). Warnings are worth a look but do not
block: duplicate pictures inside one split, duplicate boxes, classes with no boxes.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from detect.imageio import ImageReadError, decode_image
from detect.digests import sha256_file
from pipelines.retrain.dataset import IMAGE_SUFFIXES, MANIFEST, Dataset, FileEntry, parse_labels

#: Perceptual-hash distance (bits of 64) at or below which two pictures count as near-duplicates.
NEAR_DUPLICATE_BITS = 4


@dataclass(frozen=True)
class Finding:
    """One problem: which file, why, and whether it blocks training."""

    path: str
    reason: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.reason}"


@dataclass
class CheckReport:
    dataset: str
    findings: list[Finding]
    images: int

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        state = "passes" if self.ok else "FAILS"
        return f"{self.dataset}: {state} data check: {self.images} images, {len(self.errors)} errors, {len(self.warnings)} warnings"


def check_dataset(dataset: Dataset, near_duplicate_bits: int = NEAR_DUPLICATE_BITS) -> CheckReport:
    """Check files against the manifest, labels line by line, and the split for leakage."""
    findings: list[Finding] = []
    root = dataset.root
    listed_images = {f.image for f in dataset.files()}
    listed_labels = {f.label for f in dataset.files() if f.label}
    for path in sorted((root / "images").rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in listed_images:
            findings.append(Finding(rel, f"image not in {MANIFEST} (added after the version was written?)"))
    for path in sorted((root / "labels").rglob("*.txt")):
        rel = path.relative_to(root).as_posix()
        if rel not in listed_labels:
            findings.append(Finding(rel, "label file without an image"))

    hashes: dict[str, np.ndarray] = {}
    for entry in dataset.files():
        problems, phash = _check_file(dataset, entry)
        findings += problems
        if phash is not None:
            hashes[entry.image] = phash
    if not any(dataset.path(f.label).is_file() and f.boxes for f in dataset.files() if f.label):
        findings.append(Finding(MANIFEST, "no boxes at all in this dataset", "warning"))
    for i, name in enumerate(dataset.classes):
        if dataset.manifest.counts.get("per_class", {}).get(name, {}).get("boxes", 1) == 0:
            findings.append(Finding(MANIFEST, f"class {i} '{name}' has no boxes", "warning"))
    findings += _duplicates(dataset.files())
    if dataset.is_split:
        findings += _leakage(dataset, hashes, near_duplicate_bits)
    return CheckReport(str(root), findings, len(dataset.files()))


def _check_file(dataset: Dataset, entry: FileEntry) -> tuple[list[Finding], np.ndarray | None]:
    """Problems of one image and its label file, and the image's perceptual hash."""
    out: list[Finding] = []
    image = dataset.path(entry.image)
    phash = size = None
    if not image.is_file():
        return [Finding(entry.image, f"listed in {MANIFEST} but missing")], None
    if sha256_file(image) != entry.sha256:
        out.append(Finding(entry.image, f"changed since the manifest was written (sha256 differs from {MANIFEST})"))
    try:
        decoded = decode_image(image, max_side=256)
        size = decoded.full_size
        phash = _phash(decoded.image)
    except ImageReadError as exc:
        out.append(Finding(entry.image, exc.reason))
    if entry.label is None:
        out.append(Finding(entry.image, "image without a label file (an empty label file marks a negative)"))
        return out, phash
    label = dataset.path(entry.label)
    if not label.is_file():
        out.append(Finding(entry.label, f"label file listed in {MANIFEST} but missing"))
        return out, phash
    data = label.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry.label_sha256:
        out.append(Finding(entry.label, f"changed since the manifest was written (sha256 differs from {MANIFEST})"))
    parsed = parse_labels(data, len(dataset.classes), size)
    out += [Finding(entry.label, p) for p in parsed.problems]
    if parsed.duplicates:
        out.append(Finding(entry.label, f"{parsed.duplicates} duplicate box line(s)", "warning"))
    return out, phash


def _phash(bgr: np.ndarray) -> np.ndarray:
    """64-bit perceptual hash (imagehash's DCT pHash) as a bool array."""
    import imagehash
    from PIL import Image

    return imagehash.phash(Image.fromarray(bgr[:, :, ::-1])).hash.flatten()


def image_phash(path: Path) -> np.ndarray | None:
    """Perceptual hash of a picture file (None when unreadable; `data check` reports those)."""
    try:
        return _phash(decode_image(path, max_side=256).image)
    except ImageReadError:
        return None


def _duplicates(files: list[FileEntry]) -> list[Finding]:
    by_hash: dict[str, list[FileEntry]] = defaultdict(list)
    for f in files:
        by_hash[f.sha256].append(f)
    out = []
    for same in by_hash.values():
        if len(same) > 1 and len({f.split for f in same}) == 1:
            names = ", ".join(f.image for f in same[1:])
            out.append(Finding(same[0].image, f"same picture (sha256) as {names}", "warning"))
    return out


def _leakage(dataset: Dataset, hashes: dict[str, np.ndarray], bits: int) -> list[Finding]:
    """Groups, identical and near-identical pictures on both sides of the split."""
    out = []
    train, val = dataset.files("train"), dataset.files("val")
    val_groups = {f.group for f in val}
    for group in sorted({f.group for f in train} & val_groups):
        in_val = [f.image for f in val if f.group == group]
        out.append(Finding(in_val[0], f"group '{group}' is in both train and val ({len(in_val)} val image(s)): split leaks"))
    train_sha = {f.sha256: f.image for f in train}
    for f in val:
        if f.sha256 in train_sha:
            out.append(Finding(f.image, f"same picture as train image {train_sha[f.sha256]}: split leaks"))
    t_names = [f.image for f in train if f.image in hashes]
    v_names = [f.image for f in val if f.image in hashes and f.sha256 not in train_sha]
    if t_names and v_names:
        t = np.stack([hashes[n] for n in t_names])
        for name in v_names:
            dist = (t != hashes[name]).sum(axis=1)
            j = int(dist.argmin())
            if dist[j] <= bits:
                out.append(Finding(name, f"near-duplicate of train image {t_names[j]} (pHash distance {dist[j]}): split leaks"))
    return out


def scan_orphans(images: list[Path], labels: list[Path], label_for) -> list[Finding]:
    """Label files of a source folder that no image uses (`label_for(image) -> label path`)."""
    used = {label_for(p).resolve() for p in images}
    return [Finding(str(p), "label file without an image") for p in labels if p.resolve() not in used]


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES
