#!/usr/bin/env bash
# Carry what `streetwatch bench` needs to an offline GPU machine that already has PyTorch.
#
#   On a machine with internet, in this checkout (its .venv installed with `make install`):
#     scripts/bench-wheelhouse.sh download [DIR] [--python-version 3.11] [--arch x86_64|aarch64]
#                                           [--onnxruntime-gpu] [--extra SPEC]... [--dry-run]
#   On the GPU machine, from the carried checkout:
#     scripts/bench-wheelhouse.sh install [DIR] [--python PYTHON]
#
# download: writes DIR/requirements.txt (the project's requirements, minus the PyTorch stack) and
# DIR/pins.txt (their closure at the versions installed in .venv, i.e. the tested ones), then fetches
# binary wheels of the pins for the target's Python and CPU with `pip download --only-binary=:all:
# --platform ... --python-version ...` (a pin without a wheel for that Python is fetched unpinned).
# install: `pip install --no-index --find-links DIR -r DIR/requirements.txt`: what the machine
# already has (torch, numpy, ...) is kept when it satisfies the requirement, the rest comes from DIR.
# See docs/benchmarks-on-gpu.md for the whole procedure.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
[[ "$mode" == download || "$mode" == install ]] || { sed -n '2,16p' "$0"; exit 2; }
shift
dir=wheelhouse
if [[ $# -gt 0 && "$1" != --* ]]; then dir="$1"; shift; fi
pyver=3.11 arch=x86_64 ort_gpu="" dry_run="" extras=() python="${PYTHON:-python3}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python-version) pyver="$2"; shift 2 ;;
    --arch) arch="$2"; shift 2 ;;
    --onnxruntime-gpu) ort_gpu="--onnxruntime-gpu"; shift ;;
    --extra) extras+=("$2"); shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

if [[ "$mode" == download ]]; then
  py="${PYTHON:-.venv/bin/python}"
  [[ -x "$py" ]] || py=python3
  "$py" -m benchmarks.wheelhouse "$dir" $ort_gpu >/dev/null
  for e in "${extras[@]}"; do echo "$e" >>"$dir/pins.txt"; done
  platform=(--platform "manylinux_2_28_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch")
  target=(--only-binary=:all: --no-deps --implementation cp --python-version "$pyver" "${platform[@]}" -d "$dir")
  echo "requirements: $dir/requirements.txt ($(wc -l <"$dir/requirements.txt") lines)"
  echo "pins:         $dir/pins.txt ($(wc -l <"$dir/pins.txt") packages, PyTorch stack left out)"
  echo "target:       CPython $pyver, linux $arch"
  if [[ -n "$dry_run" ]]; then
    echo "would run: $py -m pip download ${target[*]} -r $dir/pins.txt"
    exit 0
  fi
  if ! "$py" -m pip download "${target[@]}" -r "$dir/pins.txt"; then
    echo "some pins have no wheel for that target; fetching them one by one (unpinned where needed)" >&2
    while read -r pin; do
      "$py" -m pip download "${target[@]}" "$pin" -q 2>/dev/null \
        || { echo "  $pin: no wheel, taking the newest ${pin%%==*} for CPython $pyver" >&2
             "$py" -m pip download "${target[@]}" "${pin%%==*}" -q; }
    done <"$dir/pins.txt"
  fi
  echo "wheels: $(ls "$dir"/*.whl | wc -l) in $dir ($(du -sh "$dir" | cut -f1)); carry it with this checkout and models/"
else
  [[ -f "$dir/requirements.txt" ]] || { echo "$dir/requirements.txt not found: run '$0 download' first" >&2; exit 1; }
  "$python" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.is_available())' \
    || { echo "this Python has no PyTorch: install the machine's PyTorch build first" >&2; exit 1; }
  "$python" -m pip install --no-index --find-links "$dir" -r "$dir/requirements.txt"
  if compgen -G "$dir/onnxruntime_gpu-*.whl" >/dev/null; then
    # onnxruntime and onnxruntime-gpu share the module name: keep only the GPU build.
    "$python" -m pip uninstall -y onnxruntime
    "$python" -m pip install --no-index --find-links "$dir" --no-deps --force-reinstall onnxruntime-gpu
  fi
  "$python" -m pip check || echo "(pip check notes above are expected for rapidocr-onnxruntime with onnxruntime-gpu)"
  "$python" -c 'import onnxruntime as o, ultralytics; print("onnxruntime", o.__version__, o.get_available_providers()); print("ultralytics", ultralytics.__version__)'
fi
