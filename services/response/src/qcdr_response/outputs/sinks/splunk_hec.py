"""Splunk HTTP Event Collector: a batch is one POST to ``/services/collector/event`` whose body is
the events' JSON objects one after another (``Authorization: Splunk <token>``).

With ``ack: true`` (indexer acknowledgement on the token) every request carries this sink's channel
(``X-Splunk-Request-Channel``), HEC answers with an ``ackId``, and the batch is delivered only once
``/services/collector/ack`` says that id was indexed; unconfirmed within ``ack_timeout_s`` it is
``unknown`` (sent, maybe indexed): the worker sends it again with the same delivery ids.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr, field_validator

from qcdr_response.outputs.base import Outcome, Sink, SinkConfig, Status
from qcdr_response.outputs.http import classify, failure, make_client, redact_url
from qcdr_response.outputs.message import OutputMessage
from qcdr_response.outputs.registry import SINKS
from qcdr_response.outputs.sinks._siem_event import dumps, event_document
from qcdr_response.outputs.tls import CaFile

_SUFFIXES = ("/services/collector/event/1.0", "/services/collector/event", "/services/collector")


class SplunkHecConfig(SinkConfig):
    type: Literal["splunk_hec"] = "splunk_hec"
    url: str = Field(
        pattern=r"^https?://",
        description="HEC base URL (env SPLUNK_HEC_URL), e.g. https://splunk:8088; a URL ending in "
        "/services/collector or /services/collector/event is accepted too.",
    )
    token: SecretStr = Field(description="HEC token (env SPLUNK_HEC_TOKEN).")
    index: str = Field(default="main", min_length=1)
    sourcetype: str = Field(default="qualys:crs", min_length=1)
    source: str = Field(default="qcdr", min_length=1)
    host: str | None = Field(default=None, description="Event host; default: the finding's cluster.")
    batch_size: int = Field(default=100, ge=1, le=10_000)
    ack: bool = Field(default=False, description="Wait for indexer acknowledgement of each batch.")
    ack_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    ack_poll_interval_s: float = Field(default=2.0, gt=0, le=60)
    verify_tls: bool = True
    ca_file: CaFile | None = Field(default=None, description="PEM bundle to verify the HEC certificate.")

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = value.rstrip("/")
        for suffix in _SUFFIXES:
            if value.endswith(suffix):
                return value[: -len(suffix)]
        return value


class SplunkHecSink(Sink[SplunkHecConfig]):
    sink_type = "splunk_hec"
    config_model = SplunkHecConfig

    def __init__(self, config: SplunkHecConfig) -> None:
        super().__init__(config)
        self.channel = str(uuid.uuid4())  # one channel per sink instance, as HEC expects
        self._client = make_client(config.timeout_s, verify=config.ca_file or config.verify_tls)

    def __repr__(self) -> str:
        return f"SplunkHecSink({self.describe()})"

    def describe(self) -> str:
        c = self.config
        ack = ", ack" if c.ack else ""
        return f"splunk_hec {redact_url(c.url)} index={c.index} sourcetype={c.sourcetype}{ack}"

    async def aclose(self) -> None:
        await self._client.aclose()

    def event(self, message: OutputMessage) -> dict[str, Any]:
        return {
            "time": round(message.last_seen.timestamp(), 3),
            "host": self.config.host or message.finding.workload.cluster or message.cluster_id,
            "source": self.config.source,
            "sourcetype": self.config.sourcetype,
            "index": self.config.index,
            "event": event_document(message),
        }

    def _headers(self) -> dict[str, str]:
        headers = {
            "Authorization": f"Splunk {self.config.token.get_secret_value()}",
            "Content-Type": "application/json",
            "User-Agent": "qcdr-outputs/1",
        }
        if self.config.ack:
            headers["X-Splunk-Request-Channel"] = self.channel
        return headers

    async def send(self, messages: Sequence[OutputMessage]) -> list[Outcome]:
        n = len(messages)
        if n == 0:
            return []
        body = b"\n".join(dumps(self.event(m)) for m in messages)
        try:
            response = await self._client.post(
                f"{self.config.url}/services/collector/event", content=body, headers=self._headers()
            )
        except httpx.HTTPError as exc:
            return [failure(exc)] * n
        if response.status_code == 400:
            return _bad_request(response, n)
        outcome = classify(response)
        if outcome.status is not Status.DELIVERED or not self.config.ack:
            return [outcome] * n
        ack_id = _json(response).get("ackId")
        if not isinstance(ack_id, int):
            # accepted, but the token has acknowledgement off: retrying would only duplicate
            return [
                Outcome(Status.DELIVERED, "accepted without an ackId (acknowledgement off on the token)")
            ] * n
        return [await self._await_ack(ack_id)] * n

    async def _await_ack(self, ack_id: int) -> Outcome:
        deadline = time.monotonic() + self.config.ack_timeout_s
        last = "no answer"
        while True:
            try:
                response = await self._client.post(
                    f"{self.config.url}/services/collector/ack",
                    json={"acks": [ack_id]},
                    headers=self._headers(),
                )
                if response.status_code == 200:
                    acks = _json(response).get("acks")
                    if isinstance(acks, dict) and acks.get(str(ack_id)) is True:
                        return Outcome(Status.DELIVERED, f"indexed (ackId {ack_id})")
                    last = "not indexed yet"
                else:
                    # an ack query failing says nothing about the batch: keep asking until the deadline
                    last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + self.config.ack_poll_interval_s > deadline:
                return Outcome(
                    Status.UNKNOWN,
                    f"sent, ackId {ack_id} unconfirmed after {self.config.ack_timeout_s:g} s ({last})",
                )
            await asyncio.sleep(self.config.ack_poll_interval_s)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _bad_request(response: httpx.Response, n: int) -> list[Outcome]:
    """HEC reads a batch in order and names the first event it refused (``invalid-event-number``):
    that one is rejected, the ones after it were never read (retry), and the ones before it may have
    been indexed (unknown: sent again with the same ids, so a duplicate is recognisable)."""
    detail = f"HTTP 400: {response.text[:300]}"
    bad = _json(response).get("invalid-event-number")
    if not isinstance(bad, int) or not 0 <= bad < n:
        return [Outcome(Status.REJECTED, detail)] * n
    return (
        [Outcome(Status.UNKNOWN, f"event {bad} of the batch was refused after this one: {detail}")] * bad
        + [Outcome(Status.REJECTED, detail)]
        + [Outcome(Status.RETRY, f"not read: event {bad} of the batch was refused: {detail}")] * (n - bad - 1)
    )


SINKS.add("splunk_hec", SplunkHecSink, __name__)
