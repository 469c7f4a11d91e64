"""Rows in and out of CSV and Excel files, for the registers city staff keep in spreadsheets.

City offices hand over and take back lists as Excel or CSV (UTF-8, often with a BOM from Excel, or GBK: a plain
"CSV" saved on a Chinese Windows; an older list from an English Windows in Windows-1252: `SHEET_ENCODINGS`, in
`pipelines.sheet_encodings`).
Headers may be English or Chinese; each reader names its columns with aliases. Rows come back as
dicts keyed by the canonical column name, with the spreadsheet's row number for error messages.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, time, timedelta
from itertools import zip_longest
from pathlib import Path
from typing import Any, TypeVar

import charset_normalizer

from detect.config_io import ConfigError, replaced_atomically
from detect.phones import find_phones
from pipelines.sheet_encodings import SHEET_ENCODING_CHOICES, SHEET_ENCODINGS, listed_encodings

log = logging.getLogger(__name__)

EXCEL_SUFFIXES = {".xlsx", ".xlsm"}
#: The most characters an Excel cell holds; openpyxl cuts longer text there without a word.
EXCEL_CELL_CHARS = 32767
#: How a text cut to fit (an Excel cell, a platform's description field) ends, so whoever reads it sees more was there.
CUT_MARK = "…（已截断 truncated）"
HEADER_SEARCH_ROWS = 10  # how far down a sheet the header row may be (below a title)
#: The most cells `read_rows` takes from an Excel sheet, each row counted as wide as its last cell and one more: a
#: register of 20,000 shops in 30 columns is 620,000. A workbook holds its cells compressed, so a few KiB of file can
#: name billions (one value in column XFD of every row); past this the file is refused, not read into memory.
EXCEL_MAX_CELLS = 5_000_000
#: The most bytes a workbook's parts may expand to, in all: twice the sheet XML of that register of 20,000 shops in 30
#: columns (about 30 MB). The cell count comes too late for one huge cell: deflate packs 200 MiB of one letter into a
#: 200 KiB register, and openpyxl read that cell whole into memory (the server grew by 600 MB, to keep 370 MB of it)
#: before a row was counted, and a 50 MiB upload could expand to 50 GB. The sizes the parts declare are what reading
#: them gives at most (zipfile stops there), so they are checked before anything is read.
EXCEL_MAX_BYTES = 64 * 2**20
#: How text starts that a spreadsheet program (Excel, WPS, LibreOffice) takes for a formula: `=`, `+`, `-`, `@`, and a tab
#: or carriage return, which Excel skips before one of those (OWASP's CSV-injection list).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: What a CSV cell here starts with when its text would otherwise be taken for a formula: spreadsheet programs read a
#: cell after an apostrophe as text, the usual guard (OWASP); `read_rows` leaves it out again.
TEXT_MARK = "'"
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
_KEPT_TEXT = re.compile(r'="((?:[^"]|"")*)"')  # how `csv_cell` writes a `PhoneText`


def cut_marked(text: str, limit: int) -> str:
    """`text` in at most `limit` characters; a cut one ends in `CUT_MARK`, so that whoever reads it sees more was there."""
    return text if len(text) <= limit else text[:limit - len(CUT_MARK)] + CUT_MARK


class PhoneText(str):
    """A phone-number cell (one number or several joined): text of digits that a spreadsheet opening a CSV would read
    as a number, dropping a landline's leading 0 (`0571-87654321`, `02187654321`) and showing a mobile as `1.38E+10`.
    The CSV files write it as `="0571-87654321"`, a formula whose value is that text, which Excel and WPS show as
    it is; an Excel file keeps it as a text cell like any other text."""


def csv_text(data: bytes, name: str, other: str = "") -> str:
    """A CSV file's text: UTF-8, with or without the byte-order mark Excel and WPS write when saving "CSV
    UTF-8". Any other encoding (a plain "CSV" saved on a Chinese Windows is GBK) is a ConfigError naming
    the file; `other` adds another way out to the message. The city's own sheets are read by `read_rows` (`SHEET_ENCODINGS`)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8 text (byte {exc.start}): save it as \"CSV UTF-8\" (Excel, WPS), not GBK/ANSI{other}") from None


