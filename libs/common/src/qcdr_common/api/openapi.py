"""The OpenAPI document every service serves at ``/openapi.json`` (read scope required).

FastAPI's generated document is completed so that it tells clients (SOAR tools, schemathesis) the
truth about the conventions in :mod:`qcdr_common.api`:

- the ``bearerAuth`` security scheme, required by every operation except the public ones, with the
  scope the operation needs (``read`` for GET/HEAD/OPTIONS, ``write`` otherwise, or what the
  route's ``require_scope`` asks for);
- 401 and 403 responses on protected operations, and every 4xx/5xx body as the ``Problem`` schema
  served as ``application/problem+json`` (FastAPI's ``HTTPValidationError`` is replaced).

Why no ``/docs``: a browser cannot send the bearer token when it loads Swagger UI's page and the
spec, so an interactive page would either fail or need the spec public. The spec stays behind a
read token (``curl -H "Authorization: Bearer $T" .../openapi.json``) and can be loaded into any
OpenAPI viewer or SOAR tool from there.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from qcdr_common.api.auth import SCHEME_NAME, public_matcher, scope_for_method
from qcdr_common.api.errors import PROBLEM_MEDIA_TYPE, Problem

OPENAPI_PATH = "/openapi.json"
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}}


def complete_openapi(schema: dict[str, Any], public_paths: Collection[str]) -> dict[str, Any]:
    """Add security, scopes and problem responses to a generated document (in place; returned)."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    components.setdefault("securitySchemes", {})[SCHEME_NAME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token: Authorization: Bearer <token>. Scopes: read, write.",
    }
    is_public = public_matcher(public_paths)
    for path, item in schema.get("paths", {}).items():
        for method in _HTTP_METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status, response in responses.items():
                if status[:1] in ("4", "5") and "content" in response:
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}
            if is_public(path):
                operation["security"] = []
                continue
            wanted = scope_for_method(method).value
            declared = operation.get("security") or []
            scopes = {s for requirement in declared for s in requirement.get(SCHEME_NAME, [])}
            operation["security"] = [{SCHEME_NAME: sorted(scopes | {wanted})}]
            responses.setdefault("401", _problem_response("Missing, malformed or unknown bearer token"))
            responses.setdefault("403", _problem_response("The token lacks the scope this operation needs"))
    text = json.dumps(schema.get("paths", {}))
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        if f"#/components/schemas/{name}" not in text:
            schemas.pop(name, None)
    return schema


def install_openapi(app: FastAPI, public_paths: Collection[str]) -> None:
    """Serve the completed document at ``/openapi.json`` (a route like any other: token needed).

    Call on an app created with ``openapi_url=None`` (FastAPI's own route would bypass the auth
    dependencies and the completion above).
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete_openapi(generate(), public_paths)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    app.add_api_route(OPENAPI_PATH, openapi_document, methods=["GET"], include_in_schema=False)
