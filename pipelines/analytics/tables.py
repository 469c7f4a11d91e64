"""Plain tables (title, columns, rows) and their Excel and CSV files, shared by every output here.

Excel through openpyxl: one worksheet per table, bold frozen header, widths from the content; a text longer than a
cell holds is cut visibly (`pipelines.tables.append_text_row`), and the score case lists go on on rows of their own
(`cell_runs`) so that none is cut.
CSV in UTF-8 with a byte-order mark, which is what makes Excel on a city office PC open Chinese
text correctly by double-click; in both, text is never a formula (`pipelines.tables.formula_like`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detect.config_io import replaced_atomically
from pipelines.tables import EXCEL_CELL_CHARS, append_text_row, csv_cell

if TYPE_CHECKING:  # openpyxl is imported where a workbook is made, as pipelines.tables does: not at serve's start-up
    from openpyxl import Workbook

_BAD_SHEET_CHARS = str.maketrans({c: "_" for c in "[]:*?/\\"})
LIST_SEP = ", "  # how a list (a deduction's case ids) is written into one cell
WIDTH_ROWS = 500  # rows a column's width is measured on
CSV_CHUNK_ROWS = 500  # rows in one piece of a streamed CSV


@dataclass
class Table:
    key: str  # machine name (JSON key)
    title: str  # shown to people: worksheet name, heading
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r)) for r in self.rows]


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)  # Excel has no time zones: local wall-clock times are written
    if isinstance(value, (list, tuple, set)):
        return LIST_SEP.join(map(str, value))
    return value


def cell_runs(values: list[str], limit: int = EXCEL_CELL_CHARS) -> list[list[str]]:
    """`values` in runs, in order, each of which written into one cell fits Excel's limit (one run, empty, for none):
    a year's deduction for a busy squad names thousands of cases, more than one cell holds."""
    runs: list[list[str]] = [[]]
    size = 0
    for v in values:
        extra = len(v) + (len(LIST_SEP) if runs[-1] else 0)
        if runs[-1] and size + extra > limit:
            runs.append([])
            size, extra = 0, len(v)
        runs[-1].append(v)
        size += extra
    return runs


def _sheet_name(t: Table) -> str:
    return t.title.translate(_BAD_SHEET_CHARS)[:31] or t.key[:31]


def _set_widths(sheet, columns: list[str], rows: list[list[Any]]) -> None:
    """Each column as wide as its header and its longest value in `rows` (the first `WIDTH_ROWS`), within 8–60."""
    from openpyxl.utils import get_column_letter

    for i, column in enumerate(columns, start=1):
        width = max([len(str(column))] + [len(str(_cell(r[i - 1]) or "")) for r in rows[:WIDTH_ROWS]])
        sheet.column_dimensions[get_column_letter(i)].width = min(60, max(8, width * 1.6 + 2))


def workbook(tables: list[Table]) -> Workbook:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    book.remove(book.active)
    used: set[str] = set()
    for t in tables:
        name = _sheet_name(t)
        while name in used:
            name = name[:28] + f"~{len(used)}"
        used.add(name)
        sheet = book.create_sheet(name)
        append_text_row(sheet, list(t.columns), font=Font(bold=True))  # item names head the score columns: text
        for row in t.rows:
            append_text_row(sheet, [_cell(v) for v in row])
        sheet.freeze_panes = "A2"
        _set_widths(sheet, t.columns, t.rows)
    return book


def write_xlsx_rows(path: Path, table: Table, rows: Iterable[list[Any]]) -> Path:
    """`table`'s sheet, as `workbook` makes it, with `rows` (not `table.rows`) written one by one in openpyxl's
    write-only mode, which keeps none of them: a whole city's case export in a normal workbook held every cell
    as an object (about 1 kB each) until it was saved. The widths are taken from the first `WIDTH_ROWS` rows."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook(write_only=True)
    sheet = book.create_sheet(_sheet_name(table))
    rows = iter(rows)
    head = [list(r) for r in islice(rows, WIDTH_ROWS)]
    _set_widths(sheet, table.columns, head)  # a write-only sheet takes its widths before its first row
    sheet.freeze_panes = "A2"
    append_text_row(sheet, list(table.columns), row=1, font=Font(bold=True))
    for n, row in enumerate(chain(head, rows), start=2):
        append_text_row(sheet, [_cell(v) for v in row], row=n)
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)
    return path


def write_xlsx(path: Path, tables: list[Table]) -> Path:
    """`tables` as one workbook at `path`, written beside it and renamed onto it (`replaced_atomically`): a score sheet
    or report stopped half way (Ctrl-C, a full disk) leaves no truncated file and an earlier one as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    book = workbook(tables)
    with replaced_atomically(path) as tmp:
        book.save(tmp)
    return path


def xlsx_bytes(tables: list[Table]) -> bytes:
    buffer = io.BytesIO()
    workbook(tables).save(buffer)
    return buffer.getvalue()


def csv_text(table: Table) -> str:
    """UTF-8 CSV text with a BOM (encode as utf-8): `csv_chunks` of the table's rows, joined."""
    return "".join(csv_chunks(table.columns, table.rows))


def csv_chunks(columns: list[str], rows: Iterable[list[Any]]) -> Iterator[str]:
    """The CSV text of `columns` and `rows` in pieces of `CSV_CHUNK_ROWS` rows (the first starting with the BOM that
    makes Excel on a city office PC read Chinese text right), so a long export is streamed as it is read; text a
    spreadsheet would take for a formula (a description, a sheet item's name heading its column) is written as text
    (`pipelines.tables.csv_cell`)."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow([csv_cell(c) for c in columns])
    for n, row in enumerate(rows, start=1):
        writer.writerow(["" if v is None else csv_cell(_cell(v)) for v in row])
        if n % CSV_CHUNK_ROWS == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()
