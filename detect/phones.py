"""Phone numbers and small-ad keywords in OCR text (the evidence a city uses to chase flyposters).

Small ads (小广告/牛皮癣) nearly always carry a phone number, written to dodge filters and read by
OCR with noise: `138 0013 8000`, `138.0013.8000`, `0571-8765 4321`, full-width digits, an `O` for
a `0`. We find runs of digits joined by separators, then take the longest run of whole digit
groups that forms a mainland number: mobile (1[3-9] + 9 digits, optional +86), landline with area
code (010/02x + 8 digits, 0xxx + 7-8 digits) or a 400/800 service number. A digit group is never
split, so an 18-digit ID number or a price does not yield a phone number by accident.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from detect.config_io import ConfigModel, load_model

DEFAULT_LEXICON_PATH = Path(__file__).with_name("small_ads.yaml")

_SEP = r" \t.\-·•_/()—－"
_RUN = re.compile(rf"\+?\d(?:[{_SEP}]{{0,3}}\d)+")
_OCR_DIGITS = str.maketrans({"O": "0", "o": "0", "〇": "0", "I": "1", "l": "1", "|": "1"})
_LOOKALIKE = re.compile(r"(?<=\d)[Oo〇Il|]+(?=\d)")


@dataclass(frozen=True)
class PhoneNumber:
    number: str  # normalised: 13800138000, 0571-87654321, 400-123-4567
    kind: str  # mobile, landline, service


def _classify(digits: str) -> PhoneNumber | None:
    if len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    if re.fullmatch(r"1[3-9]\d{9}", digits):
        return PhoneNumber(digits, "mobile")
    if re.fullmatch(r"(400|800)\d{7}", digits):
        return PhoneNumber(f"{digits[:3]}-{digits[3:6]}-{digits[6:]}", "service")
    if re.fullmatch(r"0(10|2\d)\d{8}", digits):
        return PhoneNumber(f"{digits[:3]}-{digits[3:]}", "landline")
    if re.fullmatch(r"0[3-9]\d{2}\d{7,8}", digits):
        return PhoneNumber(f"{digits[:4]}-{digits[4:]}", "landline")
    return None


def normalise_text(text: str) -> str:
    """Full-width to ASCII (NFKC) and OCR look-alikes between digits (O->0, l->1)."""
    text = unicodedata.normalize("NFKC", text)
    return _LOOKALIKE.sub(lambda m: m.group(0).translate(_OCR_DIGITS), text)


def find_phones(text: str) -> list[PhoneNumber]:
    """Mainland phone numbers in `text`, in order of appearance, without duplicates."""
    found: list[PhoneNumber] = []
    for run in _RUN.finditer(normalise_text(text)):
        groups = [g for g in re.split(rf"[{_SEP}+]+", run.group(0)) if g]
        i = 0
        while i < len(groups):
            best, acc = None, ""
            for j in range(i, len(groups)):
                acc += groups[j]
                if len(acc) > 13:
                    break
                if (phone := _classify(acc)) is not None:
                    best = (j, phone)
            if best is None:
                i += 1
                continue
            if best[1] not in found:
                found.append(best[1])
            i = best[0] + 1
    return found


class SmallAdLexicon(ConfigModel):
    """Keywords that mark a text as a small ad (configurable per city: `detect/small_ads.yaml`)."""

    keywords: list[str] = Field(title="Keywords", description="Words typical of small ads (办证, 贷款, 开锁 ...).", min_length=1)

    def match(self, text: str) -> list[str]:
        """Keywords present in the text (after full-width folding; spaces between characters ignored)."""
        folded = re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).lower()
        return [k for k in self.keywords if k.lower() in folded]


def load_lexicon(path: str | Path | None = None) -> SmallAdLexicon:
    return load_model(SmallAdLexicon, path or DEFAULT_LEXICON_PATH)
