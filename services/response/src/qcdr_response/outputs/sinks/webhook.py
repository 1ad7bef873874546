"""Generic webhook: one JSON POST per message, signed and replay-safe, and ``JsonHttpSink``, the
one-JSON-POST-per-message sink that Slack, Teams and PagerDuty specialise.

Body: ``{version, delivery_id, kind, sink, group_key, count, severity, summary, cluster_id,
first_seen, last_seen, created_at, link, finding_ids, finding}`` (``finding`` is the full Finding).
Headers: ``X-Qcdr-Delivery: <delivery id>`` (the same on every retry: receivers deduplicate on it),
``X-Qcdr-Timestamp: <unix seconds of this attempt>`` and, with a ``secret``, ``X-Qcdr-Signature:
sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">``: a receiver that checks the signature and
refuses timestamps older than a few minutes cannot be fed a captured request again later.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import AfterValidator, ConfigDict, Field, SecretStr, field_validator
from qcdr_common.secret_text import scrub, url_secrets
from qcdr_common.tls_files import ca_context

from qcdr_response.outputs.base import C, Outcome, Sink, SinkConfig, Status
from qcdr_response.outputs.http import classify, failure, make_client, redact_url
from qcdr_response.outputs.message import OutputMessage
from qcdr_response.outputs.registry import SINKS
from qcdr_response.outputs.tls import CaFile

USER_AGENT = "qcdr-outputs/1"
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_RESERVED = frozenset({"content-type", "content-length", "host", "transfer-encoding", "connection"})


def check_http_url(value: str) -> str:
    """An absolute http(s) URL with a host; the error never repeats the (possibly secret) URL."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


def _secret_http_url(value: SecretStr) -> SecretStr:
    check_http_url(value.get_secret_value())
    return value


SecretHttpUrl = Annotated[SecretStr, AfterValidator(_secret_http_url)]


class JsonHttpSink(Sink[C]):
    """POST one JSON body per message and classify the answer; subclasses say where (``endpoint``),
    what (``render``) and, if they must, which extra headers and how to read the answer."""

    def __init__(self, config: C) -> None:
        super().__init__(config)
        self._http: httpx.AsyncClient | None = None

    @abstractmethod
    def endpoint(self) -> str: ...

    @abstractmethod
    def render(self, message: OutputMessage) -> dict[str, Any]: ...

    def headers(self, message: OutputMessage, body: bytes) -> dict[str, str]:
        return {}

    def secret_values(self) -> list[str]:
        """Secrets sent besides the URL, to be masked if a receiver echoes them."""
        return []

    def read(self, response: httpx.Response, message: OutputMessage) -> Outcome:
        return classify(response)

    def verify(self) -> bool | str:
        return True

    def client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = make_client(self.config.timeout_s, verify=self.verify())
        return self._http

    async def send(self, messages: Sequence[OutputMessage]) -> list[Outcome]:
        return [await self._send_one(message) for message in messages]

    async def _send_one(self, message: OutputMessage) -> Outcome:
        try:
            body = orjson.dumps(self.render(message))
        except Exception as exc:  # a message that cannot be formatted will not format on a retry either
            return Outcome(Status.REJECTED, f"cannot format the message: {type(exc).__name__}: {exc}")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **self.headers(message, body),
        }
        url = self.endpoint()
        try:
            response = await self.client().post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            outcome = failure(exc)
        else:
            outcome = self.read(response, message)
        # Details are logged, stored with dead letters and printed by `qcdr outputs test`, and
        # receivers echo what they were sent ("Cannot POST /services/T000/B000/<secret>").
        detail = scrub(
            outcome.detail.replace(url, redact_url(url)), [*url_secrets(url), *self.secret_values()]
        )
        if detail != outcome.detail:
            outcome = Outcome(outcome.status, detail, outcome.retry_after_s)
        return outcome

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config.name}: {self.describe()}>"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 of ``"<timestamp>.<body>"``: what ``X-Qcdr-Signature`` carries."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookConfig(SinkConfig):
    # a validation error must not echo the (secret) value it refused
    model_config = ConfigDict(hide_input_in_errors=True)

    type: Literal["webhook"] = "webhook"
    url: SecretHttpUrl = Field(description="Where to POST; secret, since such URLs often carry a token.")
    secret: SecretStr | None = Field(default=None, description="HMAC key for X-Qcdr-Signature.")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="Extra headers (values secret).")
    verify_tls: bool = True
    ca_file: CaFile | None = Field(default=None, description="CA bundle for a private receiver.")
    batch_size: int = Field(default=1, ge=1, le=1)

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, header_value in value.items():
            lower = name.lower()
            if not _TOKEN.fullmatch(name) or lower in _RESERVED or lower.startswith("x-qcdr-"):
                raise ValueError(f"header {name!r} is not a valid name or is set by qcdr itself")
            if any(c in header_value.get_secret_value() for c in "\r\n"):
                raise ValueError(f"header {name!r}: line breaks are not allowed in values")
        return value


class WebhookSink(JsonHttpSink[WebhookConfig]):
    sink_type = "webhook"
    config_model = WebhookConfig

    def __init__(self, config: WebhookConfig, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(config)
        self._clock = clock

    def endpoint(self) -> str:
        return self.config.url.get_secret_value()

    def verify(self) -> bool | str:
        return self.config.verify_tls

    def client(self) -> httpx.AsyncClient:
        if self._http is None and self.config.verify_tls and self.config.ca_file is not None:
            # httpx deprecated verify=<path> (make_client takes bool | str): pass a context instead
            context = ca_context(self.config.ca_file)
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.config.timeout_s), trust_env=False, verify=context
            )
        return super().client()

    def render(self, message: OutputMessage) -> dict[str, Any]:
        return {
            "version": 1,
            "delivery_id": message.id,
            "kind": message.kind.value,
            "sink": message.sink,
            "group_key": message.group_key,
            "count": message.count,
            "severity": message.severity,
            "summary": message.summary(),
            "cluster_id": message.cluster_id,
            "first_seen": message.first_seen.isoformat(),
            "last_seen": message.last_seen.isoformat(),
            "created_at": message.created_at.isoformat(),
            "link": message.link,
            "finding_ids": list(message.finding_ids),
            "finding": message.finding.model_dump(mode="json"),
        }

    def headers(self, message: OutputMessage, body: bytes) -> dict[str, str]:
        stamp = int(self._clock())
        headers = {k: v.get_secret_value() for k, v in self.config.headers.items()}
        headers["X-Qcdr-Delivery"] = message.id
        headers["X-Qcdr-Timestamp"] = str(stamp)
        if self.config.secret is not None:
            headers["X-Qcdr-Signature"] = signature(self.config.secret.get_secret_value(), stamp, body)
        return headers

    def secret_values(self) -> list[str]:
        values = [v.get_secret_value() for v in self.config.headers.values()]
        return values + ([self.config.secret.get_secret_value()] if self.config.secret is not None else [])

    def describe(self) -> str:
        signed = "signed" if self.config.secret is not None else "unsigned"
        extra = f", headers {sorted(self.config.headers)}" if self.config.headers else ""
        return f"webhook → {redact_url(self.endpoint())} ({signed}{extra})"


SINKS.add("webhook", WebhookSink, __name__)
