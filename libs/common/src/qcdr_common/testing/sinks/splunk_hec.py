"""A Splunk HTTP Event Collector on 127.0.0.1: ``/services/collector/event`` (and ``/services/collector``,
``/services/collector/event/1.0``), ``/services/collector/ack`` and ``/services/collector/health``.

It checks what HEC checks and answers with HEC's status codes and bodies (Splunk docs, "Format
events for HTTP Event Collector" and the HEC error code table):

- ``Authorization: Splunk <token>``: none → 401 code 2, another scheme → 401 code 3, a wrong token
  → 403 code 4;
- the body, a stream of JSON objects one after another: empty → 400 code 5, not JSON objects or a
  field of the wrong type → 400 code 6, no ``event`` → 400 code 12, a blank one → code 13, an index
  not allowed → code 7; every error names the first bad event (``invalid-event-number``) and, like
  HEC reading the stream in order, the events before it are kept;
- with acknowledgement on (``ack=True``): a channel (``X-Splunk-Request-Channel`` or ``?channel=``)
  is required (400 code 10, a non-GUID code 11), success carries an ``ackId`` (counted per
  channel), and ``/ack`` answers ``{"acks": {"<id>": true|false}}``; ``withhold_acks()`` keeps new
  batches unindexed until ``release_acks()``. With ack off, ``/ack`` is 400 code 14.

    with serve_splunk_hec(token="...") as hec:
        hec.url; hec.events (accepted); hec.unique_keys (event.delivery_id); hec.fail_next(2, 503)
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from qcdr_common.testing.asgi_server import serve_app
from qcdr_common.testing.sinks._siem_http import Faults, ReceivedRequest, hang, retry_after_headers

_FAULT_BODIES = {
    400: {"text": "Invalid data format", "code": 6, "invalid-event-number": 0},
    401: {"text": "Token is required", "code": 2},
    403: {"text": "Invalid token", "code": 4},
    500: {"text": "Internal server error", "code": 8},
    503: {"text": "Server is busy", "code": 9},
}


class HecError(Exception):
    def __init__(self, status: int, text: str, code: int, event: int | None = None) -> None:
        super().__init__(text)
        self.status, self.text, self.code, self.event = status, text, code, event

    def response(self) -> Response:
        body: dict[str, Any] = {"text": self.text, "code": self.code}
        if self.event is not None:
            body["invalid-event-number"] = self.event
        return JSONResponse(body, status_code=self.status)


class SplunkHecServer:
    def __init__(self, token: str, *, ack: bool = False, indexes: tuple[str, ...] = ("main",)) -> None:
        self.token = token
        self.ack_enabled = ack
        self.indexes = set(indexes)
        self.url = ""
        self.faults = Faults()
        self.requests = 0  # every request to the event endpoints, failed ones included
        self.received: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        self._next_ack: dict[str, int] = {}
        self._pending_acks: dict[str, dict[int, bool]] = {}
        self._withhold = False
        self.app = self._build()

    # --- the programmable side -----------------------------------------------------------------

    def fail_next(
        self, n: int = 1, status: int = 503, retry_after: float | None = None, body: Any = None
    ) -> None:
        """Answer the next ``n`` requests ``status`` with HEC's body for it (or ``body``)."""
        self.faults.fail_next(n, status, retry_after, body)

    def hang_next(self, n: int = 1, seconds: float = 5.0) -> None:
        self.faults.hang_next(n, seconds)

    def withhold_acks(self) -> None:
        """Batches accepted from now on stay unindexed (``false`` on ``/ack``) until released."""
        with self._lock:
            self._withhold = True

    def release_acks(self) -> None:
        with self._lock:
            self._withhold = False
            for pending in self._pending_acks.values():
                for ack_id in pending:
                    pending[ack_id] = True

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [event for request in self.received for event in request.items]

    @property
    def unique_keys(self) -> set[str]:
        return {
            str(e["event"]["delivery_id"])
            for e in self.events
            if isinstance(e.get("event"), dict) and "delivery_id" in e["event"]
        }

    # --- the HEC side ----------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        header = request.headers.get("authorization")
        if not header:
            raise HecError(401, "Token is required", 2)
        scheme, _, token = header.partition(" ")
        if scheme != "Splunk" or not token:
            raise HecError(401, "Invalid authorization", 3)
        if token.strip() != self.token:
            raise HecError(403, "Invalid token", 4)

    def _channel(self, request: Request) -> str:
        channel = request.headers.get("x-splunk-request-channel") or request.query_params.get("channel")
        if not channel:
            raise HecError(400, "Data channel is missing", 10)
        try:
            uuid.UUID(channel)
        except ValueError:
            raise HecError(400, "Invalid data channel", 11) from None
        return channel

    def _parse(self, body: bytes) -> tuple[list[dict[str, Any]], HecError | None]:
        """The events up to the first bad one, and the error for that one (if any)."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return [], HecError(400, "Invalid data format", 6, 0)
        if not text.strip():
            return [], HecError(400, "No data", 5)
        decoder = json.JSONDecoder()
        events: list[dict[str, Any]] = []
        pos = 0
        while True:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos == len(text):
                return events, None
            n = len(events)
            try:
                event, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                return events, HecError(400, "Invalid data format", 6, n)
            if not isinstance(event, dict):
                return events, HecError(400, "Invalid data format", 6, n)
            if "event" not in event:
                return events, HecError(400, "Event field is required", 12, n)
            if event["event"] in ("", None):
                return events, HecError(400, "Event field cannot be blank", 13, n)
            t = event.get("time")
            if t is not None and (isinstance(t, bool) or not isinstance(t, int | float | str)):
                return events, HecError(400, "Invalid data format", 6, n)
            if isinstance(t, str):
                try:
                    float(t)
                except ValueError:
                    return events, HecError(400, "Invalid data format", 6, n)
            if any(k in event and not isinstance(event[k], str) for k in ("host", "source", "sourcetype")):
                return events, HecError(400, "Invalid data format", 6, n)
            if "index" in event and event["index"] not in self.indexes:
                return events, HecError(400, "Incorrect index", 7, n)
            events.append(event)

    def _build(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        async def collect(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                self.requests += 1
            fault = self.faults.take()
            if fault is not None and fault.status is not None:
                default = {"text": "Error", "code": 8}
                return JSONResponse(
                    fault.body if fault.body is not None else _FAULT_BODIES.get(fault.status, default),
                    status_code=fault.status,
                    headers=retry_after_headers(fault),
                )
            try:
                self._authorize(request)
                channel = self._channel(request) if self.ack_enabled else None
                events, error = self._parse(body)
            except HecError as exc:
                return exc.response()
            with self._lock:
                if events:
                    headers = {k.lower(): v for k, v in request.headers.items()}
                    self.received.append(ReceivedRequest(request.url.path, headers, body, events))
                ack_id = None
                if channel is not None and error is None:
                    ack_id = self._next_ack.get(channel, 0)
                    self._next_ack[channel] = ack_id + 1
                    self._pending_acks.setdefault(channel, {})[ack_id] = not self._withhold
            await hang(fault)
            if error is not None:
                return error.response()
            answer: dict[str, Any] = {"text": "Success", "code": 0}
            if ack_id is not None:
                answer["ackId"] = ack_id
            return JSONResponse(answer)

        async def ack(request: Request) -> Response:
            try:
                self._authorize(request)
                if not self.ack_enabled:
                    raise HecError(400, "ACK is disabled", 14)
                channel = self._channel(request)
                try:
                    ids = json.loads(await request.body())["acks"]
                    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                        raise TypeError
                except (ValueError, KeyError, TypeError):
                    raise HecError(400, "Invalid data format", 6) from None
            except HecError as exc:
                return exc.response()
            with self._lock:
                pending = self._pending_acks.setdefault(channel, {})
                # an id reported indexed is forgotten afterwards, as HEC does
                status = {str(i): pending.get(i, False) for i in ids}
                for i in ids:
                    if pending.get(i):
                        del pending[i]
            return JSONResponse({"acks": status})

        async def health(request: Request) -> Response:
            return JSONResponse({"text": "HEC is healthy", "code": 17})

        for path in ("/services/collector/event", "/services/collector/event/1.0", "/services/collector"):
            app.add_api_route(path, collect, methods=["POST"], include_in_schema=False)
        app.add_api_route("/services/collector/ack", ack, methods=["POST"], include_in_schema=False)
        app.add_api_route("/services/collector/health", health, methods=["GET"], include_in_schema=False)
        return app


@contextmanager
def serve_splunk_hec(
    token: str = "00000000-0000-4000-8000-000000000001",
    *,
    ack: bool = False,
    indexes: tuple[str, ...] = ("main",),
    fast: bool = False,
) -> Iterator[SplunkHecServer]:
    """Run a HEC double until the block ends; ``server.url`` is its base URL."""
    server = SplunkHecServer(token, ack=ack, indexes=indexes)
    with serve_app(server.app, name="splunk-hec-double", fast=fast) as url:
        server.url = url
        yield server
