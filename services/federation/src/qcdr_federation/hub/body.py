"""Request bodies read with a size limit and validated by a model (forwarded batches and baseline
uploads can be large: they are never held whole past the limit, and a bad one is a 422 with
field locations, exactly like FastAPI's own body validation)."""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from qcdr_common.api.body import read_limited_body

M = TypeVar("M", bound=BaseModel)


async def parse_body(request: Request, model: type[M], limit: int) -> M:
    body = await read_limited_body(request, limit)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = [
            {"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_input=False, include_url=False)
        ]
        raise RequestValidationError(errors) from None
