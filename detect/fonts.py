"""A font with Chinese glyphs (Debian `fonts-noto-cjk`, see scripts/install-system-deps.sh).

Rendered small ads (verifier training, demo posters) need real CJK glyphs; without such a font
they would be boxes, so callers refuse to go on rather than train on tofu. The evidence images and the report's
thumbnails are lettered in it where it is found, and in OpenCV's font (ids, no Chinese) where not
(detect.evidence.drawing); the analytics charts take it through Matplotlib.
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
from pathlib import Path

FONT_GLOBS = ("/usr/share/fonts/**/wqy-microhei.ttc", "/usr/share/fonts/**/NotoSansCJK-Regular.ttc",
              "/usr/share/fonts/**/*CJK*.tt[cf]", "/usr/share/fonts/**/*[Ww]en[Qq]uan*.tt[cf]",
              "/System/Library/Fonts/PingFang.ttc", "C:/Windows/Fonts/msyh.tt[cf]")
#: fontconfig's weights of a Regular and a Bold face (`fc-list --format %{weight}`).
REGULAR, BOLD = 80, 200
#: A face's weight from its file name, for the paths found without fontconfig (`NotoSansCJK-Bold.ttc`); first match.
_NAMED_WEIGHTS = (("thin", 0), ("extralight", 40), ("demilight", 55), ("light", 50), ("medium", 100), ("semibold", 180),
                  ("demibold", 180), ("bold", BOLD), ("black", 210), ("heavy", 210))


def _weight_gap(file: str, weight: str, wanted: int) -> float:
    """How far a face is from the weight `wanted`: by fontconfig's weight (`80`, a variable font's range `[0 210]`) when
    given, else by its file name (no weight word: Regular)."""
    numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", weight)]
    if not numbers:
        stem = Path(file).stem.lower()
        numbers = [next((w for word, w in _NAMED_WEIGHTS if word in stem), REGULAR)]
    low, high = min(numbers), max(numbers)
    return 0.0 if low <= wanted <= high else min(abs(low - wanted), abs(high - wanted))


def find_cjk_font(weight: int = REGULAR) -> Path | None:
    """A font with Chinese glyphs: fontconfig's list for :lang=zh, else well-known paths. WenQuanYi first, then a sans
    face, each family's face nearest `weight` (Regular unless asked): fonts-noto-cjk installs NotoSansCJK-Bold.ttc beside
    -Regular, and by name alone Bold came first, so the demo's posters were bold."""
    if shutil.which("fc-list"):
        out = subprocess.run(["fc-list", "--format", "%{file}\t%{weight}\n", ":lang=zh"], capture_output=True, text=True,
                             check=False).stdout
        gaps: dict[str, float] = {}
        for line in out.splitlines():
            file, _, faces = line.partition("\t")
            if file := file.strip():
                gaps[file] = min(gaps.get(file, float("inf")), _weight_gap(file, faces, weight))
        files = sorted(gaps, key=lambda f: ("wqy" not in f.lower(), "sans" not in f.lower(), gaps[f], f))
        if files:
            return Path(files[0])
    for pattern in FONT_GLOBS:
        hits = sorted(glob.glob(pattern, recursive=True), key=lambda f: (_weight_gap(f, "", weight), f))
        if hits:
            return Path(hits[0])
    return None


def simplified_face(path: Path) -> int:
    """The index of a collection's simplified-Chinese face for PIL (`Noto Sans CJK SC`, not the JP face a .ttc lists
    first, whose forms of shared characters are Japanese; not a monospaced one), 0 for a single-face file."""
    from PIL import ImageFont

    names = []
    for index in range(32):
        try:
            names.append(ImageFont.truetype(str(path), 12, index=index).getname()[0] or "")
        except OSError:  # past the last face
            break
    return min(range(len(names)), key=lambda i: (not names[i].endswith((" SC", " CN")), "Mono" in names[i], i), default=0)
