"""Slack incoming webhook: a Block Kit message with the severity as a colour bar.

Top level: ``text`` (the one-line summary, used for notifications and as the fallback) and a
``header`` block whose ``block_id`` carries the delivery id. One legacy ``attachments`` entry with
the severity ``color`` holds the details as blocks, so the bar runs alongside them: a fields section
(severity, category, techniques, where, count, first and last seen), the explanation, a button when
the message has a ``link``, and a context line (kind, detector, finding ids). Text is escaped for
mrkdwn and cut to Block Kit's limits. ``channel``/``username``/``icon_emoji`` are sent only with
``legacy_webhook: true``: app webhooks post to the channel chosen when they were created.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import ConfigDict, Field

from qcdr_response.outputs.base import SinkConfig
from qcdr_response.outputs.http import redact_url
from qcdr_response.outputs.message import MessageKind, OutputMessage, when
from qcdr_response.outputs.registry import SINKS
from qcdr_response.outputs.sinks.webhook import JsonHttpSink, SecretHttpUrl

# the seed's colours (critical #ff0000, high #ff6600, medium #ffcc00, else #36a64f)
COLOURS = {"critical": "#ff0000", "high": "#ff6600", "medium": "#ffcc00", "low": "#36a64f", "info": "#36a64f"}
RESOLVED_COLOUR = "#2eb886"
TEST_COLOUR = "#439fe0"
HEADER_MAX, SECTION_MAX, FIELD_MAX, BLOCK_ID_MAX = 150, 3000, 2000, 255
_PREFIX = {MessageKind.UPDATE: "Update: ", MessageKind.RESOLVE: "Resolved: ", MessageKind.TEST: "Test: "}


class SlackConfig(SinkConfig):
    model_config = ConfigDict(hide_input_in_errors=True)

    type: Literal["slack"] = "slack"
    webhook_url: SecretHttpUrl = Field(description="https://hooks.slack.com/services/T…/B…/…")
    legacy_webhook: bool = Field(
        default=False,
        description="A legacy 'Incoming WebHooks' integration, which honours channel/username/icon "
        "overrides; app webhooks (the default) ignore them, so they are not sent.",
    )
    channel: str | None = Field(default="#security-alerts", description="Legacy webhooks only.")
    username: str | None = Field(default=None, description="Legacy webhooks only.")
    icon_emoji: str | None = Field(default=None, description="Legacy webhooks only, e.g. :shield:.")
    batch_size: int = Field(default=1, ge=1, le=1)
    # Slack allows about one message a second per incoming webhook (short bursts pass)
    rate_per_s: float | None = Field(default=1.0, gt=0)


def escape(text: str) -> str:
    """Slack's three control characters; anything else (including ``<url|label>``) stays inert."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = re.sub(r"&[a-z]*$", "", text[: limit - 1])  # never end inside an escape
    return cut + "…"


def block_id(delivery_id: str) -> str:
    value = f"qcdr-{delivery_id}"
    return value if len(value) <= BLOCK_ID_MAX else "qcdr-" + hashlib.sha256(delivery_id.encode()).hexdigest()


def facts(message: OutputMessage) -> list[tuple[str, str]]:
    f, w = message.finding, message.finding.workload
    where = " / ".join(p for p in (w.cluster or message.cluster_id, w.namespace, w.pod) if p)
    return [
        ("Severity", message.severity.upper()),
        ("Category", f.category),
        ("Techniques", ", ".join(f.techniques) or "none"),
        ("Where", where or "unknown"),
        ("Count", str(message.count)),
        ("First seen", when(message.first_seen)),
        ("Last seen", when(message.last_seen)),
    ]


def colour(message: OutputMessage) -> str:
    if message.kind is MessageKind.RESOLVE:
        return RESOLVED_COLOUR
    if message.kind is MessageKind.TEST:
        return TEST_COLOUR
    return COLOURS.get(message.severity, COLOURS["info"])


class SlackSink(JsonHttpSink[SlackConfig]):
    sink_type = "slack"
    config_model = SlackConfig

    def endpoint(self) -> str:
        return self.config.webhook_url.get_secret_value()

    def render(self, message: OutputMessage) -> dict[str, Any]:
        f = message.finding
        header = f"{_PREFIX.get(message.kind, '')}[{message.severity.upper()}] {message.title}"
        details: list[dict[str, Any]] = [
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": clip(f"*{name}*\n{escape(value)}", FIELD_MAX)}
                    for name, value in facts(message)
                ],
            }
        ]
        if f.explanation:
            text = {"type": "mrkdwn", "text": clip(escape(f.explanation), SECTION_MAX)}
            details.append({"type": "section", "text": text})
        if message.link:
            button = {
                "type": "button",
                "action_id": "qcdr-open",
                "text": {"type": "plain_text", "text": "Open in qcdr"},
                "url": message.link,
            }
            details.append({"type": "actions", "elements": [button]})
        ids = message.finding_ids or (f.id,)
        more = f" (+{len(ids) - 1} more)" if len(ids) > 1 else ""
        context = f"qcdr · {message.kind.value} · {f.detector} · finding {ids[0]}{more}"
        details.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(escape(context), 3000)}]}
        )
        payload: dict[str, Any] = {
            "text": clip(escape(message.summary()), SECTION_MAX),
            "blocks": [
                {
                    "type": "header",
                    "block_id": block_id(message.id),
                    "text": {"type": "plain_text", "text": clip(header, HEADER_MAX), "emoji": True},
                }
            ],
            "attachments": [{"color": colour(message), "fallback": message.summary(), "blocks": details}],
        }
        if self.config.legacy_webhook:
            overrides = {
                "channel": self.config.channel,
                "username": self.config.username,
                "icon_emoji": self.config.icon_emoji,
            }
            payload.update({k: v for k, v in overrides.items() if v})
        return payload

    def describe(self) -> str:
        kind = (
            f"legacy webhook, channel {self.config.channel}" if self.config.legacy_webhook else "app webhook"
        )
        return f"slack → {redact_url(self.endpoint())} ({kind})"


SINKS.add("slack", SlackSink, __name__)
