"""A Slack incoming-webhook server on 127.0.0.1 (``SlackServer``).

``POST /services/<team>/<service>/<token>`` with ``Content-Type: application/json``. Answers as
Slack's incoming webhooks do, in plain text: 200 ``ok``; 400 ``invalid_payload`` (not JSON, not an
object, another content type), ``no_text`` (no ``text``, ``blocks`` or ``attachments``),
``invalid_blocks`` (see below), ``too_many_attachments`` (over 100); 403 ``invalid_token`` (right
team and service, wrong token); 404 ``no_service`` (any other path); 404 ``channel_not_found`` and
410 ``channel_is_archived`` (legacy webhooks only, for a ``channel`` override); injected failures
answer 403 ``action_prohibited``, 429 ``rate_limited``, 5xx ``internal_error``.

Block Kit checks (top-level ``blocks`` and each attachment's ``blocks``): a list of at most 50
objects of a known ``type``; ``block_id`` at most 255 characters and unique in the message;
``header`` text plain_text, 1..150 characters; ``section`` text 1..3000 characters or 1..10
``fields`` of at most 2000; ``context`` 1..10 elements; ``actions`` 1..25 elements, buttons with
plain_text text of at most 75 characters and a ``url`` of at most 3000; text objects ``plain_text``
or ``mrkdwn``. Attachment colours are ``good``/``warning``/``danger`` or ``#rrggbb``.

Channel overrides: app webhooks (``legacy=False``, Slack's current kind) ignore ``channel``,
``username`` and ``icon_*`` and post to the webhook's own channel; legacy webhooks honour them
(the channel must be one of ``channels``, and not in ``archived``). ``Received.meta["channel"]``
says where a message went. The unique key is the first top-level block's ``block_id`` (Slack
itself does not deduplicate; qcdr's sink puts its delivery id there).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from qcdr_common.testing.sinks.webhook import INVALID_JSON, Answer, HttpSinkServer, Incoming

BLOCK_TYPES = frozenset(
    {"section", "header", "divider", "context", "actions", "image", "rich_text", "input", "file", "video"}
)
_COLOUR = re.compile(r"^(good|warning|danger|#[0-9a-fA-F]{6})$")
_ERRORS = {
    403: "action_prohibited",
    404: "channel_not_found",
    410: "channel_is_archived",
    429: "rate_limited",
}


class BlockError(ValueError):
    pass


def _text(obj: Any, where: str, limit: int, *, plain_only: bool = False) -> None:
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
        raise BlockError(f"{where}: not a text object")
    if plain_only and obj["type"] != "plain_text":
        raise BlockError(f"{where}: must be plain_text")
    text = obj.get("text")
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        raise BlockError(f"{where}: text must be 1..{limit} characters")


def _button(element: Any, where: str) -> None:
    if not isinstance(element, dict) or element.get("type") != "button":
        return  # other interactive elements are not checked
    _text(element.get("text"), f"{where}.text", 75, plain_only=True)
    url = element.get("url")
    if url is not None and (not isinstance(url, str) or len(url) > 3000):
        raise BlockError(f"{where}.url: at most 3000 characters")
    if len(str(element.get("action_id", ""))) > 255:
        raise BlockError(f"{where}.action_id: at most 255 characters")


def check_blocks(blocks: Any, where: str, seen_ids: set[str]) -> None:
    """Raise ``BlockError`` for what Slack refuses with ``invalid_blocks``."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        raise BlockError(f"{where}: a list of at most 50 blocks")
    for i, block in enumerate(blocks):
        at = f"{where}[{i}]"
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            raise BlockError(f"{at}: unknown block type")
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not 1 <= len(block_id) <= 255 or block_id in seen_ids:
                raise BlockError(f"{at}.block_id: 1..255 characters and unique in the message")
            seen_ids.add(block_id)
        kind = block["type"]
        if kind == "header":
            _text(block.get("text"), f"{at}.text", 150, plain_only=True)
        elif kind == "section":
            fields = block.get("fields")
            if "text" in block:
                _text(block["text"], f"{at}.text", 3000)
            elif not fields:
                raise BlockError(f"{at}: a section needs text or fields")
            if fields is not None:
                if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                    raise BlockError(f"{at}.fields: 1..10 text objects")
                for j, f in enumerate(fields):
                    _text(f, f"{at}.fields[{j}]", 2000)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                raise BlockError(f"{at}.elements: 1..10 elements")
            for j, e in enumerate(elements):
                if not (isinstance(e, dict) and e.get("type") == "image"):
                    _text(e, f"{at}.elements[{j}]", 3000)
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                raise BlockError(f"{at}.elements: 1..25 elements")
            for j, e in enumerate(elements):
                _button(e, f"{at}.elements[{j}]")


