"""An Elasticsearch ``_bulk`` endpoint on 127.0.0.1 (``POST /_bulk`` and ``POST /{index}/_bulk``) that
stores documents by index and ``_id`` and answers like Elasticsearch 8:

- auth: an API key (``Authorization: ApiKey <base64 id:key>``) or basic credentials, whichever the
  double was made with; missing or wrong → 401 ``security_exception`` with ``WWW-Authenticate``;
- ``Content-Type`` must be ``application/x-ndjson`` or ``application/json`` → else 406;
- strict NDJSON: a body not ending in ``\\n`` → 400 "The bulk request must be terminated by a
  newline [\\n]"; an action line that is not one of ``index``/``create``/``delete``/``update`` with
  an object → 400; no index in the line nor the path → 400; an empty body → 400;
- per item: ``index`` creates (201) or overwrites (200, ``_version`` + 1); ``create`` on an existing
  ``_id`` → 409 ``version_conflict_engine_exception``; data streams (``data_streams=``) take only
  ``create`` and need ``@timestamp`` → 400 items otherwise; a source that is not an object or an
  invalid index name → 400 item.
- ``fail_items(status, every=3)`` fails every 3rd item from now on (``times=`` limits how many) with
  ES's error type for that status, without storing it; ``fail_next``/``hang_next`` act on whole
  requests (see ``_siem_http``).

    with serve_elasticsearch(api_key="...") as es:
        es.url; es.documents("security-events"); es.unique_keys; es.fail_items(429, every=3)
"""

from __future__ import annotations

import base64
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

_ITEM_ERRORS = {
    400: "mapper_parsing_exception",
    404: "index_not_found_exception",
    409: "version_conflict_engine_exception",
    429: "es_rejected_execution_exception",
    500: "internal_server_error",
    503: "unavailable_shards_exception",
}


def _error(status: int, kind: str, reason: str, headers: dict[str, str] | None = None) -> Response:
    cause = {"type": kind, "reason": reason}
    body = {"error": {"root_cause": [cause], **cause}, "status": status}
    return JSONResponse(body, status_code=status, headers=headers)


class BulkError(Exception):
    def __init__(self, reason: str, kind: str = "illegal_argument_exception") -> None:
        super().__init__(reason)
        self.reason, self.kind = reason, kind