#: Codec names (Python's) that stand for one of `SHEET_ENCODINGS` when a sheet's encoding is given (`sheet_encoding`).
_SAME_ENCODING = {"utf-8": "utf-8-sig", "gbk": "gb18030", "gb2312": "gb18030"}
#: The longest cell text a note about a sheet's encoding quotes.
_QUOTED_CHARS = 40


def sheet_encoding(given: str) -> str:
    """The `SHEET_ENCODINGS` key that an encoding named by staff (`--encoding`, the API's form field `encoding`) stands
    for: one of `SHEET_ENCODING_CHOICES` (utf-8, gbk or gb18030, cp1252 or windows-1252) in any spelling Python knows;
    ConfigError naming it otherwise."""
    try:
        codec = codecs.lookup(given).name
    except (LookupError, ValueError):  # ValueError: a NUL in the name (a form field can hold one)
        codec = ""
    codec = _SAME_ENCODING.get(codec, codec)
    if codec not in SHEET_ENCODINGS:
        raise ConfigError(f"编码 {given!r} 不可用，请用 {listed_encodings('、', ' 或 ')} — "
                          f"encoding {given!r}: use {listed_encodings()}")
    return codec


def _csv_sheet(data: bytes, name: str, aliases: dict[str, tuple[str, ...]], required: tuple[str, ...],
               encoding: str | None = None, notes: list[str] | None = None) -> tuple[list[list[str]], list[str | None], int]:
    """A CSV sheet's rows, header and first data row (`_header`), read in the first of `SHEET_ENCODINGS` that reads it
    and finds its header, or in `encoding` alone (a key of them) when given. Valid UTF-8 is taken as UTF-8 (Chinese
    text in GBK practically never is); GB18030 reads most bytes without error, so Windows-1252 text (`Café`) can come
    out of it as Chinese characters where a header should be: Windows-1252 is taken when GB18030 does not read the file
    or finds no header in it. Where both read it, header and all (an English header over `Crème`), `_gb18030_or_cp1252`
    chooses, and `notes` gets a line saying which. Bytes none of them reads as a sheet (UTF-16, a workbook renamed .csv)
    are a ConfigError in Chinese first, naming the encodings tried."""
    encodings = {encoding: SHEET_ENCODINGS[encoding]} if encoding else SHEET_ENCODINGS
    tried: list[str] = []
    unfound: list[str] = []  # the columns missing from the first header read past UTF-8 (GB18030's, else Windows-1252's)
    for codec, label in encodings.items():
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            tried.append(label)
            continue
        if "\x00" in text and codec != "utf-8-sig":  # UTF-16 or a binary file: no text sheet in the others
            tried = list(encodings.values())
            break
        raw = _csv_raw(text, name)
        header, first, missing = _header(raw, name, aliases, required)
        if not missing:
            if codec == "gb18030" and not encoding:
                return _gb18030_or_cp1252(data, (raw, header, first), name, aliases, required, notes)
            return raw, header, first
        if codec == "utf-8-sig":
            raise _missing(name, missing, aliases)
        tried.append(label)
        unfound = unfound or missing
    if unfound:
        raise _missing(name, unfound, aliases, tried)
    raise ConfigError(f"{name}：不是 {'、'.join(tried)} 编码的 CSV 文本，请在 Excel 或 WPS 中另存为“CSV UTF-8”或上传 .xlsx 文件 — "
                      f"{name}: not {', '.join(tried)} text: save it as \"CSV UTF-8\" (Excel, WPS) or upload the .xlsx")


def _csv_raw(text: str, name: str) -> list[list[str]]:
    """The cells of a CSV sheet's `text`, refused past `EXCEL_MAX_CELLS` as a workbook's (`_counted_rows`). Python's csv
    refuses a cell longer than its field limit (131,072 characters), which stopped the whole import with `_csv.Error`
    naming neither file nor row; the text is in memory already, so no cell can be longer than it: the limit is raised
    to its length (the setting is the process's; it only grows), and a cell too long for its column is refused by the
    row's checks, naming them."""
    if len(text) > csv.field_size_limit():
        csv.field_size_limit(len(text))
    return _counted_rows(([csv_value(v) for v in r] for r in csv.reader(io.StringIO(text))), name)[0]


