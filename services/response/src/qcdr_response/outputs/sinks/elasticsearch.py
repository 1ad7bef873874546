"""Elasticsearch ``_bulk``: a batch is one NDJSON request (ending in a newline) with one ``index``
operation per message, ``_id`` = the delivery id, so a retry overwrites instead of duplicating; with
``data_stream: true`` the operation is ``create`` (the only one data streams take) and a 409 "already
exists" for that id means it was delivered before.

Each message's outcome comes from its own item in the response: 2xx delivered, 429 and 5xx retry,
any other 4xx rejected; a whole request answered 429/5xx (or 401/403) is retried as a whole.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
from pydantic import Field, SecretStr, model_validator

from qcdr_response.outputs.base import Outcome, Sink, SinkConfig, Status
from qcdr_response.outputs.http import classify, failure, make_client, redact_url
from qcdr_response.outputs.message import OutputMessage
from qcdr_response.outputs.registry import SINKS
from qcdr_response.outputs.sinks._siem_event import dumps, event_document
from qcdr_response.outputs.tls import CaFile

# Elasticsearch index names: lower case, none of \ / * ? " < > | space , # :, not starting with - _ +
_INDEX = r'^[^-_+A-Z\\/*?"<>| ,#:][^A-Z\\/*?"<>| ,#:]{0,254}$'


class ElasticsearchConfig(SinkConfig):
    type: Literal["elasticsearch"] = "elasticsearch"
    url: str = Field(
        pattern=r"^https?://",
        description="Cluster URL (env ELASTICSEARCH_URL); user:password in it become username/password.",
    )
    index: str = Field(default="security-events", pattern=_INDEX, description="Index or data stream.")
    # (also not "." or "..": not worth a rule, Elasticsearch itself refuses them)
    data_stream: bool = Field(default=False, description="`index` is a data stream: `create` ops.")
    api_key: SecretStr | None = Field(
        default=None, description="The encoded API key (base64 of id:api_key), sent as ApiKey."
    )
    username: str | None = None
    password: SecretStr | None = None
    batch_size: int = Field(default=500, ge=1, le=10_000)
    verify_tls: bool = True
    ca_file: CaFile | None = Field(default=None, description="PEM bundle to verify the cluster certificate.")

    @model_validator(mode="before")
    @classmethod
    def _credentials_out_of_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("url"), str):
            parts = urlsplit(data["url"])
            if parts.username is not None:
                host = parts.hostname or ""
                host = f"[{host}]" if ":" in host else host  # IPv6 literal
                netloc = f"{host}:{parts.port}" if parts.port else host
                data = {**data, "url": urlunsplit(parts._replace(netloc=netloc))}
                data.setdefault("username", unquote(parts.username))
                if parts.password is not None:
                    data.setdefault("password", unquote(parts.password))
        return data

    @model_validator(mode="after")
    def _one_kind_of_auth(self) -> ElasticsearchConfig:
        if self.api_key is not None and self.username is not None:
            raise ValueError("set api_key or username/password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


class ElasticsearchSink(Sink[ElasticsearchConfig]):
    sink_type = "elasticsearch"
    config_model = ElasticsearchConfig

    def __init__(self, config: ElasticsearchConfig) -> None:
        super().__init__(config)
        self._client = make_client(config.timeout_s, verify=config.ca_file or config.verify_tls)
        self._bulk_url = f"{config.url.rstrip('/')}/_bulk"

    def __repr__(self) -> str:
        return f"ElasticsearchSink({self.describe()})"

    def describe(self) -> str:
        c = self.config
        auth = "api_key" if c.api_key else "basic" if c.username else "no auth"
        target = "data stream" if c.data_stream else "index"
        return f"elasticsearch {redact_url(c.url)} {target}={c.index} ({auth})"

    async def aclose(self) -> None:
        await self._client.aclose()

    def body(self, messages: Sequence[OutputMessage]) -> bytes:
        op = "create" if self.config.data_stream else "index"
        lines: list[bytes] = []
        for message in messages:
            lines.append(dumps({op: {"_index": self.config.index, "_id": message.id}}))
            lines.append(dumps({"@timestamp": message.last_seen.isoformat(), **event_document(message)}))
        return b"\n".join(lines) + b"\n"  # _bulk refuses a body without the final newline

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/x-ndjson",
            "Accept": "application/json",
            "User-Agent": "qcdr-outputs/1",
        }
        c = self.config
        if c.api_key is not None:
            headers["Authorization"] = f"ApiKey {c.api_key.get_secret_value()}"
        elif c.username is not None and c.password is not None:
            pair = f"{c.username}:{c.password.get_secret_value()}".encode()
            headers["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
        return headers

    async def send(self, messages: Sequence[OutputMessage]) -> list[Outcome]:
        n = len(messages)
        if n == 0:
            return []
        try:
            response = await self._client.post(
                self._bulk_url, content=self.body(messages), headers=self._headers()
            )
        except httpx.HTTPError as exc:
            return [failure(exc)] * n
        outcome = classify(response)
        if outcome.status is not Status.DELIVERED:
            return [outcome] * n
        try:
            items = response.json()["items"]
        except (ValueError, KeyError, TypeError):
            items = None
        if not isinstance(items, list) or len(items) != n:
            # the request was taken but we cannot tell which documents made it: send them again
            return [Outcome(Status.UNKNOWN, f"unreadable _bulk response: {response.text[:200]}")] * n
        return [_item_outcome(item) for item in items]


def _item_outcome(item: Any) -> Outcome:
    if not isinstance(item, dict) or len(item) != 1:
        return Outcome(Status.UNKNOWN, f"unreadable _bulk item: {str(item)[:200]}")
    op, result = next(iter(item.items()))
    status = result.get("status") if isinstance(result, dict) else None
    if not isinstance(status, int):
        return Outcome(Status.UNKNOWN, f"_bulk item without a status: {str(item)[:200]}")
    if 200 <= status < 300:
        return Outcome(Status.DELIVERED, f"{status} {result.get('result', '')}".strip())
    error = result.get("error")
    reason = f"{error.get('type')}: {error.get('reason')}" if isinstance(error, dict) else str(error)
    detail = f"item {status}: {reason}"[:300]
    if status == 409 and op == "create":
        return Outcome(Status.DELIVERED, f"already there ({detail})")
    if status == 429 or status >= 500:
        return Outcome(Status.RETRY, detail)
    return Outcome(Status.REJECTED, detail)


SINKS.add("elasticsearch", ElasticsearchSink, __name__)
