"""The JSON document that the SIEM sinks (Splunk HEC ``event``, Elasticsearch ``_source``) index:
the message's delivery fields, a few flattened fields SIEM searches key on, and the full finding."""

from __future__ import annotations

from typing import Any

import orjson

from qcdr_response.outputs.message import OutputMessage


def event_document(message: OutputMessage) -> dict[str, Any]:
    document = message.model_dump(mode="json", exclude={"id"})
    finding = message.finding
    return {
        "delivery_id": message.id,  # the idempotency key: the same on every retry
        "title": message.title,
        "summary": message.summary(),
        "severity": message.severity,
        "category": finding.category,
        "techniques": list(finding.techniques),
        **document,
    }


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)
