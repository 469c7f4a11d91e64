"""Run the chosen suites on one set of real images and build the result record.

`streetwatch bench` is a thin shell around `run`; GPU machines without the CLI's extras can call
`python -m streetwatch.cli bench` from a source checkout (docs/benchmarks-on-gpu.md).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from datetime import datetime, timezone
from itertools import chain, zip_longest
from pathlib import Path

import numpy as np

from benchmarks.context import BenchConfig, BenchContext
from benchmarks.environment import environment
from benchmarks.media import real_sample_dir
from benchmarks.record import BenchRecord, ImageInfo, ModelFile
from benchmarks.suites import run_suite
from detect.imageio import ImageReadError, read_image
from detect.registry import resolve_weights
from detect.digests import sha256_file

log = logging.getLogger(__name__)


def default_images(limit: int) -> list[Path]:
    """Ultralytics' bundled bus.jpg and zidane.jpg, then real-sample photos taken in turn from each set."""
    files: list[Path] = []
    spec = importlib.util.find_spec("ultralytics")
    if spec is not None and spec.origin is not None:
        assets = Path(spec.origin).parent / "assets"
        files += [assets / n for n in ("bus.jpg", "zidane.jpg") if (assets / n).is_file()]
    sample = real_sample_dir()
    if sample.is_dir():
        sets = [sorted((d / "images").glob("*.jpg")) for d in sorted(sample.iterdir()) if (d / "images").is_dir()]
        files += [f for f in chain.from_iterable(zip_longest(*sets)) if f is not None]
    return files[:limit]


def load_images(files: list[Path]) -> tuple[list[Path], list[np.ndarray], list[ImageInfo]]:
    """Decode each file once (unreadable ones are logged and left out)."""
    kept, images, infos = [], [], []
    for f in files:
        try:
            im = read_image(f)
        except ImageReadError as exc:
            log.warning("benchmark image left out: %s", exc)
            continue
        kept.append(f)
        images.append(im)
        infos.append(ImageInfo(name=f.name, width=im.shape[1], height=im.shape[0], sha256=sha256_file(f)))
    return kept, images, infos


def base_model(model: str) -> ModelFile:
    """Identity and digest of the weights the run starts from (ModelNotFoundError when absent)."""
    path, card = resolve_weights(model)
    return ModelFile(id=card.id if card else path.stem, file=path.name, sha256=sha256_file(path))


def run(config: BenchConfig, files: list[Path], *, command: str = "", log_line: Callable[[str], None] = print) -> BenchRecord:
    """Run `config.suites` over `files`; suites and variants that cannot run are recorded as skipped."""
    model = base_model(config.model)
    files, images, infos = load_images(files[: config.max_images])
    if not images:
        raise ValueError("no readable benchmark images (give --images DIR with .jpg/.png photos)")
    log_line(f"{len(images)} images, model {model.id} ({model.file}), suites: {', '.join(config.suites)}")
    load_before = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    ctx = BenchContext(config=config, files=files, images=images, log=log_line)
    try:
        suites = {name: run_suite(name, ctx) for name in config.suites}
    finally:
        ctx.close()
    for name, suite in suites.items():
        if suite.status != "ok":
            log_line(f"suite {name}: {suite.status}: {suite.reason}")
    return BenchRecord(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        command=command,
        config=config.model_dump(),
        environment={**environment(), "load_average_at_start": load_before},
        model=model,
        images=infos,
        suites=suites,
    )
