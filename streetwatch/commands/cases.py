"""`streetwatch cases list|show`: what the case store holds, for people and for the demo."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from streetwatch.commands.common import SettingsOpt, fail, settings_or_fail


def register(app: typer.Typer) -> None:
    cases = typer.Typer(help="Cases drafted from violations: states, evidence, dispatch references, history.", no_args_is_help=True)
    app.add_typer(cases, name="cases")

    @cases.command("list")
    def list_cases(
        state: Annotated[str | None, typer.Option("--state", help="Only cases in this state (candidate, queued, submitted, ...).")] = None,
        source: Annotated[str | None, typer.Option("--source", help="Only cases from this camera or photo batch.")] = None,
        limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many (oldest first).")] = 100,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
        config: SettingsOpt = None,
    ) -> None:
        """List cases: id, state, type, source, when it opened, dispatch reference and why it waits."""
        from pipelines.cases import CaseState, CaseStore

        if state is not None and state not in {s.value for s in CaseState}:
            fail(f"--state {state!r}: not a case state (states: {', '.join(s.value for s in CaseState)})")
        store = CaseStore(settings_or_fail(config).cases.url)
        found = store.list(state=state, source_id=source, limit=limit)
        if as_json:
            for case in found:
                typer.echo(json.dumps(asdict(case), default=str, ensure_ascii=False))
            return
        if not found:
            typer.echo("no cases")
            return
        from rich.console import Console
        from rich.table import Table

        table = Table("case", "state", "type", "source", "opened (UTC)", "dispatch", "waiting because")
        for c in found:
            opened = f"{c.opened_at:%Y-%m-%d %H:%M:%S}" if c.opened_at else ""
            dispatch = f"{c.dispatch_target}:{c.dispatch_ref}" if c.dispatch_ref else (c.dispatch_target or "")
            table.add_row(c.id, c.state.value, c.violation_type, c.source_id, opened, dispatch, c.reason or "")
        Console().print(table)

    @cases.command("show")
    def show(
        case_id: Annotated[str, typer.Argument(help="Case id (SW<date>-<hex>).")],
        as_json: Annotated[bool, typer.Option("--json", help="Case, history and outbox entries as one JSON object.")] = False,
        config: SettingsOpt = None,
    ) -> None:
        """One case: its facts, evidence reference and boxes, review, dispatch deliveries and state history."""
        from pipelines.cases import CaseNotFound, CaseStore
        from pipelines.cases.vocabulary import OutboxStatus

        store = CaseStore(settings_or_fail(config).cases.url)
        try:
            case = store.get(case_id)
        except CaseNotFound as exc:
            fail(str(exc))
        history = store.history(case_id)
        entries = store.outbox_entries(case_id=case_id)
        if as_json:
            typer.echo(json.dumps({"case": asdict(case), "history": [asdict(h) for h in history],
                                   "outbox": [asdict(e) for e in entries]}, default=str, ensure_ascii=False, indent=2))
            return
        for name, value in asdict(case).items():
            if value not in (None, {}, ""):
                typer.echo(f"{name:16} {json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value}")
        typer.echo("history:")
        for h in history:
            typer.echo(f"  {h.at:%Y-%m-%d %H:%M:%S}  {h.from_state or '-':>16} -> {h.to_state:<16} {h.actor}"
                       + (f"  ({h.reason})" if h.reason else ""))
        for e in entries:
            typer.echo(f"delivery {e.id} to {e.target}: {e.status}, {e.attempts} attempts"
                       + (f", ref {e.remote_ref}" if e.remote_ref else "")
                       + (f", last error: {e.last_error}" if e.last_error and e.status is not OutboxStatus.DELIVERED else ""))
