"""Requirement lists for carrying this project's dependencies to an offline GPU machine that has PyTorch.

`scripts/bench-wheelhouse.sh download` calls this to learn what to fetch: the project's own
requirements (core + the torch extra + pytest), and their full dependency closure as installed in
this virtualenv (the versions the tests passed with), minus the PyTorch stack (torch,
torchvision, triton, nvidia-* CUDA wheels), which the GPU machine already has and which must
match its driver.

    python -m benchmarks.wheelhouse OUT_DIR [--onnxruntime-gpu]

writes OUT_DIR/requirements.txt (what to install, loose, as the project declares it) and
OUT_DIR/pins.txt (what to download, exact versions).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
#: Left to the GPU machine: its PyTorch build and the CUDA libraries that come with it.
TORCH_STACK = re.compile(r"^(torch|torchvision|torchaudio|triton|pytorch-triton(-.*)?|nvidia-.*)$")
#: Enough to run the benchmark tests there too.
TEST_TOOLS = ["pytest>=8", "pytest-timeout>=2.3", "jsonschema>=4.21"]


def project_requirements(pyproject: Path = REPO / "pyproject.toml", extras: tuple[str, ...] = ("torch",)) -> list[Requirement]:
    """Core dependencies, the given extras and the test tools, without the PyTorch stack."""
    project = tomllib.loads(pyproject.read_text())["project"]
    specs = list(project["dependencies"])
    for extra in extras:
        specs += project["optional-dependencies"][extra]
    reqs = [Requirement(s) for s in specs + TEST_TOOLS]
    return [r for r in reqs if not TORCH_STACK.match(canonicalize_name(r.name))]


def closure(reqs: list[Requirement]) -> dict[str, str]:
    """name -> installed version for `reqs` and everything they need here, the PyTorch stack left out."""
    pins: dict[str, str] = {}
    todo = [(r, ()) for r in reqs]
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if TORCH_STACK.match(name) or (req.marker and not _marker_holds(req, extras)):
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            raise SystemExit(f"{req.name} is required but not installed in this environment; run `make install` first")
        new_extras = tuple(sorted(req.extras))
        if name in pins and not new_extras:
            continue
        pins[name] = dist.version
        for sub in dist.requires or []:
            todo.append((Requirement(sub), new_extras))
    return dict(sorted(pins.items()))


def _marker_holds(req: Requirement, extras: tuple[str, ...]) -> bool:
    return any(req.marker.evaluate({"extra": e}) for e in extras or ("",))


def write(out: Path, onnxruntime_gpu: bool = False) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    reqs = project_requirements()
    pins = closure(reqs)
    if onnxruntime_gpu and "onnxruntime" in pins:
        # Both: the CPU wheel satisfies the declared requirements at install time, and the install
        # step then swaps it for the GPU build (they share the module name).
        pins["onnxruntime-gpu"] = pins["onnxruntime"]
    requirements = out / "requirements.txt"
    requirements.write_text("".join(f"{r}\n" for r in reqs))
    pin_file = out / "pins.txt"
    pin_file.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
    return requirements, pin_file


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--onnxruntime-gpu", action="store_true", help="also fetch onnxruntime-gpu (installed in place of onnxruntime)")
    args = parser.parse_args(argv)
    for path in write(args.out, args.onnxruntime_gpu):
        print(path)


if __name__ == "__main__":
    main()
