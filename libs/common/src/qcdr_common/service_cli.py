"""The ``qcdr-<svc>`` command every service shares: ``serve`` always; ``db upgrade`` for a service
that owns tables (it passes its migration function); ``consume`` joins as services gain streams."""

from __future__ import annotations

from collections.abc import Callable

import typer
import uvicorn

from qcdr_common.logging import redact_url
from qcdr_common.settings import CommonSettings

# (database URL, target revision) -> the revision the database is at afterwards
DbUpgrade = Callable[[str, str], str | None]


def make_service_cli(
    service: str,
    app_factory: str,
    get_settings: Callable[[], CommonSettings],
    *,
    db_upgrade: DbUpgrade | None = None,
) -> typer.Typer:
    cli = typer.Typer(name=f"qcdr-{service}", help=f"The qcdr {service} service.", no_args_is_help=True)

    @cli.command()
    def serve(
        host: str | None = typer.Option(None, help="Bind address (default from settings)."),
        port: int | None = typer.Option(None, help="Port (default from settings)."),
    ) -> None:
        """Run the HTTP API (health, metrics and the service's routes)."""
        settings = get_settings()
        uvicorn.run(
            app_factory,
            factory=True,
            host=host or settings.http_host,
            port=port or settings.http_port,
            log_level=settings.log_level.lower(),
        )

    if db_upgrade is not None:
        cli.add_typer(_db_cli(service, get_settings, db_upgrade), name="db")

    @cli.callback()
    def _root() -> None:
        """qcdr service commands."""

    return cli


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
        url = get_settings().database_url.get_secret_value()
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
