"""``qcdr-federation``: serve the service (any role), migrate its tables, re-publish its outbox, and
a few hub admin commands that work on the database directly (no API token needed, for bootstrap):
``clusters list``, ``clusters declare NAME --label k=v``, ``bootstrap-token create NAME``."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer
from qcdr_common.service_cli import make_service_cli
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_federation.db import upgrade
from qcdr_federation.settings import MAX_BOOTSTRAP_TOKEN_TTL_S, get_settings

T = TypeVar("T")

_TTL = re.compile(r"([0-9]{1,9})([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


async def replay(since: datetime | None) -> int:
    """Mark the federation outbox rows unpublished again and publish them (forwarded events on
    the hub, placed policies and shared baselines on a spoke)."""
    from qcdr_common.db import make_engine
    from qcdr_common.streams.outbox import OutboxRelay, mark_for_replay
    from redis.asyncio import Redis

    from qcdr_federation.db.base import OUTBOX

    settings = get_settings()
    engine = make_engine(settings.database_url.get_secret_value())
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    try:
        await mark_for_replay(engine, OUTBOX, since=since)
        return await OutboxRelay.from_settings(engine, redis, OUTBOX, settings).publish_pending()
    finally:
        await redis.aclose()
        await engine.dispose()


async def consume() -> None:
    """The spoke agent as its own process (QCDR_FEDERATION_CONSUME_IN_APP=false on `serve`); a
    hub's loops (health sweep, placements, controller) run inside `serve`."""
    from qcdr_common.contracts.federation.v1 import FederationRole

    settings = get_settings()
    if settings.role is not FederationRole.SPOKE:
        raise RuntimeError("`consume` runs the spoke agent: set FEDERATION_ROLE=spoke")
    from qcdr_federation.spoke.agent import consume as run_spoke

    await run_spoke(settings)


cli = make_service_cli(
    "federation",
    "qcdr_federation.app:create_app",
    get_settings,
    db_upgrade=upgrade,
    consume=consume,
    replay=replay,
)
# the shared `serve` speaks plain HTTP only; this one adds HTTPS (the console's session cookie is
# Secure, so a browser needs it unless a proxy terminates TLS in front)
cli.registered_commands = [
    c for c in cli.registered_commands if getattr(c.callback, "__name__", "") != "serve"
]


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
) -> None:
    """Run the HTTP API (any role), over HTTPS when QCDR_FEDERATION_TLS_CERT and
    QCDR_FEDERATION_TLS_KEY are set (both or neither: one alone exits with code 2)."""
    import uvicorn
    from qcdr_common.service_cli import build_app, configured

    settings = configured("federation", get_settings)
    cert, key = settings.tls_cert, settings.tls_key
    if (cert is None) != (key is None):
        typer.echo(
            "qcdr-federation serve: set both QCDR_FEDERATION_TLS_CERT and QCDR_FEDERATION_TLS_KEY or neither",
            err=True,
        )
        raise typer.Exit(2)
    for path in (cert, key):
        if path is not None and not path.is_file():
            typer.echo(f"qcdr-federation serve: {path} is not a readable file", err=True)
            raise typer.Exit(2)
    # uvicorn builds an ssl.PROTOCOL_TLS_SERVER context, which on Python >= 3.10 refuses
    # anything older than TLS 1.2
    uvicorn.run(
        build_app("federation", "qcdr_federation.app:create_app"),
        host=host or settings.http_host,
        port=port or settings.http_port,
        log_level=settings.log_level.lower(),
        ssl_certfile=str(cert) if cert is not None else None,
        ssl_keyfile=str(key) if key is not None else None,
    )


clusters_cli = typer.Typer(
    name="clusters", help="Spoke clusters on the hub (database).", no_args_is_help=True
)
tokens_cli = typer.Typer(
    name="bootstrap-token", help="Bootstrap tokens spokes register with (database).", no_args_is_help=True
)
cli.add_typer(clusters_cli, name="clusters")
cli.add_typer(tokens_cli, name="bootstrap-token")