class SlackServer(HttpSinkServer):
    name = "slack"

    def __init__(
        self,
        *,
        team: str = "T00000001",
        service: str = "B00000001",
        token: str = "XXXXXXXXXXXXXXXXXXXXXXXX",
        legacy: bool = False,
        default_channel: str = "#security-alerts",
        channels: Iterable[str] = ("#security-alerts",),
        archived: Iterable[str] = (),
        record_bodies: bool = True,
    ) -> None:
        super().__init__(record_bodies=record_bodies)
        self.team, self.service, self.token = team, service, token
        self.path = f"/services/{team}/{service}/{token}"
        self.legacy = legacy
        self.default_channel = default_channel
        self.channels = {default_channel, *channels}
        self.archived = set(archived)

    def key_of(self, request: Incoming) -> str | None:
        blocks = request.json.get("blocks") if isinstance(request.json, dict) else None
        if isinstance(blocks, list) and blocks and isinstance(blocks[0], dict):
            block_id = blocks[0].get("block_id")
            return block_id if isinstance(block_id, str) else None
        return None

    def error_body(self, status: int) -> tuple[bytes | str, str]:
        return _ERRORS.get(status, "internal_error" if status >= 500 else "invalid_payload"), "text/html"

    @staticmethod
    def _no(status: int, error: str) -> Answer:
        return Answer(status, error, "text/html")

    def check(self, request: Incoming) -> Answer:
        if request.path != self.path:
            prefix = f"/services/{self.team}/{self.service}/"
            return (
                self._no(403, "invalid_token")
                if request.path.startswith(prefix)
                else self._no(404, "no_service")
            )
        if request.method != "POST":
            return self._no(405, "invalid_method")
        body = request.json
        if request.content_type != "application/json" or body is INVALID_JSON or not isinstance(body, dict):
            return self._no(400, "invalid_payload")
        if not body.get("text") and not body.get("blocks") and not body.get("attachments"):
            return self._no(400, "no_text")
        seen: set[str] = set()
        try:
            if "blocks" in body:
                check_blocks(body["blocks"], "blocks", seen)
            attachments = body.get("attachments", [])
            if not isinstance(attachments, list):
                return self._no(400, "invalid_attachments")
            if len(attachments) > 100:
                return self._no(400, "too_many_attachments")
            for i, attachment in enumerate(attachments):
                if not isinstance(attachment, dict):
                    return self._no(400, "invalid_attachments")
                colour = attachment.get("color")
                if colour is not None and not (isinstance(colour, str) and _COLOUR.match(colour)):
                    return self._no(400, "invalid_attachments")
                if "blocks" in attachment:
                    check_blocks(attachment["blocks"], f"attachments[{i}].blocks", seen)
        except BlockError as exc:
            return Answer(400, "invalid_blocks", "text/html", meta={"reason": str(exc)})
        channel = self.default_channel
        if self.legacy and body.get("channel"):
            channel = str(body["channel"])
            if channel in self.archived:
                return self._no(410, "channel_is_archived")
            if channel not in self.channels:
                return self._no(404, "channel_not_found")
        return Answer(200, "ok", "text/html", meta={"channel": channel})
