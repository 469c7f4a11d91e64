#!/usr/bin/env bash
# What scripts/gpu-check.sh needs on a GPU machine whose Python already has PyTorch, NumPy, OpenCV,
# ONNX and ONNX Runtime but nothing else of ours, and no package index (this workplace's lent H200):
#
#   scripts/gpu-carry.sh [--python-version 3.12]
#
# writes, beside this checkout's files and ignored by git (.git/info/exclude):
#   .whl/                  binary wheels of the rest (~20 MB, at the versions in .venv, the tested ones)
#   .gpu/shared/           yolo11n-int8dq.pt and the first 7 photos of each real-sample set ($STREETWATCH_SHARED)
#   .gpu/street-parity/    198 street-scenes photos picked across the types, with their labels.csv
# and prints the command to run there. Carry both folders (~55 MB). Never commit them.
set -euo pipefail
cd "$(dirname "$0")/.."
pyver=3.12
[[ "${1:-}" == --python-version ]] && pyver="$2"
shared="${STREETWATCH_SHARED:-../shared}"
py=.venv/bin/python
[[ -x "$py" ]] || { echo "no .venv: run 'make install' first (the wheels are pinned to its versions)" >&2; exit 1; }
for d in /.whl/ /.gpu/; do grep -qxF "$d" .git/info/exclude || echo "$d" >>.git/info/exclude; done

# The packages the bench, the CUDA tests, verifier eval and triage import that such a machine lacks
# (docs/benchmarks-on-gpu.md); PyAV, pillow-heif and RapidOCR stay behind.
packages="ultralytics ultralytics-thop ultralytics-platform onnxslim pydantic pydantic-core annotated-types
typing-inspection supervision trackers pyDeprecate defusedxml shapely sqlalchemy alembic mako cryptography cffi
imagehash phonenumbers piexif PySocks"
pins=$(for p in $packages; do echo "$p==$("$py" -m pip show "$p" | awk '/^Version:/{print $2}')"; done)
rm -rf .whl && mkdir .whl
# shellcheck disable=SC2086
"$py" -m pip download -q --no-deps --only-binary=:all: --implementation cp --python-version "$pyver" \
  --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $pins

rm -rf .gpu && mkdir -p .gpu/shared/models
cp -L "$shared/models/yolo11n-int8dq.pt" .gpu/shared/models/
for set in street-garbage facades-ads; do
  mkdir -p ".gpu/shared/datasets/real-sample/$set/images"
  find "$shared/datasets/real-sample/$set/images" -name '*.jpg' | sort | head -7 | xargs -I{} cp {} ".gpu/shared/datasets/real-sample/$set/images/"
done
"$py" - "$shared/datasets/street-scenes" .gpu/street-parity <<'EOF'
"""Photos of every type (stall, spillover, parking, off-gallery and gallery flyposting, Chinese streets, none)."""
import csv, random, shutil, sys
from pathlib import Path

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
rows = list(csv.DictReader((src / "labels.csv").open(encoding="utf-8")))
rng = random.Random(0)
types = ("street_stall", "shopfront_spillover", "parking_motor", "parking_nonmotor", "flyposting")
picks = [(lambda r: r["street_stall"] == "1", 50), (lambda r: r["shopfront_spillover"] == "1", 45),
         (lambda r: "1" in (r["parking_motor"], r["parking_nonmotor"]), 29),
         (lambda r: r["flyposting"] == "1" and "/stk/" not in r["file"], 25),
         (lambda r: r["flyposting"] == "1" and "/stk/" in r["file"], 15), (lambda r: "/cn" in r["file"], 30),
         (lambda r: all(r[k] in ("0", "") for k in types), 40)]
chosen = {}
for keep, n in picks:
    rows_of = [r for r in rows if keep(r)]
    rng.shuffle(rows_of)
    chosen.update((r["file"], r) for r in rows_of[:n])
for f in chosen:
    (dst / f).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / f, dst / f)
with (dst / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
    writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(chosen[f] for f in sorted(chosen))
print(f"{dst}: {len(chosen)} photos")
EOF
echo "wheels: $(ls .whl | wc -l) in .whl ($(du -sh .whl | cut -f1)); .gpu: $(du -sh .gpu | cut -f1)"
cat <<EOF
on the GPU machine, from this checkout with .whl and .gpu carried:
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
  STREETWATCH_SHARED=\$PWD/.gpu/shared scripts/gpu-check.sh OUT .gpu/street-parity
EOF
