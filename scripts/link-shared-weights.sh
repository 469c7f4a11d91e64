#!/usr/bin/env bash
# Link the COCO YOLO checkpoints from ../shared/models (offline copies; see its MANIFEST.md) into
# models/ so the registry finds them. Does nothing where there is no ../shared (a user's machine:
# put yolo11n.pt in models/ yourself, or let Ultralytics download it when online).
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${STREETWATCH_SHARED:-../shared}/models"
[ -d "$shared" ] || exit 0
mkdir -p models
for f in "$shared"/*.pt; do
  [ -e "$f" ] || continue
  ln -sfn "$(realpath "$f")" "models/$(basename "$f")"
done
