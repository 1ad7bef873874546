"""PagerDuty Events API v2: one event per message to ``/v2/enqueue``.

``dedup_key`` is the message's group key (hashed when over PagerDuty's 255 characters), so every
finding of a group and every update of it lands on one alert, and the resolve (kind ``resolve``,
sent when the finding is closed through the API) closes that alert. Alerts and updates are
``trigger`` events with a PD-CEF payload: ``summary`` (at most 1024 characters), ``source`` (cluster/
namespace/pod), ``severity`` (critical→critical, high→error, medium→warning, low and info→info),
``timestamp`` (last seen), ``component`` (container, else owner, else process), ``group`` (namespace),
``class`` (category) and ``custom_details``; ``links`` carries the message's link. Only critical and
high go out by default (``min_severity: high``), as in the seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import httpx
import orjson
from pydantic import AfterValidator, ConfigDict, Field, SecretStr
from qcdr_common.contracts.events.v1 import Severity

from qcdr_response.outputs.base import Outcome, SinkConfig
from qcdr_response.outputs.http import classify, redact_url
from qcdr_response.outputs.message import MessageKind, OutputMessage
from qcdr_response.outputs.registry import SINKS
from qcdr_response.outputs.sinks.webhook import JsonHttpSink, check_http_url

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info", "info": "info"}
SUMMARY_MAX, DEDUP_MAX, TEXT_MAX = 1024, 255, 2000


def _routing_key(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value()) != 32:
        raise ValueError("a PagerDuty integration (routing) key has 32 characters")
    return value


class PagerDutyConfig(SinkConfig):
    model_config = ConfigDict(hide_input_in_errors=True)

    type: Literal["pagerduty"] = "pagerduty"
    routing_key: Annotated[SecretStr, AfterValidator(_routing_key)] = Field(
        description="The Events API v2 integration key of a service or ruleset."
    )
    url: Annotated[str, AfterValidator(check_http_url)] = DEFAULT_URL
    min_severity: Severity = Severity.HIGH
    # PagerDuty accepts about 120 events a minute per integration key; one at a time keeps a
    # group's trigger ahead of its resolve
    rate_per_s: float | None = Field(default=2.0, gt=0)
    concurrency: int = Field(default=1, ge=1, le=64)
    client: str = Field(default="qcdr", max_length=100, description="Shown in PagerDuty as the sender.")
    batch_size: int = Field(default=1, ge=1, le=1)


def dedup_key(group_key: str) -> str:
    if len(group_key) <= DEDUP_MAX:
        return group_key
    return "qcdr:" + hashlib.sha256(group_key.encode()).hexdigest()


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _present(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in (None, "", [], {})}


class PagerDutySink(JsonHttpSink[PagerDutyConfig]):
    sink_type = "pagerduty"
    config_model = PagerDutyConfig

    def endpoint(self) -> str:
        return self.config.url

    def render(self, message: OutputMessage) -> dict[str, Any]:
        event: dict[str, Any] = {
            "routing_key": self.config.routing_key.get_secret_value(),
            "dedup_key": dedup_key(message.group_key),
            "event_action": "resolve" if message.kind is MessageKind.RESOLVE else "trigger",
        }
        if message.kind is MessageKind.RESOLVE:
            return event  # PagerDuty ignores a payload on resolve
        f, w = message.finding, message.finding.workload
        cluster = w.cluster or message.cluster_id
        summary = ("[TEST] " if message.kind is MessageKind.TEST else "") + message.summary()
        details = _present(
            {
                "kind": message.kind.value,
                "delivery_id": message.id,
                "group_key": message.group_key,
                "count": message.count,
                "finding_id": f.id,
                "finding_ids": list(message.finding_ids[:20]),
                "finding_kind": f.kind.value,
                "detector": f.detector,
                "techniques": list(f.techniques),
                "explanation": _clip(f.explanation, TEXT_MAX),
                "first_seen": message.first_seen.isoformat(),
                "last_seen": message.last_seen.isoformat(),
                "workload": w.model_dump(mode="json", exclude_none=True),
                "process": f.process.model_dump(mode="json", exclude_none=True) if f.process else None,
                "network": f.network.model_dump(mode="json", exclude_none=True) if f.network else None,
                "evidence_event_ids": list(f.evidence_event_ids[:20]),
            }
        )
        attributes = orjson.dumps(f.attributes)
        if f.attributes and len(attributes) <= 16 * 1024:  # the event must stay well under 512 KB
            details["attributes"] = f.attributes
        event["payload"] = _present(
            {
                "summary": _clip(summary, SUMMARY_MAX),
                "source": "/".join(p for p in (cluster, w.namespace, w.pod) if p) or "qcdr",
                "severity": SEVERITY[message.severity],
                "timestamp": message.last_seen.isoformat(),
                "component": w.container or w.owner_name or (f.process.name if f.process else None),
                "group": w.namespace or cluster,
                "class": f.category,
                "custom_details": details,
            }
        )
        event["client"] = self.config.client
        if message.link:
            event["client_url"] = message.link
            event["links"] = [{"href": message.link, "text": "Open in qcdr"}]
        return event

    def read(self, response: httpx.Response, message: OutputMessage) -> Outcome:
        outcome = classify(response)
        if response.status_code == 202:
            return Outcome(outcome.status, f"202 dedup_key={dedup_key(message.group_key)}")
        return outcome

    def describe(self) -> str:
        where = redact_url(self.config.url)
        return f"pagerduty → {where} (routing key ***, min severity {self.config.min_severity})"


SINKS.add("pagerduty", PagerDutySink, __name__)
