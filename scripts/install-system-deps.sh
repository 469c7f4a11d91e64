#!/usr/bin/env bash
# Debian packages the tests and the demo use. Installs only what is missing; needs root or sudo.
#   ffmpeg                         video files for CCTV replays, decoding checks
#   gir1.2-gst-rtsp-server-1.0 …   GStreamer's RTSP server (run with /usr/bin/python3) for RTSP tests
#   chromium                       headless browser for the report and review-page tests
#   chromium-driver                WebDriver for chromium (Selenium drives the review pages in tests)
#   fonts-noto-cjk                 Chinese glyphs for rendered test posters, report labels, the analytics reports' charts/PDF and the evidence images' labels
#   postgresql                     PostgreSQL case-store tests
#   zip                            password-protected archives for the photo-triage bad-input tests
set -euo pipefail
pkgs=(ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
      gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
      chromium chromium-driver fonts-noto-cjk postgresql zip)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "install-system-deps: not root and no sudo; please install: ${missing[*]}" >&2; exit 1
  fi
fi
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
