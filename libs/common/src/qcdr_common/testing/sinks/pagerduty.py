"""A PagerDuty Events API v2 server on 127.0.0.1 (``PagerDutyServer``).

``POST /v2/enqueue`` with a JSON event. Checks what the Events API documents: ``routing_key`` a
32-character string, ``event_action`` one of ``trigger``/``acknowledge``/``resolve``, ``dedup_key``
at most 255 characters (required for acknowledge and resolve); for ``trigger`` a ``payload`` with
``summary`` (1..1024 characters), ``source`` and ``severity`` (``critical``/``error``/``warning``/
``info``), an ISO 8601 ``timestamp`` when given, ``custom_details`` an object, ``links`` objects with
an ``href``, ``images`` objects with a ``src``; at most 512 KB in all.

Answers like PagerDuty: 202 ``{"status": "success", "message": "Event processed", "dedup_key": …}``
(a trigger without a ``dedup_key`` gets a generated one); 400 ``{"status": "invalid event",
"message": "Event object is invalid", "errors": [...]}``; injected 429 ``{"status": "throttle
event", ...}`` and 5xx.

Alerts are kept like PagerDuty keeps them (``server.incidents``): a trigger opens an alert for its
dedup key or is appended to the open one; acknowledge and resolve change an open alert and are
dropped (still 202) when there is none; a trigger after a resolve opens a new alert.
``unique_keys`` counts dedup keys.

ASSUMPTION (not confirmed PagerDuty behaviour): with ``routing_keys`` set, another well-formed key
is answered 400 ``Invalid routing key`` (the real API's answer for an unknown key is not documented).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from qcdr_common.testing.sinks.webhook import Answer, HttpSinkServer, Incoming

SEVERITIES = frozenset({"critical", "error", "warning", "info"})
ACTIONS = frozenset({"trigger", "acknowledge", "resolve"})
MAX_BYTES = 512 * 1024


@dataclass
class Alert:
    dedup_key: str
    status: str  # triggered, acknowledged, resolved
    summary: str
    severity: str
    events: list[dict[str, Any]] = field(default_factory=list)


def _iso8601(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def event_errors(event: Any) -> list[str]:
    """What the Events API would list in ``errors`` for this event (empty when it is valid)."""
    if not isinstance(event, dict):
        return ["Event object is not a JSON object"]
    errors: list[str] = []
    key = event.get("routing_key")
    if not isinstance(key, str):
        errors.append("'routing_key' is missing or blank")
    elif len(key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append("'event_action' is invalid (must be one of trigger, acknowledge, resolve)")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not 1 <= len(dedup) <= 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup:
        errors.append("'dedup_key' is required for acknowledge and resolve events")
    if action != "trigger":
        return errors
    payload = event.get("payload")
    if not isinstance(payload, dict):
        return [*errors, "'payload' is missing or not an object"]
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        errors.append("'payload.summary' is missing or blank")
    elif len(summary) > 1024:
        errors.append("'payload.summary' must be at most 1024 characters")
    if not isinstance(payload.get("source"), str) or not payload["source"].strip():
        errors.append("'payload.source' is missing or blank")
    if payload.get("severity") not in SEVERITIES:
        errors.append("'payload.severity' is invalid (must be one of critical, error, warning, info)")
    if "timestamp" in payload and not _iso8601(payload["timestamp"]):
        errors.append("'payload.timestamp' is not an ISO 8601 timestamp")
    for name in ("component", "group", "class"):
        if name in payload and not isinstance(payload[name], str):
            errors.append(f"'payload.{name}' must be a string")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict | str):
        errors.append("'payload.custom_details' must be an object")
    for name, required in (("links", "href"), ("images", "src")):
        items = event.get(name, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) and i.get(required) for i in items):
            errors.append(f"'{name}' must be a list of objects with '{required}'")
    return errors


class PagerDutyServer(HttpSinkServer):
    name = "pagerduty"
    path = "/v2/enqueue"

    def __init__(self, *, routing_keys: Iterable[str] | None = None, record_bodies: bool = True) -> None:
        super().__init__(record_bodies=record_bodies)
        self.routing_keys = None if routing_keys is None else set(routing_keys)
        self.incidents: dict[str, list[Alert]] = {}  # dedup key -> its alerts, the last one current

    def key_of(self, request: Incoming) -> str | None:
        dedup = request.json.get("dedup_key") if isinstance(request.json, dict) else None
        return dedup if isinstance(dedup, str) else None

    def error_body(self, status: int) -> tuple[bytes | str, str]:
        body: dict[str, Any]
        if status == 429:
            body = {
                "status": "throttle event",
                "message": "Requests for this service are arriving too quickly",
            }
        elif status == 400:
            body = {"status": "invalid event", "message": "Event object is invalid", "errors": ["injected"]}
        else:
            body = {"status": "error", "message": "Internal server error"}
        return orjson.dumps(body), "application/json"

    def open_alert(self, dedup_key: str) -> Alert | None:
        alerts = self.incidents.get(dedup_key)
        return alerts[-1] if alerts and alerts[-1].status != "resolved" else None

    @staticmethod
    def _invalid(errors: list[str], message: str = "Event object is invalid") -> Answer:
        body = {"status": "invalid event", "message": message, "errors": errors}
        return Answer(400, orjson.dumps(body), "application/json")

    def check(self, request: Incoming) -> Answer:
        if request.path != self.path:
            return Answer(404, orjson.dumps({"status": "not found"}), "application/json")
        if request.method != "POST":
            return Answer(405, orjson.dumps({"status": "method not allowed"}), "application/json")
        if len(request.raw) > MAX_BYTES:
            return self._invalid(["Event is larger than 512 KB"])
        if request.content_type != "application/json" or not isinstance(request.json, dict):
            return self._invalid(
                ["Could not parse the request body as a JSON object"], "Could not parse JSON"
            )
        event = request.json
        errors = event_errors(event)
        if not errors and self.routing_keys is not None and event["routing_key"] not in self.routing_keys:
            errors = ["Invalid routing key"]
        if errors:
            return self._invalid(errors)
        dedup = event.get("dedup_key") or uuid.uuid4().hex
        action = event["event_action"]
        current = self.open_alert(dedup)
        effect = "dropped"
        if action == "trigger":
            payload = event["payload"]
            if current is None:
                current = Alert(dedup, "triggered", payload["summary"], payload["severity"])
                self.incidents.setdefault(dedup, []).append(current)
                effect = "opened"
            else:
                current.summary, current.severity = payload["summary"], payload["severity"]
                effect = "appended"
        elif current is not None:
            current.status = "acknowledged" if action == "acknowledge" else "resolved"
            effect = current.status
        if current is not None:
            current.events.append(event)
        body = {"status": "success", "message": "Event processed", "dedup_key": dedup}
        return Answer(202, orjson.dumps(body), "application/json", meta={"effect": effect})
