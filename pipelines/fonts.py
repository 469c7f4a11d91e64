"""A font with Chinese glyphs (Debian `fonts-noto-cjk`, see scripts/install-system-deps.sh).

Rendered small ads (verifier training, demo posters) need real CJK glyphs; without such a font
they would be boxes, so callers refuse to go on rather than train on tofu.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

FONT_GLOBS = ("/usr/share/fonts/**/wqy-microhei.ttc", "/usr/share/fonts/**/NotoSansCJK-Regular.ttc",
              "/usr/share/fonts/**/*CJK*.tt[cf]", "/usr/share/fonts/**/*[Ww]en[Qq]uan*.tt[cf]",
              "/System/Library/Fonts/PingFang.ttc", "C:/Windows/Fonts/msyh.tt[cf]")


def find_cjk_font() -> Path | None:
    """A font with Chinese glyphs: fontconfig's list for :lang=zh, else well-known paths."""
    if shutil.which("fc-list"):
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, check=False).stdout
        files = sorted({f.strip().rstrip(":") for f in out.split("\n") if f.strip()},
                       key=lambda f: ("wqy" not in f.lower(), "sans" not in f.lower(), f))
        if files:
            return Path(files[0])
    for pattern in FONT_GLOBS:
        hits = sorted(glob.glob(pattern, recursive=True))
        if hits:
            return Path(hits[0])
    return None