_Row = TypeVar("_Row", bound=Sequence[Any])


def _counted_rows(rows: Iterable[_Row], name: str) -> tuple[list[_Row], int]:
    """`rows` read into a list, and how many cells they hold, each row counted as wide as its last cell and one more;
    a ConfigError past `EXCEL_MAX_CELLS`, before another row is read. A CSV file's too: each of its rows (a line, a
    comma) costs the server hundreds of bytes before it is checked, so 5 MB of one-letter lines made 2.6 million rows
    that took 3.5 GB and 140 s, and the 50 MiB an import may send, ten times that."""
    out: list[_Row] = []
    cells = 0
    for row in rows:
        cells += len(row) + 1
        if cells > EXCEL_MAX_CELLS:
            raise ConfigError(f"{name}: its first sheet holds more than {EXCEL_MAX_CELLS:,} cells by row {len(out) + 1} "
                              "(each row counted as wide as its last cell): keep only the list's own rows and columns "
                              "on the first sheet")
        out.append(row)
    return out, cells


def _gb18030_or_cp1252(data: bytes, as_gb18030: tuple[list[list[str]], list[str | None], int], name: str,
                       aliases: dict[str, tuple[str, ...]], required: tuple[str, ...],
                       notes: list[str] | None) -> tuple[list[list[str]], list[str | None], int]:
    """A sheet GB18030 reads, header found (`as_gb18030`), as `_csv_sheet` returns it: as Windows-1252 where that reads
    it too, header and all, and charset_normalizer, given only those two, takes it for Windows-1252; else as GB18030.
    No rule on the bytes alone tells them apart (an English header over `Crème` or over `王记面馆`), and GB18030 first
    read every such Windows-1252 sheet wrongly; charset_normalizer (its mess and coherence of each reading) read
    234 of 234 such GBK/GB18030 sheets and 1003 of 1006 Windows-1252 ones of a sample right (one to 100 rows of shop
    names; the three it missed one-row, `Côte`, `Général`, `Þór`). Where both read it, `notes` gets
    a line saying which was taken, quoting a cell both ways (the cells line up: no byte of a GB18030 character is a
    comma, quote or line end), and how to have it read the other way."""
    try:
        raw = _csv_raw(data.decode("cp1252"), name)
    except UnicodeDecodeError:
        return as_gb18030
    header, first, missing = _header(raw, name, aliases, required)
    if missing:
        return as_gb18030
    best = charset_normalizer.from_bytes(data, cp_isolation=["gb18030", "cp1252"]).best()
    chosen, other = ("cp1252", "gb18030") if best is not None and best.encoding == "cp1252" else ("gb18030", "cp1252")
    if notes is not None:
        notes.append(_both_read_note(name, chosen, other, as_gb18030[0], raw))
    return (raw, header, first) if chosen == "cp1252" else as_gb18030


def _both_read_note(name: str, chosen: str, other: str, as_gb18030: list[list[str]], as_cp1252: list[list[str]]) -> str:
    """The note on a sheet GB18030 and Windows-1252 both read (`_gb18030_or_cp1252`): which was taken, the first cell
    the two read differently as each, and how to have it read as the `other`: the encoding to give, in words that fit
    wherever the note is shown (the command line, /ui/city, the API's answer)."""
    cell = next(((a, b) for row_a, row_b in zip(as_gb18030, as_cp1252) for a, b in zip(row_a, row_b) if a != b), ("", ""))
    quoted = dict(zip(("gb18030", "cp1252"), (c[:_QUOTED_CHARS] for c in cell)))
    taken, left = SHEET_ENCODINGS[chosen], SHEET_ENCODINGS[other]
    value, label = SHEET_ENCODING_CHOICES[other]
    return (f"{name}：已按 {taken} 编码读取（“{quoted[chosen]}”），但它也可按 {left} 读取（“{quoted[other]}”）；"
            f"若后者才对，请指定编码 {value} 重新导入（命令行 --encoding {value}，/ui/city 页面导入旁的“编码”选 {label}），"
            f"或另存为“CSV UTF-8” — "
            f"{name}: read as {taken} ('{quoted[chosen]}'), but it reads as {left} too ('{quoted[other]}'); "
            f"if that is right, import it again with encoding {value} (--encoding {value} on the command line, "
            f"编码 {label} beside the import on /ui/city, form field encoding={value} in the API), or save it as \"CSV UTF-8\"")


