"""``qcdr-admission``: serve the webhook (HTTPS), migrate the tables, replay events, and make
development certificates."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from qcdr_common.service_cli import make_service_cli

from qcdr_admission.db import upgrade
from qcdr_admission.settings import get_settings


async def replay(since: datetime | None) -> int:
    """Mark the admission.decision_made outbox rows unpublished again and publish them."""
    from qcdr_common.db import make_engine
    from qcdr_common.streams.outbox import OutboxRelay, mark_for_replay
    from redis.asyncio import Redis

    from qcdr_admission.db.base import OUTBOX

    settings = get_settings()
    engine = make_engine(settings.database_url.get_secret_value())
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    try:
        await mark_for_replay(engine, OUTBOX, since=since)
        return await OutboxRelay.from_settings(engine, redis, OUTBOX, settings).publish_pending()
    finally:
        await redis.aclose()
        await engine.dispose()


cli = make_service_cli(
    "admission", "qcdr_admission.app:create_app", get_settings, db_upgrade=upgrade, replay=replay
)
# the shared `serve` speaks plain HTTP; the webhook's serves HTTPS with reloading certificates
cli.registered_commands = [
    c for c in cli.registered_commands if getattr(c.callback, "__name__", "") != "serve"
]


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
) -> None:
    """Run the webhook and the API over HTTPS (QCDR_ADMISSION_TLS_CERT / _KEY, reloaded when the
    files change), with the decision log writer and the outbox relay.

    Without a certificate it serves plain HTTP with a warning (the API server calls webhooks over
    HTTPS only), unless QCDR_ADMISSION_TLS_REQUIRED=true, which makes it exit with code 2."""
    import uvicorn
    from qcdr_common.logging import configure_logging, get_logger
    from qcdr_common.service_cli import build_app, configured

    from qcdr_admission.tls import TLSFilesError, uvicorn_config

    settings = configured("admission", get_settings)
    if settings.tls_cert is None:
        if settings.tls_required:
            typer.echo(
                "qcdr-admission serve: QCDR_ADMISSION_TLS_REQUIRED is set but QCDR_ADMISSION_TLS_CERT "
                "and QCDR_ADMISSION_TLS_KEY are not (`qcdr-admission certs` makes development ones)",
                err=True,
            )
            raise typer.Exit(2)
        configure_logging(settings.log_level, settings.log_format.value)
        get_logger("qcdr.admission").warning(
            "serving plain HTTP: the API server cannot call /validate without TLS",
            hint="set QCDR_ADMISSION_TLS_CERT and QCDR_ADMISSION_TLS_KEY",
        )
    try:
        config = uvicorn_config(
            build_app("admission", "qcdr_admission.app:create_app"),
            host=host or settings.http_host,
            port=port or settings.http_port,
            cert=settings.tls_cert,
            key=settings.tls_key,
            reload_interval_s=settings.tls_reload_interval_s,
            log_level=settings.log_level,
        )
    except TLSFilesError as exc:  # the wording of qcdr_common.service_cli's configuration errors
        typer.echo(
            f"qcdr-admission serve: configuration error: QCDR_ADMISSION_TLS_{exc.which.upper()} "
            f"{exc.path}: {exc.reason}",
            err=True,
        )
        raise typer.Exit(2) from None
    uvicorn.Server(config).run()


@cli.command()
def certs(
    out: Annotated[Path, typer.Option(help="Directory for ca.crt, ca.key, tls.crt and tls.key.")],
    dns: Annotated[
        list[str] | None,
        typer.Option(
            help="DNS name of the service (repeatable; default qcdr-admission-webhook.qualys-system.svc)."
        ),
    ] = None,
    ip: Annotated[list[str] | None, typer.Option(help="IP address to name as well (repeatable).")] = None,
    days: Annotated[int, typer.Option(min=1, max=3650, help="Validity in days.")] = 365,
) -> None:
    """Write a development CA and a serving certificate signed by it (ECDSA P-256).

    Put ca.crt (base64) into the ValidatingWebhookConfiguration's caBundle and tls.crt/tls.key into
    the Secret the Deployment mounts. For production use cert-manager (k8s/admission/cert-manager).
    """
    try:
        from qcdr_admission.certs import DEFAULT_DNS, write_dev_certs
    except ImportError:  # pragma: no cover - cryptography missing
        typer.echo("qcdr-admission certs needs the `cryptography` package", err=True)
        raise typer.Exit(1) from None
    try:
        files = write_dev_certs(out, dns or list(DEFAULT_DNS), ip_addresses=ip or [], days=days)
    except ImportError:
        typer.echo(
            "qcdr-admission certs needs the `cryptography` package (pip install cryptography)", err=True
        )
        raise typer.Exit(1) from None
    except ValueError as exc:
        typer.echo(f"qcdr-admission certs: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:  # --out is a file, or a directory this user cannot write
        typer.echo(f"qcdr-admission certs: cannot write into --out {out}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    for f in (files.ca_cert, files.ca_key, files.cert, files.key):
        typer.echo(str(f))
