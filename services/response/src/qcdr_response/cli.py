"""``qcdr-response``: serve the API, consume findings, migrate the tables, replay events."""

from __future__ import annotations

from qcdr_common.service_cli import make_service_cli

from qcdr_response.db import upgrade
from qcdr_response.settings import get_settings
from qcdr_response.worker import consume, replay

cli = make_service_cli(
    "response",
    "qcdr_response.app:create_app",
    get_settings,
    db_upgrade=upgrade,
    consume=consume,
    replay=replay,
)


@cli.command("node-agent")
def node_agent() -> None:
    """Run the node agent (the DaemonSet on every node): carry out node actions from
    response:node-actions:<node> against the local Docker Engine and /proc, publish their results
    on response:action-results, and serve /healthz, /readyz and /metrics. Stops on SIGTERM after
    the request in hand."""
    import asyncio

    import typer
    from qcdr_common.logging import configure_logging, redact_url
    from qcdr_common.service_cli import configured

    from qcdr_response.node_agent.settings import get_settings as agent_settings
    from qcdr_response.node_agent.worker import run

    # a bad setting (QCDR_CONTAINER_RUNTIME=podman, a NODE_NAME that is no DNS name) was a traceback
    settings = configured("response", agent_settings, command="node-agent")
    configure_logging(settings.log_level, settings.log_format.value)
    try:
        asyncio.run(run(settings))
    except Exception as exc:
        # no traceback: exception texts can carry connection URLs with passwords
        typer.echo(f"qcdr-response node-agent failed: {redact_url(f'{type(exc).__name__}: {exc}')}", err=True)
        raise typer.Exit(1) from None
