"""The Qualys Container Security images endpoint, added to the CDR double's app:
``GET /csapi/v1.3/images`` (bearer token from the double's ``/auth``; ``pageNumber`` 1-based,
``pageSize`` clamped to ``max_page_size``; answers ``{"data": [...], "count": total}``).

Faults (:class:`~qcdr_ingest.qualys.double.Fault`) apply to the images requests by their own
count: 429/5xx with ``Retry-After``, slow answers, HTML, revoked tokens. The CS API's shape is an
assumption (see :mod:`qcdr_ingest.images`).

    double = QualysDouble(DoubleConfig())
    images = add_csapi(double, CsApiConfig(images=[...], max_page_size=2))
    with serve_double(double) as url: ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from qcdr_ingest.qualys.double import Fault, QualysDouble

IMAGES_PATH = "/csapi/v1.3/images"


class CsApiConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: list[Any] = Field(default_factory=list)
    max_page_size: int = Field(default=250, ge=1)
    faults: list[Fault] = Field(default_factory=list)


@dataclass(slots=True)
class CsApiStats:
    requests: int = 0
    pages_served: int = 0
    rejected_tokens: int = 0


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def add_csapi(double: QualysDouble, config: CsApiConfig) -> CsApiStats:
    """Mount the images endpoint on ``double.app`` (before it is served); returns its counters."""
    stats = CsApiStats()

    async def images(request: Request) -> Response:
        stats.requests += 1
        for fault in config.faults:
            if fault.applies(stats.requests):
                answer = await double._fault(fault)
                if answer is not None:
                    return answer
                break
        if not double._token_ok(request):
            stats.rejected_tokens += 1
            return _json({"error": "invalid or expired token"}, 401)
        try:
            number = int(request.query_params.get("pageNumber") or 1)
            size = int(request.query_params.get("pageSize") or config.max_page_size)
        except ValueError:
            return _json({"error": "pageNumber and pageSize must be integers"}, 400)
        if number < 1 or size < 1:
            return _json({"error": "pageNumber and pageSize start at 1"}, 400)
        size = min(size, config.max_page_size)
        offset = (number - 1) * size
        stats.pages_served += 1
        return _json({"data": config.images[offset : offset + size], "count": len(config.images)})

    double.app.add_api_route(IMAGES_PATH, images, methods=["GET"])
    return stats