class RowError(ValueError):
    """Why a sheet's row is refused (or imported with a warning), for the city staff who read it on /ui/city: `zh` in Chinese, `column` the canonical
    column it concerns, and the English as it was said before (`str()`: `column: reason`), kept for whoever matches it.
    `row_message` names file, row and column."""

    def __init__(self, column: str, zh: str, en: str):
        super().__init__(en)
        self.column, self.zh = column, zh


def column_zh(column: str, aliases: dict[str, tuple[str, ...]]) -> str:
    """A column as staff name it: its first Chinese header (`polygon` is 图像范围), else its own name."""
    return next((a for a in aliases.get(column, ()) if re.search(r"[\u4e00-\u9fff]", a)), column)


def row_message(name: str, line: int, exc: RowError, aliases: dict[str, tuple[str, ...]]) -> str:
    """A refused row as the import reports say it: Chinese first, naming file, row and column, then the English
    (`shops.csv 第 5 行「图像范围」：… — shops.csv: row 5: polygon: …`)."""
    return f"{name} 第 {line} 行「{column_zh(exc.column, aliases)}」：{exc.zh} — {name}: row {line}: {exc}"


def read_rows(data: bytes, name: str, aliases: dict[str, tuple[str, ...]], required: tuple[str, ...], *,
              encoding: str | None = None, notes: list[str] | None = None) -> list[tuple[int, dict[str, Any]]]:
    """(row number, {column: value}) per non-empty data row of a CSV or Excel file named `name`.

    The header is the first of the top rows that names every `required` column, alone or with the row below it:
    office sheets often put a title (门前三包登记表, merged across the columns) and blank or note lines above it,
    which are skipped, and some head a group of columns with a merged cell (联系方式) over their own names in the
    next row, which is header too. An Excel sheet's merged cells read as their value in every cell they cover
    (`_merged_values`): a shop's name merged down the rows of its frontages names each. Row numbers are the
    spreadsheet's, counted from its first line.
    `aliases` maps each canonical column to the headers that mean it (compared by `header_key`: case, width and
    whitespace aside, a bracketed note after the name too: `商户名称（招牌）` is `商户名称`). Several
    columns meaning one (联系人 and 电话 are both `contact`) are joined, distinct non-empty values
    in file order, so no cell is dropped. A CSV is read in the first of `SHEET_ENCODINGS` in which its header is found,
    or in `encoding` (a name `sheet_encoding` takes; an Excel file has none); `notes` gets a line when GB18030 was taken
    or Windows-1252 where both read it (`_csv_sheet`). Raises ConfigError naming the file when it cannot be read or a
    required column is missing.
    """
    given = sheet_encoding(encoding) if encoding else None  # refused naming it for an Excel file too, which has none
    if Path(name).suffix.lower() not in EXCEL_SUFFIXES:
        raw, header, first = _csv_sheet(data, name, aliases, required, given, notes)
    else:
        raw = _excel(data, name)
        header, first, missing = _header(raw, name, aliases, required)
        if missing:
            raise _missing(name, missing, aliases)
    rows, columns = [], _column_namer(aliases)
    for number, values in enumerate(raw[first:], start=first + 1):
        if _repeats_header(columns(values), header):
            if notes is not None:
                notes.append(f"{name} 第 {number} 行与表头相同，已跳过 — {name}: row {number} repeats the header, skipped")
            continue
        row: dict[str, Any] = {}
        for col, v in zip(header, values):
            if col is None:
                continue
            v, before = _clean(v), row.get(col)
            if before in (None, ""):
                row[col] = v
            elif v not in (None, "") and str(v) != str(before):  # a second column for the same field: keep both
                row[col] = f"{before} {v}"
        if any(v not in (None, "") for v in row.values()):
            rows.append((number, row))
    return rows


