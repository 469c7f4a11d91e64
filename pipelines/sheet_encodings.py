"""The encodings a city office's CSV sheet is read in, and how staff name them, with no import: the CLI's command
modules import pipelines lazily, yet their `--encoding` help must list the very values `pipelines.tables` takes
(it imports these from here)."""

from __future__ import annotations

#: The encodings a city office's CSV sheet is read in, in this order (`pipelines.tables.read_rows`), with the names its
#: messages give: UTF-8 (with or without the byte-order mark Excel writes for "CSV UTF-8"); GB18030, a superset of the
#: GBK that Excel and WPS write for a plain "CSV" on a Chinese Windows, the office's default; Windows-1252, what they
#: write on an English or Western European Windows (an older list with é or £).
SHEET_ENCODINGS = {"utf-8-sig": "UTF-8", "gb18030": "GB18030 (GBK)", "cp1252": "Windows-1252"}

#: How staff name each of `SHEET_ENCODINGS` when they give a sheet's encoding, the one list of them: the value (the
#: `--encoding` option, the API imports' form field `encoding`) and its label in /ui/city's select beside each import.
SHEET_ENCODING_CHOICES = {"utf-8-sig": ("utf-8", "UTF-8"), "gb18030": ("gbk", "GBK"), "cp1252": ("cp1252", "cp1252")}


def listed_encodings(sep: str = ", ", last: str = " or ") -> str:
    """The values of `SHEET_ENCODING_CHOICES` as a sentence lists them: `utf-8, gbk or cp1252` (`、` and ` 或 ` in
    Chinese), for the `--encoding` help and the error naming an encoding that is none of them."""
    *others, final = (value for value, _ in SHEET_ENCODING_CHOICES.values())
    return f"{sep.join(others)}{last}{final}" if others else final
