"""Microsoft Teams through a Workflows webhook ("When a Teams webhook request is received"), posting
an Adaptive Card 1.5; the retired Office 365 connector ``MessageCard`` is not used.

Body: ``{"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
"contentUrl": null, "content": <card>}]}``. The card: a container styled by severity (attention for
critical and high, warning for medium, accent below, good for a resolve) with the title (its
``id`` carries the delivery id) and the summary line, a FactSet (severity, category, techniques,
cluster, namespace, pod, count, first and last seen, finding), the explanation, and an
``Action.OpenUrl`` when the message has a link. Text is cut so a card stays far below Teams' 28 KB:
control characters are shown as spaces, and the 28 KB counts bytes of the JSON, so when a card of
wide characters still exceeds ``CARD_BUDGET`` its explanation, then its longest facts, are shortened.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import orjson
from pydantic import ConfigDict, Field

from qcdr_response.outputs.base import SinkConfig
from qcdr_response.outputs.http import redact_url
from qcdr_response.outputs.message import MessageKind, OutputMessage, when
from qcdr_response.outputs.registry import SINKS
from qcdr_response.outputs.sinks.webhook import JsonHttpSink, SecretHttpUrl

CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.5"
STYLE = {"critical": "attention", "high": "attention", "medium": "warning", "low": "accent", "info": "accent"}
_PREFIX = {MessageKind.UPDATE: "Update: ", MessageKind.RESOLVE: "Resolved: ", MessageKind.TEST: "Test: "}
TITLE_MAX, FACT_MAX, TEXT_MAX = 300, 500, 4000
# Teams refuses a card over 28 KB of JSON; leave room for the message envelope around the card
CARD_BUDGET = 27 * 1024
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # all but "\n", which JSON escapes as two bytes


class TeamsConfig(SinkConfig):
    model_config = ConfigDict(hide_input_in_errors=True)

    type: Literal["teams"] = "teams"
    webhook_url: SecretHttpUrl = Field(
        description="The workflow's HTTP POST URL (…/workflows/<id>/triggers/manual/paths/invoke?…&sig=…)."
    )
    batch_size: int = Field(default=1, ge=1, le=1)


def _clip(text: str, limit: int) -> str:
    text = _CONTROL.sub(" ", text)  # a control character is 6 bytes of JSON (\u0001) and shows nothing
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_size(value: object) -> int:
    return len(orjson.dumps(value))


def _clip_bytes(text: str, limit: int) -> str:
    """``text`` cut so its JSON string (quotes excluded) is at most ``limit`` bytes, "…" included."""
    if _json_size(text) - 2 <= limit:
        return text
    room, used = limit - 3, 0
    for end, char in enumerate(text):
        used += _json_size(char) - 2
        if used > room:
            return text[:end] + "…"
    return text


def _fit(content: dict[str, Any]) -> None:
    """Shorten the explanation, then the longest facts, until the card's JSON fits ``CARD_BUDGET``."""
    texts: list[tuple[dict[str, Any], str]] = [
        (block, "text") for block in content["body"][2:] if block["type"] == "TextBlock"
    ]
    facts = next(block["facts"] for block in content["body"] if block["type"] == "FactSet")
    texts += [(fact, "value") for fact in sorted(facts, key=lambda fact: -_json_size(fact["value"]))]
    for holder, key in texts:
        excess = _json_size(content) - CARD_BUDGET
        if excess <= 0:
            return
        holder[key] = _clip_bytes(holder[key], max(_json_size(holder[key]) - 2 - excess, 16))


def card(message: OutputMessage) -> dict[str, Any]:
    f, w = message.finding, message.finding.workload
    if message.kind is MessageKind.RESOLVE:
        style = "good"
    elif message.kind is MessageKind.TEST:
        style = "emphasis"
    else:
        style = STYLE.get(message.severity, "accent")
    title = f"{_PREFIX.get(message.kind, '')}[{message.severity.upper()}] {message.title}"
    ids = message.finding_ids or (f.id,)
    rows = [
        ("Severity", message.severity.upper()),
        ("Category", f.category),
        ("Techniques", ", ".join(f.techniques)),
        ("Cluster", w.cluster or message.cluster_id),
        ("Namespace", w.namespace),
        ("Pod", w.pod),
        ("Count", str(message.count)),
        ("First seen", when(message.first_seen)),
        ("Last seen", when(message.last_seen)),
        ("Finding", ids[0] + (f" (+{len(ids) - 1} more)" if len(ids) > 1 else "")),
    ]
    body: list[dict[str, Any]] = [
        {
            "type": "Container",
            "style": style,
            "bleed": True,
            "items": [
                {
                    "type": "TextBlock",
                    "id": f"qcdr-{message.id}",
                    "text": _clip(title, TITLE_MAX),
                    "size": "Large",
                    "weight": "Bolder",
                    "wrap": True,
                },
                {
                    "type": "TextBlock",
                    "text": _clip(message.summary(), TITLE_MAX),
                    "isSubtle": True,
                    "wrap": True,
                },
            ],
        },
        {
            "type": "FactSet",
            "facts": [{"title": name, "value": _clip(value, FACT_MAX)} for name, value in rows if value],
        },
    ]
    if f.explanation:
        body.append({"type": "TextBlock", "text": _clip(f.explanation, TEXT_MAX), "wrap": True})
    content: dict[str, Any] = {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "fallbackText": _clip(message.summary(), TITLE_MAX),
        "body": body,
    }
    if message.link:
        content["actions"] = [{"type": "Action.OpenUrl", "title": "Open in qcdr", "url": message.link}]
    _fit(content)
    return content


class TeamsSink(JsonHttpSink[TeamsConfig]):
    sink_type = "teams"
    config_model = TeamsConfig

    def endpoint(self) -> str:
        return self.config.webhook_url.get_secret_value()

    def render(self, message: OutputMessage) -> dict[str, Any]:
        attachment = {
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": None,
            "content": card(message),
        }
        return {"type": "message", "attachments": [attachment]}

    def describe(self) -> str:
        return f"teams → {redact_url(self.endpoint())} (workflow webhook)"


SINKS.add("teams", TeamsSink, __name__)