def _header(raw: list[Sequence[Any]], name: str, aliases: dict[str, tuple[str, ...]],
            required: tuple[str, ...]) -> tuple[list[str | None], int, list[str]]:
    """The sheet's header as `read_rows` finds it (the canonical column of each cell, None where it names none), the
    index of its first data row, and the `required` columns it lacks; ConfigError when the sheet is empty."""
    if not raw:
        raise ConfigError(f"{name}：文件是空的 — {name}: empty file")
    columns = _column_namer(aliases)
    named = [columns(cells) for cells in raw[:HEADER_SEARCH_ROWS + 1]] + [[]]
    at = next((i for i in range(min(len(raw), HEADER_SEARCH_ROWS))
               if any(named[i]) and set(required) <= set(named[i]) | set(named[i + 1])), 0)
    header, first, top = named[at], at + 1, raw[at]
    while first < len(raw) and _names_a_group(top, raw[first], below := columns(raw[first])):
        # A header over two rows: a group merged across columns (联系方式) above the names of each (联系人, 联系电话);
        # the lower name decides where it gives one, and the row is no shop.
        header = [sub or above for above, sub in zip_longest(header, below)]
        first += 1
    return header, first, [c for c in required if c not in header]


def _column_namer(aliases: dict[str, tuple[str, ...]]) -> Callable[[Sequence[Any]], list[str | None]]:
    """The canonical column each cell of a row names as a header (None where it names none), as `read_rows` reads
    headers: by `header_key`, with or without a bracketed note at its end."""
    lookup = {header_key(alias): canon for canon, names in aliases.items() for alias in (canon, *names)}

    def columns(cells: Sequence[Any]) -> list[str | None]:
        keys = [header_key(h) for h in cells]
        return [lookup.get(k) or lookup.get(_HEADER_NOTE.sub("", k)) for k in keys]
    return columns


def _names_a_group(top: Sequence[Any], cells: Sequence[Any], named: list[str | None]) -> bool:
    """Whether the row under the header row `top` is the header's lower row: each of its cells names a column
    (`named`) or repeats the cell above (merged down both rows), and one names a column under an empty cell or under a
    group's (联系方式 merged across columns: Excel repeats it in each, a CSV leaves the cells after it empty). A shop
    that happens to be called `Shop` or `名称` names a column too, but under the header's own name and beside cells
    that name none, so it stays a shop."""
    above = [header_key(c) for c in top]
    keys = [header_key(c) for c in cells]
    above += [""] * (len(keys) - len(above))
    if any(k and n is None and k != a for k, n, a in zip(keys, named, above)):
        return False

    def under_group(i: int) -> bool:
        return not above[i] or above[i] in above[max(i - 1, 0):i] or above[i + 1:i + 2] in ([above[i]], [""])
    return any(n and keys[i] != above[i] and under_group(i) for i, n in enumerate(named))


def _repeats_header(named: list[str | None], header: list[str | None]) -> bool:
    """Whether a data row, its cells named as headers (`named`), is the header again (a sheet pasted below another):
    every cell names the column it stands in, and every column of the header is named."""
    return any(header) and all(n == h for n, h in zip_longest(named, header))


def _missing(name: str, missing: list[str], aliases: dict[str, tuple[str, ...]], tried: list[str] | None = None) -> ConfigError:
    """The refusal of a sheet whose header lacks `missing`; `tried`: the encodings a CSV was read in without finding it."""
    known = "; ".join(f"{c} ({'/'.join(aliases[c])})" if aliases.get(c) else c for c in missing)
    zh = f"（已尝试 {'、'.join(tried)} 编码）" if tried else ""
    en = f" (tried {', '.join(tried)})" if tried else ""
    return ConfigError(f"{name}：表头缺少列 {'、'.join(column_zh(c, aliases) for c in missing)}{zh} — "
                       f"{name}: header: missing column(s) {known}{en}")


#: A note in brackets after a header's name, as office sheets write them: `商户名称（招牌）`, `图像范围【x,y；…】`.
_HEADER_NOTE = re.compile(r"(?:\([^()]*\)|\[[^\[\]]*\]|【[^【】]*】)$")


