"""Readable output of a result record: the Markdown table, and the comparison with an earlier record.

A comparison pairs variants by suite and key and reports new/old ratios of throughput and median
latency. A change beyond the noise threshold in the slow direction, an accuracy drop beyond the
accuracy tolerance, or a variant that used to run and no longer does, is a regression. Records
from different machines or library versions are compared all the same, with the differences
listed first, because that is often the point (old GPU vs new GPU).
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.record import BenchRecord, VariantResult
from pipelines.wording import counted

#: Environment fields whose difference is printed above a comparison.
_ENV_FIELDS = ("cpu", "cpu_count", "gpu", "nvidia_driver", "cuda", "python")
#: Options that change what a variant key measures.
_CONFIG_FIELDS = ("input", "conf", "iou", "threads", "torch_compile", "device_preprocess")


def markdown(record: BenchRecord) -> str:
    """One table per suite (measured variants), then skipped/failed variants with their reasons."""
    env = record.environment
    lines = [
        f"# streetwatch bench — {record.created[:10]}",
        "",
        f"- machine: {env.get('cpu')} ({env.get('cpu_count')} cores)"
        + (f", GPU {env['gpu']} (driver {env.get('nvidia_driver')}, CUDA {env.get('cuda')})" if env.get("gpu") else ", no GPU"),
        f"- load average (1/5/15 min) at start {env.get('load_average_at_start')}, at end {env.get('load_average')}",
        f"- model: {record.model.id} (`{record.model.file}`, sha256 {record.model.sha256[:16]}…)",
        f"- images: {len(record.images)} real photos; " + _timing_note(record.config),
    ]
    if record.command:
        lines.append(f"- command: `{record.command}`")
    lines.append("")
    for name, suite in record.suites.items():
        lines.append(f"## {name}")
        lines.append("")
        if suite.status != "ok":
            lines += [f"{suite.status}: {suite.reason}", ""]
            continue
        ran = [v for v in suite.results if v.status == "ok"]
        if ran:
            lines += _variant_table(ran)
        if ran and name == "model":
            lines += ["", "recall@.5 / prec@.5: agreement with the fp32 CPU variant of the same backend and image size "
                      "(same class, IoU 0.5); outside model: share of the time in letterbox and decoding/NMS."]
        reasons: dict[tuple[str, str | None], list[str]] = {}
        for v in suite.results:
            if v.status != "ok":
                reasons.setdefault((v.status, v.reason), []).append(f"`{v.key}`")
        if reasons:
            lines += ["", "Not measured:", ""]
            lines += [f"- {status}: {reason}: {', '.join(keys)}" for (status, reason), keys in reasons.items()]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _timing_note(config: dict) -> str:
    how = f"{config['count']} timed calls" if config.get("count") else f"{config.get('duration_s')} s"
    return f"{how} per variant after {config.get('warmup')} warm-up calls, input {config.get('input')}"


def _variant_table(rows: list[VariantResult]) -> list[str]:
    params = list(dict.fromkeys(k for v in rows for k in v.params if k != "input"))
    head = params + ["p50 ms/call", "p90 ms", "p99 ms", "throughput", "outside model", "recall@.5", "prec@.5", "flags"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in rows:
        lat, acc = v.latency_ms, v.accuracy
        cells = [str(v.params.get(p, "")) for p in params] + [
            f"{lat.p50:.1f}" if lat else "-",
            f"{lat.p90:.1f}" if lat else "-",
            f"{lat.p99:.1f}" if lat else "-",
            f"{v.throughput:.1f} {v.unit}" if v.throughput is not None else "-",
            f"{v.outside_model_fraction:.0%}" if v.outside_model_fraction is not None else "-",
            f"{acc.recall:.3f}" if acc else "-",
            f"{acc.precision:.3f}" if acc else "-",
            ", ".join(v.flags) or "",
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


@dataclass
class Change:
    """One variant of the new record against the same variant of the old one."""

    suite: str
    key: str
    verdict: str  # regression | improvement | same | new | gone | not measured
    throughput_ratio: float | None = None
    p50_ratio: float | None = None
    recall_delta: float | None = None
    note: str = ""


def compare(new: BenchRecord, old: BenchRecord, threshold: float = 0.10, accuracy_tolerance: float = 0.02) -> list[Change]:
    """Pair variants by (suite, key); see the module doc for what counts as a regression."""
    old_by_key = {(v.suite, v.key): v for v in old.variants()}
    changes = []
    for v in new.variants():
        o = old_by_key.pop((v.suite, v.key), None)
        if o is None:
            changes.append(Change(v.suite, v.key, "new" if v.status == "ok" else "not measured", note=v.reason or ""))
        elif v.status != "ok":
            verdict = "regression" if o.status == "ok" else "not measured"
            changes.append(Change(v.suite, v.key, verdict, note=f"now {v.status}: {v.reason}"))
        elif o.status != "ok":
            changes.append(Change(v.suite, v.key, "new", note=f"was {o.status}: {o.reason}"))
        else:
            changes.append(_measured_change(v, o, threshold, accuracy_tolerance))
    changes += [Change(s, k, "gone", note="in the old record only") for (s, k), o in old_by_key.items() if o.status == "ok"]
    return changes


def _measured_change(v: VariantResult, o: VariantResult, threshold: float, tolerance: float) -> Change:
    c = Change(v.suite, v.key, "same")
    if v.throughput and o.throughput:
        c.throughput_ratio = round(v.throughput / o.throughput, 3)
    if v.latency_ms and o.latency_ms and o.latency_ms.p50 > 0:
        c.p50_ratio = round(v.latency_ms.p50 / o.latency_ms.p50, 3)
    if v.accuracy and o.accuracy:
        c.recall_delta = round(v.accuracy.recall - o.accuracy.recall, 4)
    slower = (c.throughput_ratio is not None and c.throughput_ratio < 1 - threshold) or (
        c.p50_ratio is not None and c.p50_ratio > 1 + threshold)
    faster = (c.throughput_ratio is not None and c.throughput_ratio > 1 + threshold) or (
        c.p50_ratio is not None and c.p50_ratio < 1 - threshold)
    notes = []
    if slower:
        notes.append(f"slower beyond {threshold:.0%}")
    if c.recall_delta is not None and c.recall_delta < -tolerance:
        notes.append(f"recall down {-c.recall_delta:.3f}")
    new_flags = sorted(set(v.flags) - set(o.flags))
    if new_flags:
        notes.append("new flags: " + ", ".join(new_flags))
    if notes:
        c.verdict = "regression"
    elif faster:
        c.verdict = "improvement"
    c.note = "; ".join(notes)
    return c


def environment_differences(new: BenchRecord, old: BenchRecord) -> list[str]:
    """What differs besides the code: machine, libraries, model, options that change a key's meaning, images."""
    diffs = [f"{k}: {old.environment.get(k)} -> {new.environment.get(k)}"
             for k in _ENV_FIELDS if old.environment.get(k) != new.environment.get(k)]
    ov, nv = old.environment.get("versions", {}), new.environment.get("versions", {})
    diffs += [f"{k}: {ov.get(k)} -> {nv.get(k)}" for k in sorted(set(ov) | set(nv)) if ov.get(k) != nv.get(k)]
    if old.model.sha256 != new.model.sha256:
        diffs.append(f"model: {old.model.file} {old.model.sha256[:12]} -> {new.model.file} {new.model.sha256[:12]}")
    diffs += [f"config {k}: {old.config.get(k)} -> {new.config.get(k)}"
              for k in _CONFIG_FIELDS if old.config.get(k) != new.config.get(k)]
    if [i.sha256 for i in old.images] != [i.sha256 for i in new.images]:
        diffs.append(f"images: a different set ({len(old.images)} -> {len(new.images)} photos)")
    return diffs


def compare_markdown(changes: list[Change], env_diffs: list[str], threshold: float) -> str:
    lines = [f"## Comparison (noise threshold {threshold:.0%})", ""]
    if env_diffs:
        lines += ["Differences besides the code (read the ratios with these in mind):", ""] + [f"- {d}" for d in env_diffs] + [""]
    lines += ["| suite | variant | verdict | throughput new/old | p50 new/old | recall change | note |",
              "|---|---|---|---|---|---|---|"]
    for c in changes:
        lines.append(f"| {c.suite} | `{c.key}` | {c.verdict} | {_ratio(c.throughput_ratio)} | {_ratio(c.p50_ratio)} | "
                     f"{'-' if c.recall_delta is None else f'{c.recall_delta:+.3f}'} | {c.note} |")
    regressions = sum(c.verdict == "regression" for c in changes)
    lines += ["", f"{counted(regressions, 'regression')}."]
    return "\n".join(lines) + "\n"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}×"
