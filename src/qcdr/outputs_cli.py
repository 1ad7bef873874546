"""``qcdr outputs``: the configured sinks, and a test message to one of them.

The configuration is the response service's: ``QCDR_OUTPUTS_FILE`` (or ``--config``) and the seed's
variables (``SLACK_WEBHOOK_URL``, ``PAGERDUTY_ROUTING_KEY``, ``SPLUNK_HEC_URL`` +
``SPLUNK_HEC_TOKEN``, ``ELASTICSEARCH_URL``, ``TEAMS_WEBHOOK_URL``). Secrets are never printed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from qcdr_response.outputs.base import SinkConfig, Status
    from qcdr_response.outputs.message import OutputMessage

outputs_app = typer.Typer(
    name="outputs", help="Output sinks: list them, send a test message.", no_args_is_help=True
)
# No markup: sink names, paths and what a sink answered are text (a '[/x]' in them was a Rich
# closing tag, so MarkupError instead of the message).
out = Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)
Config = Annotated[
    Path | None,
    typer.Option(
        "--config", envvar="QCDR_OUTPUTS_FILE", help="The outputs YAML file.", exists=True, dir_okay=False
    ),
]


def _load(config: Path | None) -> list[SinkConfig]:
    # the sinks (HTTP clients, syslog, Elasticsearch) are imported by the commands, not by `qcdr`
    from qcdr_response.outputs.config import OutputsConfigError, load_outputs

    try:
        return load_outputs(config)
    except OutputsConfigError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False)
        raise typer.Exit(2) from None


def sample_message(config: SinkConfig) -> OutputMessage:
    from qcdr_common.contracts.findings.v1 import Finding, FindingKind
    from qcdr_common.streams.envelope import uuid7
    from qcdr_response.outputs.message import MessageKind, OutputMessage

    now = datetime.now(UTC)
    finding = Finding(
        id=f"qcdr-test-{uuid7()}",
        kind=FindingKind.SOURCE,
        detector="qcdr",
        category="qcdr.test",
        severity=config.min_severity if config.min_severity.value != "info" else "low",
        title="qcdr test message",
        explanation="Sent by `qcdr outputs test`: if you can read this, the sink works.",
        event_time=now,
        source="qcdr",
    )
    return OutputMessage(
        id=uuid7(),
        sink=config.name,
        kind=MessageKind.TEST,
        group_key=f"qcdr-test|{config.name}",
        finding=finding,
        finding_ids=(finding.id,),
        first_seen=now,
        last_seen=now,
        cluster_id="qcdr-test",
        created_at=now,
    )


@outputs_app.command("list")
def list_outputs(config: Config = None) -> None:
    """The sinks the response service would use."""
    from qcdr_response.outputs.runtime import make_sink

    configs = _load(config)
    if not configs:
        out.print("no outputs configured (QCDR_OUTPUTS_FILE or the seed's variables)")
        return
    table = Table("name", "type", "destination", "min severity", "enabled", box=None)
    for c in configs:
        table.add_row(
            c.name, str(getattr(c, "type", "")), make_sink(c).describe(), c.min_severity.value, str(c.enabled)
        )
    out.print(table)


@outputs_app.command("test")
def send_test(
    sink: Annotated[str, typer.Argument(help="The sink's name (see `qcdr outputs list`).")],
    config: Config = None,
) -> None:
    """Send one test message to SINK and say what happened (exit 1 unless it was delivered)."""
    from qcdr_response.outputs.base import Status
    from qcdr_response.outputs.runtime import make_sink

    configs = {c.name: c for c in _load(config)}
    if sink not in configs:
        configured = ", ".join(sorted(configs)) or "none"
        err.print(
            f"[red]error:[/red] {escape(f'no sink named {sink!r} (configured: {configured})')}", markup=True
        )
        raise typer.Exit(2)

    async def send() -> Status:
        s = make_sink(configs[sink])
        try:
            [outcome] = await s.send([sample_message(configs[sink])])
        finally:
            await s.aclose()
        detail = f": {outcome.detail}" if outcome.detail else ""
        line = f"{sink} ({s.describe()}): {outcome.status.value}{detail}"
        (out if outcome.status == Status.DELIVERED else err).print(line, highlight=False)
        return outcome.status

    if asyncio.run(send()) != Status.DELIVERED:
        raise typer.Exit(1)
