#!/usr/bin/env bash
# The GPU checks in one pass, for a machine with an NVIDIA GPU and this project's Python packages
# (docs/benchmarks-on-gpu.md says how to carry them to an offline one):
#
#   scripts/gpu-check.sh OUT_DIR [LABELLED_FOLDER]
#
# 1. bench: the detector on the GPU (torch fp32/fp16) against the CPU (torch, ONNX Runtime), batch
#    1/8/32 at 640, each variant checked against its backend's CPU fp32 boxes -> OUT_DIR/bench.{json,md}
# 2. tests: the CUDA parity tests (tests/test_gpu_path.py: fp16, device letterbox, CUDA graphs,
#    the promoted verifier's probabilities on the GPU)
# 3. verdicts: with LABELLED_FOLDER (labels.csv + photos, as for `verifier eval`), the promoted
#    verifier's per-photo verdicts on the GPU (OCR off) -> OUT_DIR/verdicts-cuda.csv, figures-cuda.json;
#    compare them with a CPU run's --validation-csv of the same folder
# 4. threads: a torch detector's first call from a fresh thread against its second, in the calling
#    thread and through the detector's own thread -> OUT_DIR/threads-cuda.json
# 5. triage: photos/s of triage on the GPU against a plain YOLO predict loop on the GPU, 40 photos of
#    12 MP, OCR off -> OUT_DIR/triage-cuda.json
#
# Each step has its own time limit (a hung step does not eat the others' time); everything printed
# goes to OUT_DIR/all.log. Exit status 1 when a step failed. PYTHON picks the interpreter (python3);
# STEPS="threads triage" runs only those steps, in the order above (default: all five).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/gpu-check.sh OUT_DIR [LABELLED_FOLDER]}"
data="${2:-}"
py="${PYTHON:-python3}"
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
exec > >(tee -a "$out/all.log") 2>&1
failed=0

steps="${STEPS:-bench tests verdicts threads triage}"

step() {  # step NAME SECONDS COMMAND...
  local name="$1" limit="$2" start rc
  shift 2
  [[ " $steps " == *" $name "* ]] || return 0
  echo "== $name (limit ${limit} s): $*"
  start=$(date +%s)
  timeout "$limit" "$@"
  rc=$?
  [ "$rc" -eq 0 ] || failed=1
  echo "== $name: exit $rc after $(( $(date +%s) - start )) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || failed=1
"$py" -c 'import torch, onnxruntime, ultralytics; print("torch", torch.__version__, "CUDA", torch.version.cuda,
"GPU", torch.cuda.get_device_name() if torch.cuda.is_available() else None); print("onnxruntime", onnxruntime.__version__,
onnxruntime.get_available_providers()); print("ultralytics", ultralytics.__version__)' || exit 1
bash scripts/link-shared-weights.sh

step bench 200 "$py" -m streetwatch.cli bench --backend torch,onnx --device cuda,cpu --precision fp32,fp16 \
  --batch 1,8,32 --imgsz 640 --duration 4 --out "$out/bench.json" --markdown "$out/bench.md"
step tests 170 "$py" -m pytest -q -p no:cacheprovider -rs tests/test_gpu_path.py
if [ -n "$data" ]; then
  step verdicts 100 "$py" -m streetwatch.cli verifier eval --data "$data" --backend torch --device cuda --ocr off \
    --validation-csv "$out/verdicts-cuda.csv" --out "$out/figures-cuda.json"
fi
step threads 60 "$py" -m benchmarks.thread_cold_start --device cuda --threads 4 --out "$out/threads-cuda.json"
step triage 120 "$py" -m benchmarks.triage_throughput --backend torch --device cuda --ocr off --photos 40 --rounds 2 \
  --out "$out/triage-cuda.json"
exit "$failed"
