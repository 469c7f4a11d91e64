"""`streetwatch detect`: run the detector on image files and print, draw or emit JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipelines.wording import counted  # no import of its own
from streetwatch.commands.common import (
    BackendOpt, ConfOpt, DeviceOpt, ImgszOpt, ModelOpt, VerifierOpt, fail, judged_with, judgement_or_fail, print_error,
    setup_logging,
)


def register(app: typer.Typer) -> None:
    app.command("detect")(detect)


def detect(
    # readable=False: an unreadable file is reported per file below, not refused with the whole batch
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).", readable=False)],
    backend: BackendOpt = "onnx",
    device: DeviceOpt = "cpu",
    model: ModelOpt = None,
    conf: ConfOpt = 0.25,
    imgsz: ImgszOpt = 640,
    out: Annotated[Path | None, typer.Option("--out", help="Write annotated copies of the images here, with what the verifier found (NAME.jpg; NAME-2.jpg for "
                                             "the next image of the same name, e.g. from another folder).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per image instead of text.")] = False,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per inference batch.")] = 8,
    verifier: VerifierOpt = None,
) -> None:
    """Detect objects in images with the configured model, and judge them with the verifier.

    Each image also gets the verifier's per-type probabilities and what it finds (`verifier` and
    `verified` in --json; docs/verifier.md), unless --verifier none. Bad files are reported one by one
    (file and reason; with --json also as an object {"image", "error"} on stdout) and never stop the batch;
    the exit code is non-zero only when no image could be read.
    """
    setup_logging()
    from detect.engine import DetectorConfigError, ModelNotFoundError, load_detector
    from detect.imageio import ImageReadError, list_inputs, read_image

    files, refused = list_inputs(paths)
    for item in refused:
        _not_read(item.path, item.reason, as_json)
    if not files:
        fail("no image files found in " + ", ".join(map(str, paths)), code=1 if refused else 2)
    judgement = judgement_or_fail(verifier)
    try:
        detector = load_detector(model, backend=backend, device=device, conf=conf, imgsz=imgsz, max_batch=batch,
                                 features=judgement.needs_features)
        judgement.check(detector)
    except (DetectorConfigError, ModelNotFoundError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"judging with {judged_with(judgement)}", err=True)  # stdout stays the detections (--json)
    if out:
        out.mkdir(parents=True, exist_ok=True)

    ok = 0
    annotated: set[str] = set()
    for start in range(0, len(files), batch):
        chunk, images = [], []
        for f in files[start : start + batch]:
            try:
                images.append(read_image(f))
                chunk.append(f)
            except ImageReadError as exc:
                _not_read(exc.source, exc.reason, as_json)
        if not images:
            continue
        if judgement.needs_features:
            results = detector.detect_with_features(images)
        else:
            results = [(d, None) for d in detector.detect(images)]
        for f, im, (dets, fmap) in zip(chunk, images, results, strict=True):
            ok += 1
            dets, verdicts = judgement.objects(im, dets, fmap)
            record = detections_record(f, im.shape[1], im.shape[0], dets)
            if verdicts is not None:
                record["verifier"] = verdicts.to_json()
                record["verified"] = sorted(t for t in verdicts.thresholds if verdicts.found(t))
            if out:
                record["annotated"] = str(out / annotated_name(f, annotated))
            if as_json:
                typer.echo(json.dumps(record, ensure_ascii=False))
            else:
                typer.echo(summary_line(record))
            if out:  # with what the verifier found drawn (`verified:<type>`, triage's evidence boxes), not the objects alone
                write_annotated(Path(record["annotated"]), im, judgement.photo(verdicts, dets, im.shape[1], im.shape[0]))
    if ok == 0:
        fail("no image could be read", code=1)


def _not_read(path: Path | str, reason: str, as_json: bool) -> None:
    """An input that could not be read: its `PATH: reason` line on stderr and, with --json, its record on stdout
    (`{"image", "error"}`), so a script reading only stdout learns which inputs failed and why."""
    print_error(f"{path}: {reason}")
    if as_json:
        typer.echo(json.dumps({"image": str(path), "error": reason}, ensure_ascii=False))


def detections_record(path: Path, width: int, height: int, dets) -> dict:
    """The per-image JSON record: image, size and detections (cls, name, conf, xyxy)."""
    from detect import fields

    return {
        "image": str(path),
        "width": width,
        "height": height,
        "detections": [
            {"cls": int(c), "name": str(n), "conf": round(float(s), 4), "xyxy": [round(float(v), 1) for v in box]}
            for box, s, c, n in zip(dets.xyxy, dets.confidence, dets.class_id, fields.names(dets), strict=True)
        ],
    }


def summary_line(record: dict) -> str:
    parts = [f"{d['name']} {d['conf']:.2f}" for d in record["detections"]]
    line = f"{record['image']} ({record['width']}x{record['height']}): {counted(len(parts), 'detection')}" + (
        ": " + ", ".join(parts) if parts else "")
    if "verifier" in record:
        line += "; verifier: " + (", ".join(f"{t} {record['verifier'][t]['p']:.2f}" for t in record["verified"]) or "nothing found")
    return line


def annotated_name(path: Path, taken: set[str]) -> str:
    """`NAME.jpg` for the annotated copy of `path`, or `NAME-2.jpg`, `NAME-3.jpg` ... when an earlier image of
    this run took it: phones number photos per folder, so `a/IMG_0001.jpg` and `b/IMG_0001.jpg` (or
    `IMG_1.jpg` and `IMG_1.png`) would otherwise overwrite each other's copy. `taken` is updated."""
    name, n = f"{path.stem}.jpg", 1
    while name.lower() in taken:  # case-insensitive: the same file on macOS and Windows volumes
        n += 1
        name = f"{path.stem}-{n}.jpg"
    taken.add(name.lower())
    return name


def write_annotated(path: Path, image, dets) -> None:
    """The annotated copy, written beside `path` and renamed onto it once whole (`replaced_atomically`): written in
    place, a Ctrl-C or a full disk half way left a truncated JPEG under the name, and a copy from an earlier run
    being read was rewritten under its reader."""
    import cv2
    import supervision as sv

    from detect import fields
    from detect.config_io import replaced_atomically

    labels = [f"{n} {c:.2f}" for n, c in zip(fields.names(dets), dets.confidence, strict=True)]
    canvas = sv.BoxAnnotator(thickness=2).annotate(image.copy(), dets)
    canvas = sv.LabelAnnotator(text_scale=0.5, smart_position=True).annotate(canvas, dets, labels=labels)  # in the frame
    ok, jpeg = cv2.imencode(path.suffix, canvas)
    if not ok:
        raise ValueError(f"{path}: the annotated copy could not be encoded as {path.suffix}")
    with replaced_atomically(path) as tmp:
        tmp.write_bytes(jpeg.tobytes())
