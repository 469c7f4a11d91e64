#!/usr/bin/env bash
# Debian packages used by tests and the demo. Installs only what is missing; needs root (or sudo).
set -euo pipefail
# fonts-wqy-microhei: a CJK font, so tests can render Chinese small-ad text for OCR
pkgs=(ffmpeg fonts-wqy-microhei)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
