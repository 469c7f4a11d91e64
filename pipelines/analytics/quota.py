"""Where a quota item learns which phone numbers were cut off (停机), and when.

The quota input is deliberately small: the numbers come from the case store (the phone numbers
OCR read on flyposting cases, `details.phones`), and a *number status source* answers "which of
these numbers were cut off between start and end, and when". Any object with that one method
plugs in (`NumberStatus`); the call-out (追呼) list, when it exists, is one more implementation.
Shipped: `CutoffFile`, a CSV the telecom liaison keeps:

    number,cut_off_at,note
    138 0013 8000,2026-11-03 10:20,电信停机
    0571-8765 4321,2026-11-12,

Numbers are read with the same phone parser as OCR text (`detect.phones`), so `138-0013-8000`
and `13800138000` are one number; times without an offset are local time. The file is read like
the city's other registers (`pipelines.tables.read_rows`): CSV (UTF-8 or GBK) or an Excel workbook, headers
in English or Chinese (号码, 停机时间), empty rows skipped (Excel writes `,,` for rows once used). A number with
no `cut_off_at` is listed but not cut off yet (the liaison writes it down when asking the operator): it is
checked and counts for nothing until its time is filled in. What the file has to check (a row that repeats the
header, skipped; the encoding guessed) is in `CutoffFile.warnings`, which the scores carry (`ScoreTable.warnings`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from detect.config_io import ConfigError
from pipelines.tables import RowError, read_rows, row_message, row_phone, row_time


class NumberStatus(Protocol):
    warnings: Sequence[str]  # what the source had to check (its file's skipped rows), said with the scores

    def cut_off(self, numbers: Iterable[str], start: datetime, end: datetime) -> dict[str, datetime]:
        """Of `numbers` (normalised as on cases), those cut off in [start, end), with the time of cut-off."""
        ...


class CutoffFile:
    """Number status from a CSV or Excel file with columns `number` and `cut_off_at` (others ignored; an empty
    `cut_off_at`: not cut off yet)."""

    COLUMNS = {"number": ("号码", "电话", "phone"), "cut_off_at": ("停机时间",)}

    def __init__(self, path: str | Path, tz: ZoneInfo) -> None:
        self.path = Path(path)
        self.times: dict[str, datetime] = {}
        self.warnings: list[str] = []  # as the registers' import reports: a repeated header row skipped, the encoding
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{self.path}: file not found") from None
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read: {exc}") from None
        name = str(self.path)
        for line, row in read_rows(data, name, self.COLUMNS, required=("number", "cut_off_at"), notes=self.warnings):
            try:
                number = row_phone(row.get("number"), "number")
                when = row.get("cut_off_at")
                if when in (None, ""):  # listed, not cut off yet (the operator has not acted): counts for nothing
                    continue
                at = row_time(when, "cut_off_at")
            except RowError as exc:  # said as the registers say it: Chinese first, naming file, row and column
                raise ConfigError(row_message(name, line, exc, self.COLUMNS)) from None
            at = at if at.tzinfo else at.replace(tzinfo=tz)
            self.times[number] = min(at, self.times.get(number, at))  # the first cut-off counts

    def cut_off(self, numbers: Iterable[str], start: datetime, end: datetime) -> dict[str, datetime]:
        return {n: self.times[n] for n in set(numbers) if n in self.times and start <= self.times[n] < end}
