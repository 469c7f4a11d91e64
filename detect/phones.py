"""Phone numbers and small-ad keywords in OCR text (the evidence a city uses to chase flyposters).

Small ads (小广告/牛皮癣) nearly always carry a phone number, written to dodge filters and read by
OCR with noise: `138 0013 8000`, `138.0013.8000`, `0571-8765 4321`, full-width digits, an `O` for
a `0`. We find runs of digits joined by separators, then take the longest run of whole digit
groups that Google's numbering plan data (the `phonenumbers` package) accepts as a valid number of
the city's region (`CN` by default; `HK`, `GB` ... from settings), or of another country when the
run starts with `+` or that region's country code. A digit group is never split, so an 18-digit ID
number or a price does not yield a phone number by accident.

Numbers come out in one normal form per kind, so the same line written two ways is one entry:
mobile `13800138000`, landline `0571-87654321` (trunk + area code, dash, local number), service
`400-820-8820` (national groups joined by dashes).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from pydantic import Field

from detect.config_io import ConfigModel, load_model

DEFAULT_LEXICON_PATH = Path(__file__).with_name("small_ads.yaml")
DEFAULT_REGION = "CN"
"""ISO 3166 region whose national numbers are read without a country code."""

_SEP = r" \t.\-·•_/()—－"
_RUN = re.compile(rf"\+?\d(?:[{_SEP}]{{0,3}}\d)+")
_OCR_DIGITS = str.maketrans({"O": "0", "o": "0", "〇": "0", "D": "0", "I": "1", "l": "1", "|": "1", "i": "1"})
# OCR look-alikes inside or at the edge of a number-like run (at least 5 real digits around them)
_LOOKALIKE_RUN = re.compile(rf"(?<![A-Za-z])[\dOo〇DIil|](?:[{_SEP}]{{0,2}}[\dOo〇DIil|]){{6,}}(?![A-Za-z])")
_MOBILE = {PhoneNumberType.MOBILE}
_LANDLINE = {PhoneNumberType.FIXED_LINE, PhoneNumberType.FIXED_LINE_OR_MOBILE, PhoneNumberType.VOIP}


@dataclass(frozen=True)
class PhoneNumber:
    number: str  # normalised: 13800138000, 0571-87654321, 400-820-8820
    kind: str  # mobile, landline, service
    e164: str = ""  # +8613800138000: the same line in the international form


def check_region(region: str) -> str:
    """The region code upper-cased, or ValueError naming the accepted form."""
    code = region.upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone region {region!r}: use an ISO 3166 code such as CN, HK, TW, GB")
    return code


def _classify(digits: str, region: str, international: bool) -> PhoneNumber | None:
    candidates = [f"+{digits}"] if international else [digits]
    cc = str(phonenumbers.country_code_for_region(region))
    if not international and digits.startswith(cc) and len(digits) > len(cc) + 6:
        candidates.append(f"+{digits}")
    for raw in candidates:
        try:
            num = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if not phonenumbers.is_valid_number(num):
            continue
        kind_type = phonenumbers.number_type(num)
        national = phonenumbers.format_number(num, PhoneNumberFormat.NATIONAL)
        groups = re.findall(r"\d+", national)
        if kind_type in _MOBILE:
            kind, text = "mobile", "".join(groups)
        elif kind_type in _LANDLINE:
            kind, text = "landline", f"{groups[0]}-{''.join(groups[1:])}" if len(groups) > 1 else groups[0]
        else:
            kind, text = "service", "-".join(groups)
        return PhoneNumber(text, kind, phonenumbers.format_number(num, PhoneNumberFormat.E164))
    return None


def normalise_text(text: str) -> str:
    """Full-width to ASCII (NFKC) and OCR look-alike letters inside number-like runs (O->0, l->1)."""
    text = unicodedata.normalize("NFKC", text)

    def fix(m: re.Match) -> str:
        run = m.group(0)
        return run.translate(_OCR_DIGITS) if sum(c.isdigit() for c in run) >= 5 else run

    return _LOOKALIKE_RUN.sub(fix, text)


def find_phones(text: str, region: str = DEFAULT_REGION) -> list[PhoneNumber]:
    """Valid phone numbers in `text` (see module doc), in order of appearance, without duplicates."""
    region = check_region(region)
    found: list[PhoneNumber] = []
    for run in _RUN.finditer(normalise_text(text)):
        international = run.group(0).startswith("+")
        groups = [g for g in re.split(rf"[{_SEP}+]+", run.group(0)) if g]
        i = 0
        while i < len(groups):
            best, acc = None, ""
            for j in range(i, len(groups)):
                acc += groups[j]
                if len(acc) > 15:
                    break
                if (phone := _classify(acc, region, international and i == 0)) is not None:
                    best = (j, phone)
            if best is None:
                i += 1
                continue
            if best[1].number not in {p.number for p in found}:
                found.append(best[1])
            i = best[0] + 1
    return found


class SmallAdLexicon(ConfigModel):
    """Keywords that mark a text as a small ad (configurable per city: `detect/small_ads.yaml`)."""

    keywords: list[str] = Field(title="Keywords", description="Words typical of small ads (办证, 贷款, 开锁 ...).", min_length=1)
    not_ads: list[str] = Field(
        default_factory=list, title="Not small ads",
        description="Phrases of the street's own signs and furniture that hold a keyword (出租车 on a taxi, 可回收 on a "
                    "sorting bin, 燃气管道 on a gas-pipe marker): a keyword inside one of them does not count.")

    def match(self, text: str) -> list[str]:
        """Keywords present in the text (after full-width folding; spaces between characters ignored), outside
        the `not_ads` phrases."""
        folded = _fold(text)
        for phrase in self.not_ads:
            folded = folded.replace(_fold(phrase), "|")  # a separator: the text around it does not join into a keyword
        return [k for k in self.keywords if k.lower() in folded]


def _fold(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).lower()


def load_lexicon(path: str | Path | None = None) -> SmallAdLexicon:
    return load_model(SmallAdLexicon, path or DEFAULT_LEXICON_PATH)