def header_key(text: Any) -> str:
    """A header cell as `read_rows` compares it with the aliases: full-width forms as ASCII (NFKC: `（` is `(`), without
    whitespace (a header wrapped over two lines in its cell, `联系 电话`), lower case. `read_rows` also tries it
    without a bracketed note at its end (`_HEADER_NOTE`), so a register's own wording of a known column is not
    taken for a column it does not know and left out."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", str(text if text is not None else ""))).lower()


_EXCEL_EXPONENT = re.compile(r"\d(\.\d+)?[eE]\+\d+")


def excel_number_hint(value: Any, other: str = "") -> str:
    """What to add to 'is not one phone number' when Excel is to blame: a long number shown as a power of ten
    (`1.38001E+10`) is saved so in a CSV, its digits lost; '' otherwise. `other` adds another way out."""
    if not _excel_exponent(value):
        return ""
    return (" (Excel showed the number as a power of ten and saved it so, digits lost: format the column as text "
            f"before saving{other})")


def _excel_exponent(value: Any) -> bool:
    return bool(_EXCEL_EXPONENT.fullmatch(str(value if value is not None else "").strip()))


def row_phone(value: Any, column: str, other: tuple[str, str] = ("", "")) -> str:
    """A sheet cell's phone number as cases store it (`detect.phones`, as OCR text is read), or a `RowError` for
    `row_message` naming `column`, Chinese first, when the cell is not one number; a number Excel saved as a power of
    ten says how to avoid that. `other`: another way out, (Chinese, English), such as using the exported .xlsx."""
    found = find_phones(str(value if value is not None else "").strip())
    if len(found) == 1:
        return found[0].number
    hint_zh = (f"（Excel 把长数字显示成了科学计数法并这样保存，位数已丢失：保存前把该列设为文本{other[0]}）"
               if _excel_exponent(value) else "")
    raise RowError(column, f"{value!r} 不是一个电话号码{hint_zh}",
                   f"{column}: {value!r} is not one phone number{excel_number_hint(value, other[1])}")


_SLASHED_DATE = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?")
_CHINESE_DATE = re.compile(r"(\d{4})年(\d{1,2})月(\d{1,2})日\s*(?:(\d{1,2})(?::|时)(\d{2})分?(?::(\d{2})秒?)?)?")
#: The Excel date numbers `sheet_time` reads as dates: 2000-01-01 to 2099-12-31. A number outside is no time a list
#: here records (`2026` or a phone number in the wrong column), refused rather than read as a day of 1905.
EXCEL_SERIALS = (36526, 73051)
#: How `sheet_time` reads a date, for the messages refusing one.
SHEET_TIME_FORMS = "YYYY-MM-DD[ HH:MM], 2026/11/12 10:20, 2026年11月12日 10:20 or an Excel date"
SHEET_TIME_FORMS_ZH = "2026-11-12 10:20、2026/11/12 10:20、2026年11月12日 10:20 或 Excel 日期"


def sheet_time(value: Any) -> datetime:
    """A date/time cell: an Excel date, ISO text (`2026-11-03 10:20`), the `2026/11/3 10:20` Excel and WPS
    write when they save a CSV on a Chinese-locale PC (a list opened, edited and saved again), `2026年11月3日 10:20`
    (WPS's Chinese date format), or an Excel date number (`46338.4375`: a date cell formatted as General or
    Number, in a workbook or saved so in a CSV) in `EXCEL_SERIALS`. No time zone is added; ValueError when the
    value is none of these (`SHEET_TIME_FORMS` says which they are)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, time())
    text = unicodedata.normalize("NFKC", str(value if value is not None else "")).strip()
    if _PLAIN_NUMBER.fullmatch(text) and EXCEL_SERIALS[0] <= float(text) < EXCEL_SERIALS[1] + 1:
        from openpyxl.utils.datetime import from_excel

        return (from_excel(float(text)) + timedelta(milliseconds=500)).replace(microsecond=0)  # to the second Excel shows
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        m = _SLASHED_DATE.fullmatch(text) or _CHINESE_DATE.fullmatch(text)
        if m is None:
            raise
        return datetime(*(int(g or 0) for g in m.groups()))


def row_time(value: Any, column: str) -> datetime:
    """A sheet cell's date/time (`sheet_time`), or a `RowError` for `row_message` naming `column` and the forms it
    reads, Chinese first."""
    try:
        return sheet_time(value)
    except ValueError:
        raise RowError(column, f"{value!r} 不是日期时间（可写 {SHEET_TIME_FORMS_ZH}）",
                       f"{column}: {value!r} is not a date/time ({SHEET_TIME_FORMS})") from None


