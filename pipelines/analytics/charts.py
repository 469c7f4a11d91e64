"""Report charts with Matplotlib (object API, no pyplot state) and a font that renders Chinese.

The font is the one `detect.fonts.find_cjk_font` finds, as the demo's posters and the verifier's
synthetic ads use it (fontconfig's list of Chinese fonts, else the usual folders; Debian `fonts-noto-cjk`
gives Noto Sans CJK SC); the report prints which one it used, so a page of boxes is explained at once. The same
figures become the PDF's pages (`PdfPages`, fonts embedded as TrueType so the text stays text)
and inline SVG in the HTML report (text as paths, so no font is needed to view it).
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib import font_manager
from matplotlib.figure import Figure  # figures without pyplot: no global state, no display needed
from matplotlib.ticker import MaxNLocator

from detect import fonts

A4_LANDSCAPE = (11.69, 8.27)
EMPTY = "本期无案件 No cases in this period"
PALETTE = ["#1d3557", "#e63946", "#2a9d8f", "#f4a261", "#457b9d", "#8d6a9f", "#e9c46a", "#6c757d", "#264653", "#a8dadc"]


@dataclass(frozen=True)
class FontChoice:
    name: str
    path: str | None
    cjk: bool

    def describe(self) -> str:
        if self.cjk:
            return f"{self.name} ({self.path})"
        return f"{self.name}: no Chinese font found, Chinese text may show as boxes (install Debian fonts-noto-cjk)"


def pick_font() -> FontChoice:
    """The Chinese font `detect.fonts.find_cjk_font` finds (one finder for the whole product), by the family name
    Matplotlib knows it as; DejaVu Sans, said plainly by `describe`, when there is none."""
    path = fonts.find_cjk_font()
    if path is None:
        return FontChoice("DejaVu Sans", str(font_manager.findfont("DejaVu Sans")), False)
    family = _family(path)
    return FontChoice(family, str(font_manager.findfont(font_manager.FontProperties(family=family))), True)


def _family(path: Path) -> str:
    """The family of a font file for Matplotlib, registering the file when Matplotlib's own scan missed it (a
    folder fontconfig knows and Matplotlib does not). A collection (.ttc) holds one face per region: the
    simplified-Chinese one (`Noto Sans CJK SC`, not the JP face listed first) and not a monospaced one."""
    def faces() -> list[str]:
        return [f.name for f in font_manager.fontManager.ttflist if Path(f.fname) == path]

    if not faces():
        font_manager.fontManager.addfont(str(path))
    names = faces() or [font_manager.FontProperties(fname=str(path)).get_name()]
    return min(names, key=lambda n: (not n.endswith((" SC", " CN")), "Mono" in n, names.index(n)))


@contextmanager
def style(font: FontChoice):
    rc = {"font.family": [font.name, "DejaVu Sans"], "pdf.fonttype": 42, "svg.fonttype": "path",
          "axes.unicode_minus": False, "axes.spines.top": False, "axes.spines.right": False,
          "axes.titlesize": 15, "axes.titleweight": "bold", "font.size": 10,
          "text.parse_math": False}  # labels are the city's text (camera, shop, batch names): `$…$` is text, not a formula
    with matplotlib.rc_context(rc):
        yield


def page(title: str, subtitle: str) -> Figure:
    fig = Figure(figsize=A4_LANDSCAPE)
    fig.suptitle(title, fontsize=18, fontweight="bold", x=0.05, ha="left")
    fig.text(0.05, 0.915, subtitle, fontsize=10, color="#567")
    return fig


def empty(ax, text: str = EMPTY) -> None:
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=14, color="#888", transform=ax.transAxes)


def _whole_numbers(axis) -> None:
    """Ticks at whole numbers: a day's few cases were counted on an axis of 0.25, 0.5 … 1.75 件."""
    axis.set_major_locator(MaxNLocator(integer=True))


