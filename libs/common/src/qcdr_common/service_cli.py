"""The ``qcdr-<svc>`` command every service shares (``serve`` now; ``consume`` and ``db`` join it
as each service gains streams and tables)."""

from __future__ import annotations

from collections.abc import Callable

import typer
import uvicorn

from qcdr_common.settings import CommonSettings


def make_service_cli(
    service: str, app_factory: str, get_settings: Callable[[], CommonSettings]
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

    @cli.callback()
    def _root() -> None:
        """qcdr service commands."""

    return cli