def _run(work: Callable[[AsyncSession], Awaitable[T]], command: str) -> T:
    """Run ``work`` in one committed session on the configured database; a bad setting or a
    database that cannot be used is one line naming it (exit 2 or 1), not a traceback."""
    from qcdr_common.db import make_engine, make_session_factory
    from qcdr_common.logging import redact_url
    from qcdr_common.service_cli import configured
    from sqlalchemy.exc import SQLAlchemyError

    url = configured("federation", get_settings, command=command).database_url.get_secret_value()

    async def main() -> T:
        engine = make_engine(url)
        try:
            async with make_session_factory(engine)() as session:
                result = await work(session)
                await session.commit()
                return result
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except (OSError, SQLAlchemyError) as exc:  # refused, unknown database, tables not migrated
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        typer.echo(
            f"qcdr-federation {command}: cannot use the database at {redact_url(url)}: {redact_url(reason)}",
            err=True,
        )
        raise typer.Exit(1) from None


def _cluster_name(name: str) -> str:
    from qcdr_common.contracts.federation.v1 import CLUSTER_NAME_PATTERN

    if not re.fullmatch(CLUSTER_NAME_PATTERN, name):
        raise typer.BadParameter("a DNS-1123 label (lower-case letters, digits and '-')", param_hint="NAME")
    return name


def parse_ttl(value: str) -> float:
    match = _TTL.fullmatch(value.strip())
    if match is None or int(match[1]) == 0:
        raise typer.BadParameter("a duration like 3600, 90s, 15m, 24h or 7d", param_hint="--ttl")
    seconds = int(match[1]) * _UNIT_S[match[2]]
    if seconds > MAX_BOOTSTRAP_TOKEN_TTL_S:  # like the API; far beyond, the expiry is past year 9999
        raise typer.BadParameter(f"at most {MAX_BOOTSTRAP_TOKEN_TTL_S // 86_400}d", param_hint="--ttl")
    return float(seconds)


def parse_labels(values: list[str]) -> dict[str, str]:
    from qcdr_federation.hub.clusters.schemas import check_labels

    labels: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: a label is key=value")
        labels[key] = value
    try:
        return check_labels(labels)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@clusters_cli.command("list")
def list_clusters() -> None:
    """Every live cluster with its health (derived now), labels and last heartbeat."""
    from qcdr_federation.hub.clusters.service import cluster_views

    views = _run(lambda s: cluster_views(s, get_settings(), datetime.now(UTC)), "clusters list")
    if not views:
        typer.echo("no clusters")
        return
    for view in views:
        labels = ",".join(f"{k}={v}" for k, v in sorted(view.labels.items())) or "-"
        seen = view.last_heartbeat_at.isoformat() if view.last_heartbeat_at else "never"
        typer.echo(f"{view.name}\t{view.health.value}\t{labels}\tlast heartbeat {seen}")


@clusters_cli.command("declare")
def declare(
    name: Annotated[str, typer.Argument(help="The cluster's name (a DNS-1123 label).")],
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="key=value (repeatable).")] = None,
) -> None:
    """Declare a cluster, or replace its labels."""
    from qcdr_federation.hub.clusters.service import declare_cluster

    name = _cluster_name(name)
    labels = parse_labels(label or [])
    row = _run(lambda s: declare_cluster(s, name, labels, source="cli"), "clusters declare")
    typer.echo(f"cluster {row.name} declared ({row.id})")


@tokens_cli.command("create")
def create_token(
    name: Annotated[str, typer.Argument(help="The cluster the token registers.")],
    ttl: Annotated[str, typer.Option(help="Lifetime: seconds or 90s / 15m / 24h / 7d.")] = "24h",
) -> None:
    """Make a one-time bootstrap token and print it (the only time it is shown)."""
    from qcdr_federation.hub.clusters.service import ClusterRemovedError, create_bootstrap_token

    name = _cluster_name(name)  # the API refuses such a name; so must this, or a spoke never registers
    ttl_s = parse_ttl(ttl)
    try:
        row, token = _run(
            lambda s: create_bootstrap_token(
                s, name, ttl_s=ttl_s, created_by="cli", now=datetime.now(UTC), source="cli"
            ),
            "bootstrap-token create",
        )
    except ClusterRemovedError:
        typer.echo(f"cluster {name} was removed; declare it again first", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"bootstrap token {row.id} for {name}, expires {row.expires_at:%Y-%m-%dT%H:%M:%SZ}:", err=True)
    typer.echo(token)
