"""The ``vetgateway`` command line. Every command loads and validates settings first, so a bad
setting stops it with one line naming the setting (exit code 2)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from vetgateway import event_loop
from vetgateway.cli_simulate import simulate_app
from vetgateway.cli_support import fail as _fail
from vetgateway.cli_support import load_settings_or_fail as _settings
from vetgateway.config import Settings
from vetgateway.errors import ConfigError, ListenerUnavailable, StorageError
from vetgateway.heap import settle_after_startup
from vetgateway.store import migrate
from vetgateway.store.db import Database
from vetgateway.store.messages import find_messages, replay_message, replay_refusal
from vetgateway.store.models import InboundMessage, MessageStatus, Role
from vetgateway.store.tokens import create_token

app = typer.Typer(
    help="Lab and device integration gateway for veterinary clinics.", no_args_is_help=True
)
tokens_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")
catalogue_app = typer.Typer(help="The test catalogue and code maps.", no_args_is_help=True)
app.add_typer(catalogue_app, name="catalogue")
app.add_typer(simulate_app, name="simulate")


def _database(settings: Settings) -> Database:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Database(settings.effective_database_url, pool_size=settings.db_pool_size)


def _migrate(db: Database) -> None:
    try:
        migrate.upgrade(db)
    except StorageError as exc:
        _fail(f"cannot migrate the database: {exc}", code=1)


def _ensure_catalogue(db: Database) -> None:
    from vetgateway.store.catalogue import ensure_catalogue

    try:
        with db.session() as session:
            summary = ensure_catalogue(session)
    except StorageError as exc:
        _fail(f"cannot load the test catalogue: {exc}", code=1)
    if summary is not None:
        logging.getLogger(__name__).info("loaded the shipped test catalogue: %s", summary)


def _load_oncall(settings: Settings, db: Database) -> None:
    """The on-call rota file, if configured, is loaded at every start (idempotent)."""
    if settings.oncall_file is None:
        return
    from vetgateway.store.oncall import load_oncall_file

    try:
        with db.session() as session:
            summary = load_oncall_file(session, settings.oncall_file, actor="config")
    except (StorageError, ConfigError) as exc:
        _fail(f"cannot load the on-call file: {exc}", code=1)
    logging.getLogger(__name__).info("loaded the on-call rota: %s", summary)


@app.command()
def run() -> None:
    """Run every listener (and, with no broker URL, the pipeline worker) in one process."""
    from vetgateway.gateway import Gateway

    settings = _settings()
    db = _database(settings)
    _migrate(db)
    _ensure_catalogue(db)
    _load_oncall(settings, db)
    try:
        event_loop.run(Gateway(settings, db).serve(), settings.event_loop)
    except ConfigError as exc:  # e.g. an analyzer with an unknown driver or clinic
        _fail(str(exc))
    except ListenerUnavailable as exc:
        _fail(str(exc), code=1)
    except OSError as exc:  # e.g. an unreadable TLS certificate
        _fail(f"cannot start: {exc}", code=1)
    finally:
        db.dispose()


@app.command()
def worker(
    threads: Annotated[int | None, typer.Option(help="worker threads (default: settings)")] = None,
    sweep: Annotated[
        bool, typer.Option("--sweep", help="also re-dispatch unfinished work (a dispatcher)")
    ] = False,
) -> None:
    """Process pipeline work from the configured broker until SIGTERM or SIGINT.

    Start as many as you like, on any machine that reaches the database and the broker.
    """
    import signal
    import threading

    from vetgateway.pipeline.runtime import Pipeline

    settings = _settings()
    if not settings.broker_url:
        _fail("VETGATEWAY_BROKER_URL is empty: the embedded pipeline runs inside `vetgateway run`")
    if threads is not None:
        settings = settings.model_copy(update={"worker_threads": threads})
    db = _database(settings)
    _migrate(db)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    pipeline = Pipeline(settings, db, dispatch=sweep, work=True)
    pipeline.start()
    settle_after_startup()
    typer.echo(f"worker ready: {settings.worker_threads} threads")
    try:
        stop.wait()
    finally:
        pipeline.stop()
        db.dispose()


@catalogue_app.command("load")
def catalogue_load(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="TOML catalogue/map files (default: the catalogue shipped with us)"),
    ] = None,
) -> None:
    """Load tests, code maps and reference intervals (loading the same files twice changes
    nothing)."""
    from vetgateway.store.catalogue import load_catalogue

    settings = _settings()
    db = _database(settings)
    try:
        _migrate(db)
        with db.session() as session:
            summary = load_catalogue(session, files or None)
    except (StorageError, ConfigError) as exc:
        _fail(str(exc), code=1)
    finally:
        db.dispose()
    typer.echo(str(summary))


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="one HL7 v2 message (ER7)")],
) -> None:
    """Explain what is wrong where in an HL7 message, against its declared version (exit 1 if
    anything is)."""
    from vetgateway.pipeline.parse.validate import format_problems, validate_message

    try:
        raw = file.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror}")
    problems = validate_message(raw)
    if problems:
        typer.echo(format_problems(problems))
        raise typer.Exit(1)
    typer.echo(f"{file}: valid")


@app.command("migrate")
def migrate_command(
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
) -> None:
    """Bring the database schema to a revision (default: the newest)."""
    settings = _settings()
    db = _database(settings)
    try:
        _migrate(db) if revision == "head" else migrate.upgrade(db, revision)
        typer.echo(f"database at revision {migrate.current_revision(db)}")
    finally:
        db.dispose()


@tokens_app.command("create")
def tokens_create(
    role: Annotated[Role, typer.Option(help="what the token may do", case_sensitive=False)],
    name: Annotated[str, typer.Option(help="who or what uses it (shown in the audit log)")],
) -> None:
    """Create an API token and print it once; only its hash is stored."""
    settings = _settings()
    db = _database(settings)
    try:
        _migrate(db)
        with db.session() as session:
            token, secret = create_token(session, name=name, role=role, actor="cli")
            token_id = token.id
    except StorageError as exc:
        _fail(str(exc), code=1)
    finally:
        db.dispose()
    typer.echo(secret)
    typer.echo(
        f"token {token_id} ({role.value}, {name!r}); store it now: it is not shown again", err=True
    )


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"--since: not an ISO 8601 date or time: {value!r}")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _describe(message: InboundMessage) -> str:
    error = (message.error or "").replace("\n", " ")
    error = error if len(error) <= 80 else error[:77] + "..."
    return (
        f"{message.id}\t{message.received_at.isoformat(timespec='seconds')}\t{message.channel}"
        f"\t{message.control_id or '-'}\t{message.status.value}\t{error}"
    )


@app.command()
def replay(
    status: Annotated[
        MessageStatus | None,
        typer.Option(help="replay the messages with this status", case_sensitive=False),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="only those received at or after (ISO 8601; no zone = UTC)")
    ] = None,
    channel: Annotated[str | None, typer.Option(help="only those from this channel")] = None,
    ids: Annotated[
        list[int] | None, typer.Option("--id", help="only this message id (repeatable)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list them; change nothing")] = False,
) -> None:
    """Send stored messages through the pipeline again (status back to received, audited).

    Filters combine; --status or --id is required. Quarantined, unmatched and processed messages
    can be replayed; ones already queued (received) or duplicate rows are listed as skipped.
    Nothing is deleted and the raw bytes are never changed.
    """
    if status is None and not ids:
        _fail("say what to replay: --status (e.g. --status quarantined) and/or --id N")
    moment = _parse_since(since)
    settings = _settings()
    db = _database(settings)
    try:
        _migrate(db)
        with db.session(readonly=dry_run) as session:
            found: Sequence[InboundMessage] = find_messages(
                session, status=status, channel=channel, since=moment, ids=ids
            )
            replayed = skipped = 0
            for message in sorted(found, key=lambda m: m.id):
                line = _describe(message)
                refusal = replay_refusal(message)
                if refusal is None and not dry_run:
                    outcome = replay_message(session, message.id, actor="cli")
                    refusal = outcome.refused if outcome is not None else "no longer exists"
                if refusal is not None:
                    skipped += 1
                    typer.echo(f"skip\t{line}\t({refusal})")
                    continue
                replayed += 1
                typer.echo(f"{'would replay' if dry_run else 'replayed'}\t{line}")
    except StorageError as exc:
        _fail(str(exc), code=1)
    finally:
        db.dispose()
    verb = "would replay" if dry_run else "replayed"
    typer.echo(f"{verb} {replayed} message(s); skipped {skipped}")


def main() -> None:
    app(prog_name="vetgateway")


if __name__ == "__main__":
    main()