class ElasticsearchServer:
    def __init__(
        self,
        *,
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        data_streams: tuple[str, ...] = (),
    ) -> None:
        self.api_key, self.username, self.password = api_key, username, password
        self.data_streams = set(data_streams)
        self.url = ""
        self.faults = Faults()
        self.requests = 0
        self.received: list[ReceivedRequest] = []
        self._docs: dict[str, dict[str, dict[str, Any]]] = {}
        self._versions: dict[tuple[str, str], int] = {}
        self._accepted_ids: list[str] = []
        self._item_fault: tuple[int, int, int | None] | None = None  # status, every, remaining
        self._item_counter = 0
        self._lock = threading.Lock()
        self.app = self._build()

    # --- the programmable side -----------------------------------------------------------------

    def fail_next(
        self, n: int = 1, status: int = 503, retry_after: float | None = None, body: Any = None
    ) -> None:
        """Answer the next ``n`` requests ``status`` with ES's error body for it (or ``body``)."""
        self.faults.fail_next(n, status, retry_after, body)

    def hang_next(self, n: int = 1, seconds: float = 5.0) -> None:
        self.faults.hang_next(n, seconds)

    def fail_items(self, status: int = 429, *, every: int = 3, times: int | None = None) -> None:
        """Fail every ``every``-th bulk item from now on with ``status`` (``times`` of them at most)."""
        with self._lock:
            self._item_fault = (status, every, times)
            self._item_counter = 0

    def stop_failing_items(self) -> None:
        with self._lock:
            self._item_fault = None

    def documents(self, index: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._docs.get(index, {}))

    @property
    def unique_keys(self) -> set[str]:
        """The ``_id`` of every document stored (indexed or created), over all indexes."""
        with self._lock:
            return set(self._accepted_ids)

    @property
    def accepted_items(self) -> int:
        """Items stored, repeats of the same ``_id`` included."""
        with self._lock:
            return len(self._accepted_ids)

    # --- the Elasticsearch side ------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if self.api_key is not None and scheme == "ApiKey":
            return value == self.api_key
        if self.username is not None and scheme == "Basic":
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except ValueError:
                return False
            return (user, password) == (self.username, self.password)
        return self.api_key is None and self.username is None and not header

    def _parse(self, body: bytes, path_index: str | None) -> list[tuple[str, dict[str, Any], Any]]:
        if not body:
            raise BulkError("Validation Failed: 1: no requests added;", "action_request_validation_exception")
        if not body.endswith(b"\n"):
            raise BulkError("The bulk request must be terminated by a newline [\\n]")
        lines = body[:-1].split(b"\n")
        ops: list[tuple[str, dict[str, Any], Any]] = []
        i = 0
        while i < len(lines):
            if not lines[i].strip():
                i += 1
                continue
            try:
                action = json.loads(lines[i])
            except ValueError:
                raise BulkError(f"Malformed action/metadata line [{i + 1}], expected START_OBJECT") from None
            if not isinstance(action, dict) or len(action) != 1:
                raise BulkError(
                    f"Malformed action/metadata line [{i + 1}], expected a simple value for field"
                )
            op, meta = next(iter(action.items()))
            if op not in ("index", "create", "update", "delete") or not isinstance(meta, dict):
                raise BulkError(
                    f"Malformed action/metadata line [{i + 1}], expected one of [create, "
                    f"delete, index, update] but found [{op}]"
                )
            meta = {**meta, "_index": meta.get("_index") or path_index}
            if not meta["_index"]:
                raise BulkError(
                    "Validation Failed: 1: index is missing;", "action_request_validation_exception"
                )
            if op == "delete":
                ops.append((op, meta, None))
                i += 1
                continue
            if i + 1 >= len(lines):
                raise BulkError(f"The bulk request must be terminated by a newline [\\n] (line {i + 1})")
            try:
                source = json.loads(lines[i + 1])
            except ValueError:
                source = ValueError("failed to parse")
            ops.append((op, meta, source))
            i += 2
        if not ops:
            raise BulkError("Validation Failed: 1: no requests added;", "action_request_validation_exception")
        return ops

    def _apply(self, op: str, meta: dict[str, Any], source: Any) -> dict[str, Any]:
        index, doc_id = str(meta["_index"]), str(meta.get("_id") or uuid.uuid4().hex[:20])
        item: dict[str, Any] = {"_index": index, "_id": doc_id}

        def fail(status: int, reason: str, kind: str | None = None) -> dict[str, Any]:
            return {
                **item,
                "status": status,
                "error": {"type": kind or _ITEM_ERRORS.get(status, "status_exception"), "reason": reason},
            }

        if self._item_fault is not None:
            status, every, remaining = self._item_fault
            self._item_counter += 1
            if self._item_counter % every == 0 and (remaining is None or remaining > 0):
                self._item_fault = (status, every, None if remaining is None else remaining - 1)
                return fail(status, "injected failure")
        if op not in ("index", "create"):
            return fail(
                400, f"operation [{op}] is not supported by this double", "illegal_argument_exception"
            )
        if index != index.lower() or index[0] in "-_+" or any(c in index for c in '\\/*?"<>| ,#:'):
            return fail(400, f"Invalid index name [{index}]", "invalid_index_name_exception")
        if not isinstance(source, dict):
            return fail(400, "failed to parse: the document is not a JSON object")
        if index in self.data_streams:
            if op != "create":
                return fail(
                    400,
                    "only write ops with an op_type of create are allowed in data streams",
                    "illegal_argument_exception",
                )
            if "@timestamp" not in source:
                return fail(
                    400, "data stream timestamp field [@timestamp] is missing", "document_parsing_exception"
                )
        docs = self._docs.setdefault(index, {})
        if op == "create" and doc_id in docs:
            version = self._versions[(index, doc_id)]
            return fail(
                409, f"[{doc_id}]: version conflict, document already exists (current version [{version}])"
            )
        version = self._versions.get((index, doc_id), 0) + 1
        created = doc_id not in docs
        docs[doc_id] = source
        self._versions[(index, doc_id)] = version
        self._accepted_ids.append(doc_id)
        return {
            **item,
            "_version": version,
            "result": "created" if created else "updated",
            "_shards": {"total": 1, "successful": 1, "failed": 0},
            "status": 201 if created else 200,
        }

    def _build(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        async def bulk(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                self.requests += 1
            fault = self.faults.take()
            if fault is not None and fault.status is not None:
                if fault.body is not None:
                    return JSONResponse(fault.body, fault.status, retry_after_headers(fault))
                kind = _ITEM_ERRORS.get(fault.status, "status_exception")
                return _error(fault.status, kind, "injected failure", retry_after_headers(fault))
            if not self._authorized(request):
                reason = f"missing authentication credentials for REST request [{request.url.path}]"
                return _error(
                    401, "security_exception", reason, {"WWW-Authenticate": 'ApiKey, Basic realm="security"'}
                )
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type not in ("application/x-ndjson", "application/json"):
                return JSONResponse(
                    {"error": f"Content-Type header [{content_type}] is not supported", "status": 406}, 406
                )
            try:
                ops = self._parse(body, request.path_params.get("index"))
            except BulkError as exc:
                return _error(400, exc.kind, exc.reason)
            with self._lock:
                items = [{op: self._apply(op, meta, source)} for op, meta, source in ops]
                headers = {k.lower(): v for k, v in request.headers.items()}
                self.received.append(ReceivedRequest(request.url.path, headers, body, items))
            await hang(fault)
            errors = any(next(iter(i.values()))["status"] >= 300 for i in items)
            return JSONResponse({"took": 1, "errors": errors, "items": items})

        app.add_api_route("/_bulk", bulk, methods=["POST", "PUT"], include_in_schema=False)
        app.add_api_route("/{index}/_bulk", bulk, methods=["POST", "PUT"], include_in_schema=False)
        return app


@contextmanager
def serve_elasticsearch(
    *,
    api_key: str | None = None,
    username: str | None = None,
    password: str | None = None,
    data_streams: tuple[str, ...] = (),
    fast: bool = False,
) -> Iterator[ElasticsearchServer]:
    """Run the double until the block ends; ``server.url`` is its base URL."""
    server = ElasticsearchServer(
        api_key=api_key, username=username, password=password, data_streams=data_streams
    )
    with serve_app(server.app, name="elasticsearch-double", fast=fast) as url:
        server.url = url
        yield server
