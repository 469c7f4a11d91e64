"""Free text people type (a description, a note, a shop's name) that the case store keeps: what it may hold.

PostgreSQL refuses NUL in text and in JSON, so one stray byte from a paste turned a save into a 500 there (SQLite
took it); other control characters are no text a page can show or a platform take. A field of one line (an
address, a name) takes no line break or tab either: it goes into sheets and platform payloads one cell, one field,
one line. Checked once here, for the API's bodies and the registers' models alike (`OneLine`, `Lines` in a pydantic
model: a refusal names the field, Chinese first); an import folds a cell's line breaks instead (`fold_lines`).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

LINE_BREAKS = frozenset("\n\r\t")  # text in a field of several lines (a description, a note)


def control_character(text: str, *, lines: bool = False) -> str | None:
    """The first control character of `text` (C0 or DEL) as `U+0000`, or None; `lines`: line breaks and tabs are text."""
    for ch in text:
        if (ord(ch) < 32 or ord(ch) == 127) and not (lines and ch in LINE_BREAKS):
            return f"U+{ord(ch):04X}"
    return None


def _one_line(text: str) -> str:
    if (found := control_character(text)) is not None:
        raise PydanticCustomError("control_character", "含控制字符（换行、制表符、NUL 等） — the text has a control character "
                                  "({found}): give one line of text", {"found": found})
    return text


def _lines(text: str) -> str:
    if (found := control_character(text, lines=True)) is not None:
        raise PydanticCustomError("control_character", "含控制字符（NUL 等） — the text has a control character ({found}) "
                                  "that is no text (line breaks and tabs are allowed)", {"found": found})
    return text


_BREAKS = re.compile(r"[ \u3000]*[\r\n\t]+[ \u3000\r\n\t]*")


def fold_lines(text: str) -> str:
    """`text` as one line: each run of line breaks and tabs (with the spaces around it) one space. A sheet's cell
    typed with Alt+Enter (a shop's name over two lines of its sign) is one line of text, and a field of one line
    (`OneLine`) refuses a line break: an import folds it, and says so, rather than refuse the row."""
    return _BREAKS.sub(" ", text).strip()


OneLine = Annotated[str, AfterValidator(_one_line)]
"""A string of one line: no control character (line break, tab, NUL ...)."""
Lines = Annotated[str, AfterValidator(_lines)]
"""A string of lines: line breaks and tabs allowed, no other control character (NUL ...)."""