def formula_like(text: str) -> bool:
    """Whether a spreadsheet program would take this text for a formula, which runs in whoever opens the file: a
    description, note or OCR'd small ad such as `=HYPERLINK("http://…", "…")` or `@SUM(…)`. Text that is one plain number
    (`-5`, `+3.5` from a text field) is not: it is read as that number, which runs nothing, so it is written as it is
    rather than shown with a mark. The one rule for every CSV and Excel file written here (`csv_cell`, `append_text_row`)."""
    return text.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text)


def csv_cell(value: Any) -> Any:
    """A value as the CSV files here write it: text a spreadsheet would take for a formula (`formula_like`) after
    `TEXT_MARK`, so that it opens as the text it is; a `PhoneText` as `="…"`, so that no digit is lost; numbers (a
    negative amount) and other text as they are."""
    if isinstance(value, PhoneText):
        return '="' + value.replace('"', '""') + '"' if value else ""
    if isinstance(value, str) and formula_like(value):
        return TEXT_MARK + value
    return value


def csv_value(text: str) -> str:
    """A CSV cell's text without what `csv_cell` wrapped it in (the mark before text a spreadsheet would take for a
    formula, a phone number's `="…"`), so that an export read back (edited or not) gives the note or number it was
    written from."""
    if kept := _KEPT_TEXT.fullmatch(text):
        return kept.group(1).replace('""', '"')
    return text[len(TEXT_MARK):] if text.startswith(TEXT_MARK) and formula_like(text[len(TEXT_MARK):]) else text


def _clean(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _excel(data: bytes, name: str) -> list[Sequence[Any]]:
    from openpyxl import load_workbook

    _check_expanded_size(data, name)
    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for a bad file
        raise ConfigError(f"{name}: not a readable Excel workbook: {exc}") from None
    try:
        sheet = book.worksheets[0]
        # Read-only mode pads every row, and the sheet, to the size the file says it has (its <dimension>): one stray
        # value in the sheet's last cell (XFD1048576) made a 5 KB workbook 17 billion cells. The rows as they are.
        sheet.reset_dimensions()
        rows, cells = _counted_rows(sheet.iter_rows(values_only=True), name)
        return _merged_values(sheet, rows, cells, name)
    finally:
        book.close()


def _check_expanded_size(data: bytes, name: str) -> None:
    """Refuse a workbook whose parts expand to more than `EXCEL_MAX_BYTES` (a decompression bomb), unread; one that is
    not a zip is left to openpyxl to refuse, as before."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            expanded = sum(i.file_size for i in archive.infolist())
    except zipfile.BadZipFile:
        return
    if expanded > EXCEL_MAX_BYTES:
        raise ConfigError(f"{name}：解压后 {expanded / 2**20:,.0f} MB，超过 {EXCEL_MAX_BYTES // 2**20} MB 上限，未读取（疑似压缩炸弹） — "
                          f"{name}: its parts expand to {expanded / 2**20:,.0f} MB, more than {EXCEL_MAX_BYTES // 2**20} MB: "
                          "refused unread (a decompression bomb, or far more than a register)")


def _merged_values(sheet, rows: list[Sequence[Any]], cells: int, name: str) -> list[Sequence[Any]]:
    """`rows` with each merged range's value (its top-left cell's) in every cell of it, as the sheet shows it: Excel
    keeps it in the first cell only, so a shop's name merged down its frontage rows left the others nameless, and a
    header merged across two columns named one. Read-only openpyxl gives no merged ranges, so they are read from the
    sheet's XML (its `<mergeCell ref="B6:B7"/>`, streamed). The cells they add count towards `EXCEL_MAX_CELLS`, and so
    do all they cover (a few KiB of ranges can cover the sheet many times over)."""
    from openpyxl.utils.cell import range_boundaries
    from openpyxl.xml.functions import iterparse

    width, covered = max((len(r) for r in rows), default=0), 0
    out: list[list[Any]] | None = None
    with sheet._get_source() as src:  # noqa: SLF001 - the sheet's XML part, as openpyxl's own reader opens it
        for _, element in iterparse(src):
            if not element.tag.endswith("}mergeCell"):
                if not element.tag.endswith("}mergeCells"):
                    element.clear()
                continue
            try:
                left, top, right, bottom = range_boundaries(element.get("ref", ""))
            except (TypeError, ValueError):
                continue  # a range Excel would not have written: the cells read as they are
            out = out if out is not None else [list(r) for r in rows]
            if top > len(out) or left > len(out[top - 1]):
                continue
            value = out[top - 1][left - 1]
            for r in range(top, min(bottom, len(out)) + 1):
                row = out[r - 1]
                end = min(right, width)
                cells += max(end - len(row), 0)
                covered += max(end - left + 1, 0)
                if cells > EXCEL_MAX_CELLS or covered > EXCEL_MAX_CELLS:
                    raise ConfigError(f"{name}: its first sheet's merged cells cover more than {EXCEL_MAX_CELLS:,} cells "
                                      f"by row {r}: keep only the list's own rows and columns on the first sheet")
                row.extend([None] * (end - len(row)))
                for c in range(left, end + 1):
                    row[c - 1] = value
    return rows if out is None else out


def write_csv(path: Path, header: list[str], rows: Iterable[list[Any]]) -> Path:
    """UTF-8 with a BOM, so Excel opens Chinese text correctly; text a spreadsheet would take for a formula is written
    as text (`csv_cell`). The folder is made when missing. Written beside `path` and renamed onto it
    (`replaced_atomically`): a list another system picks up (the call-out list) is never there half written after a
    Ctrl-C or a full disk, and one being read as it is replaced is read whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp, tmp.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([csv_cell(h) for h in header])
        writer.writerows([[csv_cell(_cell(v)) for v in r] for r in rows])
    return path


