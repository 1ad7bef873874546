"""Reading a request body with a size limit, before anything parses it."""

from __future__ import annotations

from fastapi import Request

from qcdr_common.api.errors import ApiError


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The body, or a 413 as soon as it is known to exceed ``limit`` bytes (from Content-Length,
    or while streaming when the client sent none or lied), so an oversized upload is never held
    in memory whole."""
    declared = request.headers.get("content-length", "")
    too_large = ApiError(413, f"the body is larger than {limit} bytes", reason="content_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