def hbars(ax, labels: list[str], values: list[float], title: str, *, previous: list[float] | None = None,
          unit: str = "件 cases", nothing: str = EMPTY, counts: bool = True) -> None:
    """Horizontal bars, largest on top; `previous` draws the previous period as outlined bars beside, with their
    numbers too, and the legend above the bars (at the lower right it covered the bottom type's previous bar).
    `counts`: the values are cases (whole-number ticks), not hours."""
    ax.set_title(title, loc="left")
    if not labels or not any(values) and not (previous and any(previous)):
        empty(ax, nothing)
        return
    n = len(labels)
    y = list(range(n))[::-1]
    height = 0.38 if previous is not None else 0.7
    bars = ax.barh([v + (height / 2 if previous is not None else 0) for v in y], values, height=height,
                   color=PALETTE[0], label="本期 this period")
    ax.bar_label(bars, labels=[f"{v:g}" for v in values], padding=3, fontsize=9)
    if previous is not None:
        before = ax.barh([v - height / 2 for v in y], previous, height=height, color="white", edgecolor=PALETTE[4],
                         hatch="//", label="上期 previous")
        ax.bar_label(before, labels=[f"{v:g}" for v in previous], padding=3, fontsize=9, color=PALETTE[4])
        ax.legend(loc="lower right", bbox_to_anchor=(1, 1), ncols=2, frameon=False)
    ax.set_yticks(y, labels)
    ax.set_xlabel(unit)
    if counts:
        _whole_numbers(ax.xaxis)
    ax.margins(x=0.12)


def stacked_columns(ax, labels: list[str], series: dict[str, list[int]], title: str) -> None:
    ax.set_title(title, loc="left")
    if not labels or not any(sum(v) for v in series.values()):
        empty(ax)
        return
    bottom = [0] * len(labels)
    for i, (name, values) in enumerate(series.items()):
        ax.bar(range(len(labels)), values, bottom=bottom, color=PALETTE[i % len(PALETTE)], label=name, width=0.8)
        bottom = [b + v for b, v in zip(bottom, values)]
    step = max(1, len(labels) // 16)
    ax.set_xticks(range(0, len(labels), step), labels[::step], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("件 cases")
    _whole_numbers(ax.yaxis)
    ax.legend(loc="upper left", frameon=False, fontsize=8, ncols=min(4, len(series)))


def columns(ax, labels: list[str], values: list[float], title: str, xlabel: str) -> None:
    ax.set_title(title, loc="left")
    if not any(values):
        empty(ax)
        return
    bars = ax.bar(range(len(labels)), values, color=PALETTE[2])
    ax.bar_label(bars, labels=[f"{v:g}" if v else "" for v in values], fontsize=8)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("件 cases")
    _whole_numbers(ax.yaxis)


def table(ax, title: str, columns: list[str], rows: list[list], *, max_rows: int = 10, max_chars: int = 28,
          widths: list[float] | None = None) -> None:
    """A small table drawn on the page (the full tables are in the HTML and Excel files). `widths`: each column's
    share of the axes (None: equal shares); a text wider than its column is hidden under the next column's cell.
    A table of more than `max_rows` rows shows its first and says so in its title (前 8 条，共 20 条 top 8 of 20):
    untold, a page of 8 repeat numbers read as the period's all."""
    ax.axis("off")
    shown = f"（前 {max_rows} 条，共 {len(rows)} 条 top {max_rows} of {len(rows)}）" if len(rows) > max_rows else ""
    ax.set_title(title + shown, loc="left", fontsize=12)
    if not rows:
        ax.text(0.0, 0.8, "无 none", color="#888", transform=ax.transAxes)
        return

    def cut(v) -> str:
        text = "" if v is None else (", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"

    t = ax.table(cellText=[[cut(v) for v in r] for r in rows[:max_rows]], colLabels=columns, loc="upper left",
                 cellLoc="left", colLoc="left", colWidths=widths)
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.scale(1, 1.25)
    for (row, _), cell in t.get_celld().items():
        cell.set_edgecolor("#ccd")
        if row == 0:
            cell.set_facecolor("#e8eef6")


def svg(fig: Figure) -> str:
    """The figure as an inline <svg> element."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg"):]
