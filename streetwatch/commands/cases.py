"""`streetwatch cases list|show|export|backup|copy|fill-boxes|prune-evidence`: what the case store holds, for people, the
demo and spreadsheets, a copy of it to restore from, the whole store moved into another database (SQLite to PostgreSQL),
the evidence boxes the release before left out written once, and the rejected cases' evidence removed after its
retention period."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from pipelines.wording import counted  # no import of its own
from streetwatch.commands.common import (SettingsOpt, existing_store_or_fail, fail, print_error, print_warning,
                                         require_case_store, settings_or_fail, writable_or_fail)


#: `cases prune-evidence` with the retention off: what is kept, and the setting that turns it on.
RETENTION_OFF = ("rejected cases' evidence retention is off (cases.rejected_evidence_keep_days is 0: kept for ever): "
                 "nothing removed; to remove it N days after the rejection set cases.rejected_evidence_keep_days: N in "
                 "the settings file (we suggest 180), running streetwatch data export-reviews first")


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
        from pipelines.cases import CaseState

        if state is not None and state not in {s.value for s in CaseState}:
            fail(f"--state {state!r}: not a case state (states: {', '.join(s.value for s in CaseState)})")
        store = existing_store_or_fail(settings_or_fail(config).cases.url)
        found = store.list(state=state, source_id=source, limit=limit)
        if as_json:
            for case in found:
                typer.echo(json.dumps(asdict(case), default=str, ensure_ascii=False))
            return
        if not found:
            typer.echo("no cases")
            return
        from rich.console import Console
        from rich.table import Column, Table

        # the id whole, whatever the terminal's width: `cases show`, `dispatch requeue` and the review page take it, and
        # rich shrank every column alike (`SW20261…` beside a long reason, at 100 and 120 columns)
        whole = Column("case", no_wrap=True, min_width=max(len(c.id) for c in found))
        table = Table(whole, "state", "type", "source", "opened (UTC)", "dispatch", "waiting because")
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
        from pipelines.cases import CaseNotFound
        from pipelines.cases.store import evidence_removed
        from pipelines.cases.vocabulary import OutboxStatus

        store = existing_store_or_fail(settings_or_fail(config).cases.url)
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
            if name == "evidence_digest" and case.evidence_removed_at is not None:  # not only inside details
                typer.echo(f"{'evidence_removed':16} {evidence_removed(case)}")
        typer.echo("history:")
        for h in history:
            typer.echo(f"  {h.at:%Y-%m-%d %H:%M:%S}  {h.from_state or '-':>16} -> {h.to_state:<16} {h.actor}"
                       + (f"  ({h.reason})" if h.reason else ""))
        for e in entries:
            typer.echo(f"delivery {e.id} to {e.target}: {e.status}, {counted(e.attempts, 'attempt')}"
                       + (f", ref {e.remote_ref}" if e.remote_ref else "")
                       + (f", last error: {e.last_error}" if e.last_error and e.status is not OutboxStatus.DELIVERED else ""))

    @cases.command("backup")
    def backup(
        out: Annotated[Path, typer.Argument(help="File to write: the SQLite copy (cases-2026-12-06.db), or pg_dump's archive for PostgreSQL.")],
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
        config: SettingsOpt = None,
    ) -> None:
        """Back the case store up while the service runs: SQLite's online backup (never a file copy of cases.db, which
        misses what its -wal file holds), PostgreSQL's pg_dump -Fc; restore: docs/cases-and-dispatch.md."""
        import shutil

        from pipelines.cases import CaseStore
        from pipelines.cases.backup import BackupError, backup_sqlite, libpq_url, pg_dump

        url = settings_or_fail(config).cases.url
        writable_or_fail(out, "OUT", overwrite=overwrite, example="cases-backup.db")
        if not out.parent.is_dir():  # not made here: on an unmounted backup disk it would land on the store's own disk
            fail(f"OUT {out}: folder {out.parent} does not exist (a backup disk not mounted?); make it first, best on "
                 f"another disk than the store")
        try:
            if url.startswith("postgresql"):
                if (exe := shutil.which("pg_dump")) is None:
                    fail(f"pg_dump (PostgreSQL's client tools) is not on PATH: run it where they are installed, as "
                         f"pg_dump -Fc --file {out} '{libpq_url(url)[0]}' (the password from $PGPASSWORD or ~/.pgpass)")
                pg_dump(exe, url, out)
                typer.echo(f"wrote {out} (pg_dump -Fc of {libpq_url(url)[0]}; restore with pg_restore)")
                return
            require_case_store(url)
            store = CaseStore(url, migrate_schema=False)
            try:
                count = backup_sqlite(store, out)
            finally:
                store.close()
        except BackupError as exc:
            fail(str(exc))
        typer.echo(f"wrote {out}: {counted(count, 'case')}")

    @cases.command("copy")
    def copy(
        source: Annotated[str, typer.Argument(help="The store to copy: its URL (sqlite:///cases.db) or a SQLite file's path; at this release's revision.")],
        target: Annotated[str, typer.Argument(help="The database to copy it into, empty: postgresql+psycopg://user@host/db, a sqlite:/// URL or a path.")],
    ) -> None:
        """Copy a case store whole into an empty database, e.g. a SQLite pilot's cases.db into PostgreSQL: every table,
        in one transaction on TARGET (built by the store's own migrations), row counts checked; stop everything that
        writes SOURCE first (docs/cases-and-dispatch.md)."""
        from sqlalchemy.exc import ArgumentError

        from pipelines.cases.transfer import CopyRefused, copy_store, shown, store_url

        urls = []
        for name, given in (("SOURCE", source), ("TARGET", target)):
            try:
                urls.append(store_url(given))
            except ArgumentError as exc:
                fail(f"{name} {given!r}: not a store URL nor a SQLite path ({exc})")
        reported: dict[str, int] = {}

        def progress(table: str, done: int, total: int) -> None:
            """A line per table, and every 10 batches within a long one, on stderr (stdout keeps the summary)."""
            if done == total or done - reported.get(table, 0) >= 10_000:
                reported[table] = done
                typer.echo(f"  {table}: {done}/{total} rows", err=True)

        try:
            summary = copy_store(*urls, progress=progress)
        except CopyRefused as exc:
            fail(str(exc))
        typer.echo(f"copied {shown(urls[0])} to {shown(urls[1])}: {counted(summary.tables, 'table')}, {counted(summary.rows, 'row')} "
                   f"({counted(summary.counts['cases'], 'case')})")

    @cases.command("export")
    def export(
        out: Annotated[Path | None, typer.Option("--out", help="File to write: .csv or .xlsx (default: CSV on standard output).")] = None,
        vtype: Annotated[list[str] | None, typer.Option("--type", help="Violation type id (repeat for several).")] = None,
        state: Annotated[list[str] | None, typer.Option("--state", help="Case state (repeat for several).")] = None,
        period: Annotated[str | None, typer.Option("--period", help="Opened in 2026-11, 2026-Q4, 2026, 2026-W45 or 2026-11-03 (local time).")] = None,
        since: Annotated[str | None, typer.Option("--since", help="Opened on or after this local day, YYYY-MM-DD (within --period if given too).")] = None,
        grid: Annotated[list[str] | None, typer.Option("--grid", help="Grid cell code (repeat for several).")] = None,
        street: Annotated[list[str] | None, typer.Option("--street", help="Street (街道) from the grid file (repeat for several).")] = None,
        camera: Annotated[list[str] | None, typer.Option("--camera", help="Camera id or photo batch id (repeat for several).")] = None,
        source: Annotated[str | None, typer.Option("--source", help="camera or photo.")] = None,
        reviewed: Annotated[bool | None, typer.Option("--reviewed/--unreviewed", help="Only cases with / without a review decision.")] = None,
        severity: Annotated[list[str] | None, typer.Option("--severity", help="general (一般), major (较重) or serious (严重) (repeat for several).")] = None,
        config: SettingsOpt = None,
    ) -> None:
        """Export cases with filters as CSV (UTF-8, opens in Excel) or Excel; times in the analytics time zone."""
        from zoneinfo import ZoneInfo

        from detect.config_io import ConfigError
        from detect.taxonomy import load_taxonomy
        from pipelines.analytics.casedata import iter_cases
        from pipelines.analytics.export import COLUMNS, FilterError, case_filter, export_rows, write_export
        from pipelines.analytics.places import load_places
        from pipelines.analytics.tables import csv_chunks

        if out is not None and out.suffix.lower() not in (".csv", ".xlsx"):
            fail(f"--out {out}: name a .csv or .xlsx file")
        settings = settings_or_fail(config)
        tz, taxonomy = ZoneInfo(settings.analytics.timezone), load_taxonomy()
        try:
            places = load_places(settings.analytics, taxonomy)
            flt = case_filter(taxonomy, tz, types=vtype or [], states=state or [], period=period, since=since,
                              grid_cells=grid or [], streets=street or [], cameras=camera or [], source=source, reviewed=reviewed,
                              severities=severity or [], known_streets=places.known_units("street"))
        except FilterError as exc:
            fail(f"--{exc}")
        except ConfigError as exc:
            fail(str(exc))
        for cell in grid or []:  # a code mistyped exported a file of headers alone, saying nothing
            if places.cells and cell not in places.cells:
                print_warning(f"--grid {cell!r}: no cell of the grid file (analytics.grid) has this code; only cases "
                              "filed under it are exported")
        store = existing_store_or_fail(settings.cases.url)  # never an empty one, whose export reads as "no cases"
        try:  # read a page at a time and written as read, as GET /api/v1/exports/cases streams it
            rows = export_rows(iter_cases(store.engine, places, flt), taxonomy, tz)
            if out is None:
                for n, chunk in enumerate(csv_chunks(COLUMNS, rows)):
                    typer.echo(chunk if n else chunk.lstrip("\ufeff"), nl=False)
                return
            written = write_export(out, rows)
        finally:
            store.close()
        typer.echo(f"wrote {counted(written, 'case')} to {out}")

    @cases.command("fill-boxes")
    def fill_boxes(config: SettingsOpt = None) -> None:
        """Once after upgrading from the release before: write the evidence boxes of the cases it stored without them
        (their flyposting numbers had no photo on the call-out list), from each case's verified bundle. Run again, it
        fills nothing; exits 1 when a case's evidence could not be read or verified (listed on stderr)."""
        from detect.evidence.config import EvidenceKeyError, load_hmac_key, load_previous_hmac_keys
        from pipelines.cases.fill import fill_boxes as fill
        from pipelines.evidence_store import StorageError, open_evidence_store

        settings = settings_or_fail(config)
        try:
            keys = [load_hmac_key(settings.evidence), *load_previous_hmac_keys(settings.evidence)]
            evidence = open_evidence_store(settings.evidence_store)
        except (EvidenceKeyError, StorageError) as exc:
            fail(str(exc))
        store = existing_store_or_fail(settings.cases.url)

        def progress(done: int, total: int) -> None:
            """A line every 100 cases and at the last, on stderr (stdout keeps the summary)."""
            if done == total or done % 100 == 0:
                typer.echo(f"  {done}/{total} cases without boxes checked", err=True)

        try:
            filled = fill(store, evidence, keys, progress)
        finally:
            store.close()
        for case_id, why in filled.removed.items():
            print_warning(f"case {case_id}: {why}")
        for case_id, why in {**filled.missing, **filled.refused}.items():
            print_error(f"case {case_id}: {why}")
        typer.echo(filled.summary())
        if filled.missing or filled.refused:
            raise typer.Exit(1)

    @cases.command("prune-evidence")
    def prune_evidence(
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be removed; remove nothing.")] = False,
        config: SettingsOpt = None,
    ) -> None:
        """Remove the evidence of cases rejected more than cases.rejected_evidence_keep_days ago (serve does it hourly),
        and what an earlier round marked removed but did not finish deleting (even at 0); the cases and digests stay.
        Run `streetwatch data export-reviews` first: rejected cases are hard negatives."""
        from pipelines.cases import CaseStore
        from pipelines.cases.retention import prune_rejected_evidence
        from pipelines.evidence_store import StorageError, open_evidence_store

        settings = settings_or_fail(config)
        keep = settings.cases.rejected_evidence_keep_days
        if keep == 0 and not CaseStore.exists(settings.cases.url):  # off, and no store whose round could have marked one
            typer.echo(RETENTION_OFF)
            return
        store = existing_store_or_fail(settings.cases.url)
        try:
            pruned = prune_rejected_evidence(store, open_evidence_store(settings.evidence_store), keep, dry_run=dry_run)
        except StorageError as exc:
            fail(str(exc))
        finally:
            store.close()
        for case_id in pruned.cases:
            typer.echo(case_id)
        for failed in pruned.failed:
            print_error(f"not removed: {failed}")
        verb = "would remove" if dry_run else "removed"
        if keep == 0 and not pruned.cases and not pruned.failed:
            typer.echo(RETENTION_OFF)
        else:  # at 0, only what an earlier round marked removed and did not finish deleting
            which = (f"rejected more than {keep} days ago (cases.rejected_evidence_keep_days)" if keep else
                     "marked removed by an earlier round (cases.rejected_evidence_keep_days is now 0)")
            typer.echo(f"{verb} the evidence of {counted(len(pruned.cases), 'case')} {which}: "
                       f"{counted(pruned.bytes, 'byte')} ({pruned.bytes / 1e6:.1f} MB)")
        if pruned.failed:
            raise typer.Exit(1)