def write_xlsx(path: Path, sheet: str, header: list[str], rows: Iterable[list[Any]]) -> Path:
    """One sheet of `header` and `rows`, written whole or not at all as `write_csv`."""
    from openpyxl import Workbook

    path.parent.mkdir(parents=True, exist_ok=True)
    book = Workbook()
    ws = book.active
    ws.title = sheet[:31]
    append_text_row(ws, header)
    for r in rows:
        append_text_row(ws, [_cell(v) for v in r])
    with replaced_atomically(path) as tmp:
        book.save(tmp)
    return path


def append_text_row(ws, values: list[Any], *, row: int | None = None, font: Any = None) -> None:
    """`ws.append(values)`, but text stays text: openpyxl writes a string starting with `=` as a formula, and a
    case description, shop name or note such as `=HYPERLINK("http://…", "…")` would run in whoever opens the file;
    text that `formula_like` finds is stored as a text cell (the CSV files mark it instead: `csv_cell`).
    Text longer than an Excel cell holds, which openpyxl would cut without a word, is cut here ending in `CUT_MARK`
    and logged naming the sheet, row and column (the CSV and JSON outputs keep it whole). Control characters no
    Excel file may hold (a BEL or an ESC in OCR'd text or a pasted note), on which openpyxl stops the whole export
    with IllegalCharacterError, are left out. The cells are made before they are appended, as a write-only sheet
    (which keeps no cell to change afterwards) needs, so `row`, the row's number, is given for one (it counts none);
    `font` (a header's bold) is each cell's."""
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.utils import get_column_letter

    cleaned = [ILLEGAL_CHARACTERS_RE.sub("", v) if isinstance(v, str) else v for v in values]
    cut = [i for i, v in enumerate(cleaned) if isinstance(v, str) and len(v) > EXCEL_CELL_CHARS]
    for i in cut:
        cleaned[i] = cut_marked(cleaned[i], EXCEL_CELL_CHARS)
    cells: list[Any] = []
    for value in cleaned:
        text = isinstance(value, str) and formula_like(value)
        if not text and font is None:
            cells.append(value)
            continue
        cell = WriteOnlyCell(ws, value)
        if text:
            cell.data_type = "s"
        if font is not None:
            cell.font = font
        cells.append(cell)
    ws.append(cells)
    if cut:
        log.warning("%s: row %d, column %s: text longer than the %d characters an Excel cell holds, cut and marked %r",
                    ws.title, row or ws.max_row, ", ".join(get_column_letter(i + 1) for i in cut),
                    EXCEL_CELL_CHARS, CUT_MARK)


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    if isinstance(value, date):
        return value.isoformat()
    return value
