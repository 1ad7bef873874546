"""The ``qcdr-<svc>`` command every service shares: ``serve`` always; ``db upgrade`` for a service
that owns tables (it passes its migration function); ``consume`` and ``replay`` for a service with
stream consumers or an outbox (it passes coroutine functions)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn, TypeVar

import typer
import uvicorn
from pydantic import ValidationError
from uvicorn.importer import import_from_string

from qcdr_common.logging import configure_logging, redact_url
from qcdr_common.settings import CommonSettings

S = TypeVar("S", bound=CommonSettings)
# (database URL, target revision) -> the revision the database is at afterwards
DbUpgrade = Callable[[str, str], str | None]
# Runs the service's consumers and outbox relay until SIGTERM (qcdr_common.streams.run_until_stopped
# installs the signal handlers).
Consume = Callable[[], Coroutine[Any, Any, None]]
# Re-publishes from Postgres what was created at or after ``since`` (None: everything); returns a count.
Replay = Callable[[datetime | None], Coroutine[Any, Any, int]]


def make_service_cli(
    service: str,
    app_factory: str,
    get_settings: Callable[[], CommonSettings],
    *,
    db_upgrade: DbUpgrade | None = None,
    consume: Consume | None = None,
    replay: Replay | None = None,
) -> typer.Typer:
    cli = typer.Typer(name=f"qcdr-{service}", help=f"The qcdr {service} service.", no_args_is_help=True)

    @cli.command()
    def serve(
        host: str | None = typer.Option(None, help="Bind address (default from settings)."),
        port: int | None = typer.Option(None, help="Port (default from settings)."),
    ) -> None:
        """Run the HTTP API (health, metrics and the service's routes)."""
        settings = configured(service, get_settings)
        app = build_app(service, app_factory)
        uvicorn.run(
            app,
            host=host or settings.http_host,
            port=port or settings.http_port,
            log_level=settings.log_level.lower(),
        )

    if consume is not None:
        _add_consume(cli, service, get_settings, consume)
    if replay is not None:
        _add_replay(cli, service, get_settings, replay)

    if db_upgrade is not None:
        cli.add_typer(_db_cli(service, get_settings, db_upgrade), name="db")

    @cli.callback()
    def _root() -> None:
        """qcdr service commands."""

    return cli


def configured(service: str, get_settings: Callable[[], S], *, command: str = "serve") -> S:
    """The service's settings, or exit 2 with one line naming what is wrong."""
    try:
        return get_settings()
    except (ValueError, OSError) as exc:
        _config_error(service, exc, command)


def build_app(service: str, app_factory: str) -> Any:
    """The app from its factory (``module:function``), built here rather than by uvicorn so that a
    configuration mistake (a short API token, an unknown detector, a bad rule file) is one line and
    exit 2, not a traceback."""
    try:
        return import_from_string(app_factory)()
    except (ValueError, OSError) as exc:
        _config_error(service, exc)


def _config_error(service: str, exc: BaseException, command: str = "serve") -> NoReturn:
    message = " ".join(_one_line(exc).split())[:1000]
    typer.echo(f"qcdr-{service} {command}: configuration error: {redact_url(message)}", err=True)
    raise typer.Exit(2) from None


def _one_line(exc: BaseException) -> str:
    """The reason, without values: a settings error names the fields, not what they were set to
    (a wrong token or password would otherwise reach the terminal and the logs)."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
    return str(exc) or type(exc).__name__


def _db_cli(service: str, get_settings: Callable[[], CommonSettings], upgrade: DbUpgrade) -> typer.Typer:
    db = typer.Typer(
        name="db",
        help=f"The tables the {service} service owns (Alembic migrations, never run at start-up).",
        no_args_is_help=True,
    )

    @db.command("upgrade")
    def db_upgrade(
        revision: str = typer.Argument("head", help="Target revision."),
    ) -> None:
        """Migrate the database (DATABASE_URL) up to REVISION; safe to run again, and concurrently."""
        url = configured(service, get_settings, command="db upgrade").database_url.get_secret_value()
        where = redact_url(url)
        try:
            now_at = upgrade(url, revision)
        except Exception as exc:
            message = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
            typer.echo(f"qcdr-{service} db upgrade failed on {where}: {redact_url(message)}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"qcdr-{service}: {where} is at revision {now_at or 'base'}")

    @db.callback()
    def _db_root() -> None:
        """Database schema commands."""

    return db


def _add_consume(
    cli: typer.Typer, service: str, get_settings: Callable[[], CommonSettings], consume: Consume
) -> None:
    @cli.command("consume")
    def consume_command(
        metrics_port: int | None = typer.Option(
            None,
            min=0,
            max=65535,
            help="Serve Prometheus metrics on this port (default from settings; 0: off).",
        ),
    ) -> None:
        """Run the stream consumers and the outbox relay until SIGTERM (the batch in hand is
        finished and acknowledged first)."""
        settings = configured(service, get_settings, command="consume")
        configure_logging(settings.log_level, settings.log_format.value)
        port = settings.consume_metrics_port if metrics_port is None else metrics_port
        if port:
            from prometheus_client import start_http_server

            try:
                start_http_server(port, addr=settings.http_host)
            except OSError as exc:  # taken, or an address this host does not have
                typer.echo(
                    f"qcdr-{service} consume: cannot serve metrics on {settings.http_host}:{port}: "
                    f"{exc.strerror or exc}",
                    err=True,
                )
                raise typer.Exit(2) from None
        try:
            asyncio.run(consume())
        except Exception as exc:
            # no traceback: exception texts can carry connection URLs with passwords
            typer.echo(
                f"qcdr-{service} consume failed: {redact_url(type(exc).__name__ + ': ' + str(exc))}", err=True
            )
            raise typer.Exit(1) from None


def _add_replay(
    cli: typer.Typer, service: str, get_settings: Callable[[], CommonSettings], replay: Replay
) -> None:
    @cli.command("replay")
    def replay_command(
        since: Annotated[
            datetime | None,
            typer.Option(help="Only what was created at or after this time (ISO 8601, UTC; default: all)."),
        ] = None,
    ) -> None:
        """Re-publish this service's events from Postgres (after the stream was trimmed or lost).

        Consumers deduplicate on the envelope id, so replaying what they already have is safe."""
        settings = configured(service, get_settings, command="replay")
        configure_logging(settings.log_level, settings.log_format.value)
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        try:
            count = asyncio.run(replay(since))
        except Exception as exc:
            typer.echo(
                f"qcdr-{service} replay failed: {redact_url(type(exc).__name__ + ': ' + str(exc))}", err=True
            )
            raise typer.Exit(1) from None
        typer.echo(f"qcdr-{service}: re-published {count} envelopes")
