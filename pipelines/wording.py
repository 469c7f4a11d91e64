"""English count phrases for the summaries commands print: "1 photo", "2 photos", never "1 photos".

One rule for every summary line (the CLI's and a run's progress note), rather than an `'' if n == 1 else 's'`
at each site, which some lines forgot. Chinese text needs none: 张, 件 do not change with the count.
"""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and `noun` agreeing with it: `plural` (default `noun` + "s") unless `n` is exactly 1.

    `noun` may carry words before it ("candidate case"); give `plural` where "s" is not the English
    plural ("box", "boxes")."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
