"""`streetwatch dispatch run|parked|requeue` and `streetwatch dispatch-sim`."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipelines.wording import counted  # no import of its own

if TYPE_CHECKING:
    from pipelines.cityops.verification import ReportStats
    from pipelines.dispatch.config import TargetConfig
    from pipelines.dispatch.dispatcher import PassStats

from streetwatch.commands.common import (SettingsOpt, cannot_listen, existing_store_or_fail, fail, require_case_store,
                                         settings_or_fail, setup_logging)

HostOpt = Annotated[str, typer.Option("--host", help="Address to listen on (loopback by default).")]

#: `dispatch run --once`'s exit codes for cron beside 0 (docs/cases-and-dispatch.md): something parked for a person
#: this pass; deliveries due and none of them delivered.
PARKED_EXIT, UNDELIVERED_EXIT = 3, 4


def once_exit_code(stats: PassStats, reports: ReportStats) -> int:
    """The exit code of one pass, so a cron job notices what a person must see: `PARKED_EXIT` when a delivery or a
    verification report was parked (`dispatch parked` says why), `UNDELIVERED_EXIT` when some were due and none went
    out (retried or deferred: the platform down, refusing for now, its circuit open); 0 when nothing was due or what
    was due went out (some retried beside deliveries that went out: the platform answers, the next pass retries)."""
    if stats.parked or reports.parked:
        return PARKED_EXIT
    if not stats.delivered and not reports.delivered and (stats.retried or stats.deferred or reports.retried):
        return UNDELIVERED_EXIT
    return 0


SHOWN_ERRORS = 20


def error_lines(errors: list[str]) -> list[str]:
    """`dispatch run`'s lines of what went wrong: the latest `SHOWN_ERRORS`, after a line saying how many earlier ones
    are left out and where to read them (a pass that parked 300 cases on an expired token printed 20 and no word of
    the other 280)."""
    lines = [f"  {error}" for error in errors[-SHOWN_ERRORS:]]
    if (left := len(errors) - SHOWN_ERRORS) > 0:
        lines.insert(0, f"  ({counted(left, 'earlier error')} not shown: `streetwatch dispatch parked` lists "
                        "the parked deliveries, `streetwatch cases list --state queued` why each case waits)")
    return lines


def _dialect(config: Path | None, name: str) -> TargetConfig:
    """The cn-dcm target `dispatch-sim --target` speaks as: the platform an integrator is about to connect, tried on
    loopback with the field names and constant fields the settings send it (the simulator refused them otherwise)."""
    targets = settings_or_fail(config).dispatch.targets
    target = targets.get(name)
    if target is None:
        fail(f"--target {name}: no dispatch target of that name in {config or 'the default settings'} "
             f"(dispatch.targets: {', '.join(targets) or 'none'})")
    if target.adapter != "cn-dcm":
        fail(f"--target {name}: its adapter is {target.adapter}; only a cn-dcm target renames fields (field_map)")
    return target


def register(app: typer.Typer) -> None:
    dispatch = typer.Typer(help="Deliver queued cases to dispatch systems and follow their status.", no_args_is_help=True)
    app.add_typer(dispatch, name="dispatch")

    @dispatch.command("run")
    def run(
        config: SettingsOpt = None,
        once: Annotated[bool, typer.Option("--once", help="One pass over what is due now (and due status polls), then exit.")] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every attempt.")] = False,
    ) -> None:
        """Deliver outbox entries (retries with back-off, circuit breaker, idempotency keys); Ctrl-C or SIGTERM stops cleanly.

        With --once, for cron: exit code 0 when nothing was due or what was due was delivered, 3 when something was
        parked for a person (`dispatch parked`), 4 when deliveries were due and none could be delivered (retried or
        deferred: the platform down or its circuit open)."""
        setup_logging(verbose)
        from detect.config_io import ConfigError
        from pipelines.cases.store import CaseStoreUnreachable
        from pipelines.dispatch.dispatcher import Dispatcher
        from pipelines.evidence_store import StorageError, open_evidence_store

        settings = settings_or_fail(config)
        if not settings.dispatch.targets:
            fail("no dispatch targets configured (dispatch.targets in the settings file)")
        require_case_store(settings.cases.url)  # an empty one would read "outbox: empty", not "wrong --config"
        try:
            evidence = open_evidence_store(settings.evidence_store, settings.service.url_key())
        except StorageError as exc:
            fail(str(exc))
        for unsafe in (settings.unsigned_attachments(), settings.unreachable_attachments()):
            if unsafe is not None:
                logging.getLogger(__name__).warning(unsafe)
        from pipelines.cityops.verification import ReportStats, VerificationReporter

        try:
            taxonomy = settings.load_taxonomy()  # with the deployment's city code files
        except ConfigError as exc:
            fail(str(exc))
        store = settings.cases.open()
        dispatcher = Dispatcher(store, evidence, settings.dispatch, taxonomy=taxonomy)
        reporter = VerificationReporter(store, evidence, settings.dispatch, taxonomy=taxonomy)  # re-check outcomes back to the platforms
        try:
            if once:
                stats = dispatcher.run_once()
                stats.add(dispatcher.poll_statuses(force=True))
                reports = reporter.run_once()
            else:
                stop = threading.Event()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, lambda *_: stop.set())
                typer.echo(f"dispatching to {', '.join(settings.dispatch.targets)} (pid {os.getpid()})", err=True)
                def report_every_5s() -> None:
                    while not stop.wait(5.0):
                        try:
                            reporter.run_once()
                        except CaseStoreUnreachable:  # the deliveries' loop says so, once an outage
                            pass
                        except Exception:  # noqa: BLE001 - the next round tries again; deliveries go on
                            logging.getLogger(__name__).exception("verification reports failed")

                reporting = threading.Thread(target=report_every_5s, name="verification-reports", daemon=True)
                reporting.start()
                stats = dispatcher.run(stop)
                reporting.join()
                try:
                    reports = reporter.run_once()
                except CaseStoreUnreachable:  # stopped during an outage: still a stop (exit 0), not a failure
                    reports = ReportStats()
            try:
                outbox = ", ".join(f"{k} {v}" for k, v in sorted(store.outbox_counts().items())) or "empty"
            except CaseStoreUnreachable as exc:
                if once:
                    raise
                outbox = f"not counted: {exc}"
        finally:
            dispatcher.close()
            reporter.close()
            store.close()
        typer.echo(f"verification reports: delivered {reports.delivered}, retrying {reports.retried}, "
                   f"parked {reports.parked}, unsupported by the protocol {reports.unsupported}")
        typer.echo(f"delivered {stats.delivered}, retried {stats.retried}, parked {stats.parked}, "
                   f"withdrawn before sending {stats.withdrawn}, "
                   f"deferred (circuit open) {stats.deferred}, status changes {stats.status_changes}; "
                   f"of the delivered, found already on their side {stats.found}; lost to another dispatcher {stats.lost}")
        for line in error_lines(stats.errors):
            typer.echo(line)
        typer.echo(f"outbox: {outbox}")
        if once and (code := once_exit_code(stats, reports)):
            raise typer.Exit(code)

    @dispatch.command("parked")
    def parked(config: SettingsOpt = None) -> None:
        """List deliveries parked for a human (the other side refused them), with their reasons.

        Tab-separated under a header line: entry (the id `dispatch requeue` takes), case, target, attempts, reason."""
        from pipelines.cases.vocabulary import OutboxStatus

        store = existing_store_or_fail(settings_or_fail(config).cases.url)
        entries = store.outbox_entries(status=OutboxStatus.PARKED)
        if not entries:
            typer.echo("no parked deliveries")
            return
        typer.echo("entry\tcase\ttarget\tattempts\treason")
        for e in entries:
            typer.echo(f"{e.id}\t{e.case_id}\t{e.target}\t{e.attempts}\t{e.parked_reason}")

    @dispatch.command("preview")
    def preview(
        case_id: Annotated[str, typer.Argument(help="Case id (SW<date>-<hex>).")],
        target: Annotated[str | None, typer.Option("--target", help="Dispatch target (default: the one the case is queued for, else the only one configured).")] = None,
        config: SettingsOpt = None,
    ) -> None:
        """Print the request `dispatch run` would send for a case, in the target's field names; nothing is sent or changed.

        A dry run for mapping fields: the method, URL and Idempotency-Key on stderr, the JSON body (cn-dcm, after
        field_map and extra_fields) or form (Open311, its api_key masked) on stdout. A case the dispatcher would park
        without a request (no place) is said on stderr instead (exit 3)."""
        import json

        from pipelines.cases import CaseNotFound
        from pipelines.cases.store import idempotency_key
        from pipelines.dispatch.adapters import DeliveryError, Open311Adapter, require_place
        from pipelines.dispatch.dispatcher import Dispatcher
        from pipelines.evidence_store import StorageError, open_evidence_store

        settings = settings_or_fail(config)
        store = existing_store_or_fail(settings.cases.url)
        try:
            case = store.get(case_id)
        except CaseNotFound as exc:
            fail(str(exc))
        targets = settings.dispatch.targets
        name = target or case.dispatch_target or (next(iter(targets)) if len(targets) == 1 else None)
        if name not in targets:
            fail(f"--target {name}: no dispatch target of that name (dispatch.targets: {', '.join(targets) or 'none'})"
                 if name else f"case {case_id} is queued for no target: give --target ({', '.join(targets) or 'none configured'})")
        try:
            evidence = open_evidence_store(settings.evidence_store, settings.service.url_key())
        except StorageError as exc:
            fail(str(exc))
        dispatcher = Dispatcher(store, evidence, settings.dispatch, taxonomy=settings.load_taxonomy())
        try:
            delivery = dispatcher.delivery(case_id, name, idempotency_key(case_id, name), None)
        except DeliveryError as exc:
            fail(f"case {case_id}: {exc}")
        finally:
            dispatcher.close()
            store.close()
        try:
            require_place(case, targets[name].adapter)
        except DeliveryError as exc:  # parked before any body is made: there is no request to show
            typer.echo(f"case {case_id}: would be parked without a request: {exc}", err=True)
            raise typer.Exit(PARKED_EXIT) from None
        adapter = dispatcher.adapters[name]
        body = adapter.request(delivery)
        if isinstance(adapter, Open311Adapter):
            body = {**body, "api_key": "***" if body.get("api_key") else ""}
            url = f"{adapter.base}/requests.json"
        else:
            url = str(targets[name].url)
        typer.echo(f"POST {url} ({targets[name].adapter}, target {name}, Idempotency-Key {delivery.idempotency_key}); "
                   "not sent", err=True)
        typer.echo(json.dumps(body, ensure_ascii=False, indent=2))

    @dispatch.command("requeue")
    def requeue(
        entry_ids: Annotated[list[int] | None, typer.Argument(help="Outbox entry ids from `dispatch parked`.", show_default=False)] = None,
        target: Annotated[str | None, typer.Option("--target", help="Every parked entry of this dispatch target (after fixing a cause they share: a token, a field map).")] = None,
        actor: Annotated[str, typer.Option("--by", help="Who fixed the cause (recorded in the case history).")] = "ops",
        config: SettingsOpt = None,
    ) -> None:
        """Deliver parked entries again (same idempotency key, so they cannot create a duplicate).

        One line per entry; an entry that cannot be requeued is named with why, the others are requeued all the same
        (exit code 2 when one could not be)."""
        from pipelines.cases import CaseStoreError
        from pipelines.cases.vocabulary import OutboxStatus

        if not entry_ids and not target:
            fail("give the entry ids to requeue (`dispatch parked` lists them), or --target NAME for all of a target's")
        store = existing_store_or_fail(settings_or_fail(config).cases.url)
        ids = list(entry_ids or [])
        if target:
            ids += [e.id for e in store.outbox_entries(status=OutboxStatus.PARKED) if e.target == target and e.id not in ids]
            if not ids:
                fail(f"--target {target}: no parked deliveries to it")
        refused = []
        for entry_id in ids:
            try:
                store.requeue(entry_id, actor=actor)
            except CaseStoreError as exc:
                refused.append(str(exc))
                typer.echo(f"error: {exc}", err=True)
                continue
            typer.echo(f"outbox entry {entry_id} requeued")
        if refused:
            raise typer.Exit(2)

    @app.command("dispatch-sim")
    def dispatch_sim(
        port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free port).")],
        host: HostOpt = "127.0.0.1",
        fail_rate: Annotated[float, typer.Option("--fail-rate", min=0.0, max=1.0, help="Share of case POSTs that fail on purpose.")] = 0.0,
        latency: Annotated[float, typer.Option("--latency", min=0.0, help="Milliseconds added to every answer.")] = 0.0,
        fail_modes: Annotated[str, typer.Option("--fail-modes", help="Comma list of: error, error-after, close, garbage, stall.")] = "error,error-after,close,garbage,stall",
        stall_s: Annotated[float, typer.Option("--stall-s", min=0.0, help="How long a `stall` fault holds the answer.")] = 30.0,
        api_key: Annotated[str | None, typer.Option("--api-key", help="Open311 api_key to require (default: any non-empty).")] = None,
        open311_token: Annotated[bool, typer.Option("--open311-token", help="Answer Open311 POSTs with a token instead of a service_request_id.")] = False,
        webhook_url: Annotated[str | None, typer.Option("--webhook-url", help="cn-dcm status webhook (when a case carries no callbackUrl).")] = None,
        webhook_secret_env: Annotated[str | None, typer.Option("--webhook-secret-env", help="Variable with the HMAC secret to sign webhooks with.")] = None,
        webhook_timestamp_header: Annotated[str | None, typer.Option("--webhook-timestamp-header", help="Send the unix time in this header (e.g. X-Timestamp) and sign '<time>.<body>' (a target's webhook_timestamp_header); needs --webhook-secret-env.")] = None,
        ignore_idempotency_key: Annotated[bool, typer.Option("--ignore-idempotency-key", help="Create a new case for every POST, repeated Idempotency-Key or not (as many real platforms do).")] = False,
        envelope_errors: Annotated[bool, typer.Option("--envelope-errors", help="Answer cn-dcm errors with HTTP 200 and the status as the envelope's code ({\"code\": 400, \"msg\"}), as many 数字城管 platforms do.")] = False,
        seed: Annotated[int | None, typer.Option("--seed", help="Seed of the fault dice (repeatable runs).")] = None,
        target: Annotated[str | None, typer.Option("--target", help="Speak as the platform of this cn-dcm target of --config: its field_map's names (case, answer, look-up, webhook) and its extra_fields, required.")] = None,
        config: SettingsOpt = None,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every request.")] = False,
    ) -> None:
        """A dispatch-system simulator (cn-dcm and Open311) with injected faults; see GET /sim/received."""
        from pipelines.dispatch.simulator import Faults, SimServer, SimState, parse_modes

        dialect = _dialect(config, target) if target else None

        try:
            faults = Faults(fail_rate=fail_rate, latency_ms=latency, modes=parse_modes(fail_modes), stall_s=stall_s,
                            honour_idempotency=not ignore_idempotency_key, envelope_errors=envelope_errors)
        except ValueError as exc:
            fail(str(exc))
        secret = os.environ.get(webhook_secret_env) if webhook_secret_env else None
        if webhook_secret_env and not secret:
            fail(f"{webhook_secret_env} is not set")
        if webhook_timestamp_header and not secret:
            fail("--webhook-timestamp-header needs --webhook-secret-env: the timestamp is signed with the body")
        state = SimState(faults=faults, api_key=api_key, open311_token=open311_token, webhook_url=webhook_url,
                         webhook_secret=secret, webhook_timestamp_header=webhook_timestamp_header, seed=seed,
                         field_map=dict(dialect.field_map) if dialect else {},
                         extra_fields=dict(dialect.extra_fields) if dialect else {})
        try:
            server = SimServer(host, port, state, verbose=verbose)
        except OSError as exc:
            fail(cannot_listen(host, port, exc))
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
        typer.echo(f"dispatch-sim listening on http://{host}:{server.server_address[1]} "
                   f"(cn-dcm: /cn-dcm/cases, open311: /open311)", err=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
