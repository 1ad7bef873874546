"""The test API server's HTTP layer: Kubernetes REST paths onto the ``Store`` (watches: ``watch.py``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import yaml
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from qcdr_common.testing.k8s import subresources, watch
from qcdr_common.testing.k8s.resources import Discovery, ResourceType, Subresource
from qcdr_common.testing.k8s.selectors import parse_field_selector, parse_label_selector
from qcdr_common.testing.k8s.status import StatusError, bad_request
from qcdr_common.testing.k8s.store import StatusWrite, Store
from qcdr_common.testing.k8s.watch import WatchRequest

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

_CSafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered (for assertions in tests)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    status_code: int
    body: Any = None


def _json(content: Any, status_code: int = 200) -> Response:
    # Exactly "application/json": lightkube only turns error responses into ApiError with that type.
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


def _not_found_resource() -> StatusError:
    return StatusError(404, "NotFound", "the server could not find the requested resource")


@dataclass(frozen=True)
class _Target:
    rt: ResourceType
    namespace: str | None  # None: cluster-scoped, or all namespaces for a namespaced list
    name: str | None
    sub: Subresource | None = None


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


def create_app(
    store: Store,
    discovery: Discovery,
    log: RequestLog,
    server_address: Callable[[], str],
    *,
    bookmark_interval: float = 60.0,
) -> FastAPI:
    app = FastAPI(title="qcdr Kubernetes API test server", openapi_url=None, docs_url=None, redoc_url=None)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def dispatch(path: str, request: Request) -> Response:
        raw = await request.body()
        content_type = (request.headers.get("content-type") or "").split(";")[0].strip() or None
        query = dict(request.query_params)
        body: Any = None
        try:
            if raw:
                body = _parse_body(raw, content_type)
            status, payload = _handle(
                store, discovery, server_address, request, path, query, content_type, body
            )
        except StatusError as failure:
            status, payload = failure.code, failure.status()
        except Exception as exc:  # a bug in the test server: answer like an API server would, and log it
            internal = StatusError(500, "InternalError", f"test server error: {exc!r}")
            status, payload = internal.code, internal.status()
        log.add(RequestRecord(request.method, "/" + path, query, content_type, status, body))
        if isinstance(payload, WatchRequest):
            # exactly "application/json", as the API server labels its watch streams
            events = watch.stream(store, payload, bookmark_interval=bookmark_interval)
            return StreamingResponse(events, media_type="application/json")
        return _json(payload, status)

    return app


def _parse_body(raw: bytes, content_type: str | None) -> Any:
    try:
        if content_type == APPLY:
            return yaml.load(raw, Loader=_CSafeLoader)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"the request body could not be decoded: {exc}") from exc


def _resolve(discovery: Discovery, parts: list[str]) -> _Target | None:
    if parts[0] == "api" and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        return None
    rt = discovery.lookup(group, version, rest[0])
    if rt is None or (namespace is not None and not rt.namespaced):
        return None
    if namespace is None and rt.namespaced and len(rest) > 1:
        return None  # a namespaced kind has no cluster-level object path
    sub = None
    if len(rest) == 3:
        sub = rt.subresource(rest[2])
        if sub is None:
            return None
    return _Target(rt, namespace, rest[1] if len(rest) > 1 else None, sub)


def _handle(
    store: Store,
    discovery: Discovery,
    server_address: Callable[[], str],
    request: Request,
    path: str,
    query: dict[str, str],
    content_type: str | None,
    body: Any,
) -> tuple[int, Any]:
    parts = [p for p in path.split("/") if p]
    method = request.method
    if not parts:
        raise _not_found_resource()
    if _is_discovery(parts):
        if method != "GET":
            raise StatusError(405, "MethodNotAllowed", f"{method} is not supported here")
        discovered = _discovery(discovery, parts, server_address)
        if discovered is None:
            raise _not_found_resource()
        return 200, discovered

    target = _resolve(discovery, parts)
    if target is None:
        raise _not_found_resource()
    rt, namespace, name = target.rt, target.namespace, target.name
    dry_run = _dry_run(query)
    manager = query.get("fieldManager") or _default_manager(request)
    if target.sub is not None and target.sub.name == "status" and name is not None:
        return _status(store, rt, namespace, name, method, query, content_type, body, manager, dry_run)
    if target.sub is not None and name is not None:
        return subresources.handle(
            store, discovery, rt, target.sub, namespace, name, method, content_type, body, manager, dry_run
        )
    if name is None:
        labels = parse_or_400(parse_label_selector, query.get("labelSelector", ""))
        field_reqs = parse_or_400(parse_field_selector, query.get("fieldSelector", ""))
        if method == "GET":
            if query.get("watch", "").lower() in ("true", "1"):
                current = int(store.resource_version)
                return 200, watch.parse_watch(query, rt, namespace, labels, field_reqs, current)
            items, rv = store.list_objects(rt, namespace, labels, field_reqs)
            return 200, _list_body(rt, items, rv, query)
        if method == "POST" and (namespace is not None or not rt.namespaced):
            return 201, store.create(rt, namespace, body, manager, dry_run=dry_run)
        if method == "DELETE" and (namespace is not None or not rt.namespaced):
            items = store.delete_collection(rt, namespace, labels, field_reqs, dry_run=dry_run)
            return 200, _list_body(rt, items, store.resource_version, {})
        raise StatusError(405, "MethodNotAllowed", f"{method} is not supported on a collection here")
    if method == "GET":
        return 200, store.get(rt, namespace, name)
    if method == "PUT":
        return 200, store.replace(rt, namespace, name, body, manager, dry_run=dry_run)
    if method == "DELETE":
        return 200, store.delete(rt, namespace, name, dry_run=dry_run)
    if method == "PATCH":
        return _patch(store, rt, namespace, name, query, content_type, body, manager, dry_run)
    raise StatusError(405, "MethodNotAllowed", f"{method} is not supported here")


def _status(
    store: Store,
    rt: ResourceType,
    namespace: str | None,
    name: str,
    method: str,
    query: dict[str, str],
    content_type: str | None,
    body: Any,
    manager: str,
    dry_run: bool,
) -> tuple[int, Any]:
    """``.../{name}/status``: GET is the whole object; writes change only its status."""
    if method == "GET":
        return 200, store.get(rt, namespace, name)
    how: StatusWrite
    if method == "PUT":
        how = "update"
    elif method != "PATCH":
        raise StatusError(405, "MethodNotAllowed", f"{method} is not supported on {rt.plural}/status")
    elif content_type == APPLY:
        how = "apply"
    elif content_type == MERGE or (content_type == STRATEGIC and not rt.custom):
        how = "merge"
    else:
        raise _unsupported_patch(rt)
    forced = _force(query, how == "apply")
    if how == "apply" and not query.get("fieldManager"):
        raise _field_manager_required()
    obj = store.write_status(rt, namespace, name, body, manager, how=how, force=forced, dry_run=dry_run)
    return 200, obj


def _force(query: dict[str, str], apply: bool) -> bool:
    force = query.get("force", "false").lower()
    if force not in ("true", "false", "1", "0"):
        raise bad_request(f"invalid force value {force!r}")
    forced = force in ("true", "1")
    if forced and not apply:
        raise StatusError(
            422,
            "Invalid",
            'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be specified '
            "for non-apply patch",
        )
    return forced


def _field_manager_required() -> StatusError:
    return StatusError(
        422,
        "Invalid",
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
        {
            "group": "meta.k8s.io",
            "kind": "PatchOptions",
            "causes": [
                {
                    "reason": "FieldValueRequired",
                    "message": "Required value: is required for apply patch",
                    "field": "fieldManager",
                }
            ],
        },
    )


def _unsupported_patch(rt: ResourceType) -> StatusError:
    return StatusError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types "
        f"include: {APPLY}, {MERGE}" + ("" if rt.custom else f", {STRATEGIC}"),
    )


def _patch(
    store: Store,
    rt: ResourceType,
    namespace: str | None,
    name: str,
    query: dict[str, str],
    content_type: str | None,
    body: Any,
    manager: str,
    dry_run: bool,
) -> tuple[int, Any]:
    forced = _force(query, content_type == APPLY)
    if content_type == APPLY:
        if not query.get("fieldManager"):
            raise _field_manager_required()
        obj, created = store.apply(
            rt, namespace, name, body, query["fieldManager"], force=forced, dry_run=dry_run
        )
        return (201 if created else 200), obj
    if content_type == MERGE or (content_type == STRATEGIC and not rt.custom):
        # strategic merge patch is approximated by a merge patch (lists are replaced, not merged)
        return 200, store.merge_patch(rt, namespace, name, body, manager, dry_run=dry_run)
    raise _unsupported_patch(rt)


def _is_discovery(parts: list[str]) -> bool:
    return parts in (["version"], ["api"], ["apis"]) or (
        (parts[0] == "api" and len(parts) == 2) or (parts[0] == "apis" and len(parts) in (2, 3))
    )


def _discovery(discovery: Discovery, parts: list[str], server_address: Callable[[], str]) -> Any:
    if parts == ["version"]:
        return {"major": "1", "minor": "31", "gitVersion": "v1.31.0-qcdr-test", "platform": "linux/amd64"}
    if parts == ["api"]:
        return discovery.core_versions(server_address())
    if parts == ["apis"]:
        return discovery.group_list()
    if parts[0] == "api":
        return discovery.resource_list("", parts[1])
    if len(parts) == 2:
        return discovery.group(parts[1])
    return discovery.resource_list(parts[1], parts[2])


def parse_or_400(parser: Callable[[str], list[Any]], text: str) -> list[Any]:
    try:
        return parser(text)
    except ValueError as exc:
        raise bad_request(str(exc)) from exc


def _dry_run(query: dict[str, str]) -> bool:
    value = query.get("dryRun")
    if value is None or value == "":
        return False
    if value != "All":
        raise bad_request(f'invalid dryRun value "{value}": only "All" is supported')
    return True


def _default_manager(request: Request) -> str:
    # like the API server: the user agent's program name when no fieldManager is given
    agent = request.headers.get("user-agent") or "unknown"
    return agent.split("/")[0][:128] or "unknown"


def _list_body(
    rt: ResourceType, items: list[dict[str, Any]], rv: str, query: dict[str, str]
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"resourceVersion": rv}
    limit = query.get("limit")
    if limit:
        try:
            start, size = int(query.get("continue") or 0), max(int(limit), 1)
        except ValueError as exc:
            raise bad_request(f"invalid limit or continue: {exc}") from exc
        end = start + size
        if end < len(items):
            metadata["continue"] = str(end)
        items = items[start:end]
    return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": metadata, "items": items}
