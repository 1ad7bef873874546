"""Keyset (cursor) pagination for list endpoints.

A list is ordered by a sort key and a unique id (``occurred_at DESC, id DESC``); the cursor is the
(sort key, id) of the last item served, so the next page is ``WHERE (key, id) < (:key, :id)``:
stable while rows are inserted, and as fast on page 1,000 as on page 1, unlike OFFSET.

The cursor is opaque to clients: base64url (no padding) of a small JSON array
``[version, key type, key, id]``. Clients must not build cursors; one that does not decode, or
whose types do not fit the list, is a 422 with reason ``invalid_cursor``, never a 500.

A route::

    @router.get("/v1/findings", response_model=Page[FindingRead])
    async def list_findings(page: PageParams, session: Session) -> Page[FindingRead]:
        stmt = keyset(select(Finding), page, Finding.occurred_at, Finding.id)
        rows = (await session.scalars(stmt)).all()
        items, next_cursor = split_page(rows, page, key=lambda f: (f.occurred_at, f.id))
        return Page(items=[FindingRead.model_validate(f) for f in items], next_cursor=next_cursor)
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import Select, literal, tuple_
from sqlalchemy.sql.elements import ColumnElement

from qcdr_common.api.errors import ApiError, FieldError

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CURSOR_LENGTH = 512
_VERSION = 1
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")

SortKey = datetime | int | str
RowId = int | str | uuid.UUID

T = TypeVar("T")


class InvalidCursorError(ApiError):
    def __init__(self, why: str) -> None:
        super().__init__(
            422,
            f"query.cursor: {why}",
            reason="invalid_cursor",
            errors=[FieldError(loc=["query", "cursor"], msg=why, type="invalid_cursor")],
        )


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended: the last item's sort key and id."""

    key: SortKey
    id: int | str


def encode_cursor(key: SortKey, row_id: RowId) -> str:
    if isinstance(key, bool):
        raise TypeError("a sort key cannot be a bool")
    if isinstance(key, datetime):
        if key.tzinfo is None:
            raise ValueError("a datetime sort key must be timezone-aware")
        kind, value = "d", key.isoformat()
    elif isinstance(key, int):
        kind, value = "i", str(key)  # as text: JSON numbers lose precision past 2**53 in clients
    elif isinstance(key, str):
        kind, value = "s", key
    else:
        raise TypeError(f"unsupported sort key type {type(key).__name__}")
    if isinstance(row_id, bool):
        raise TypeError("a row id cannot be a bool")
    ident: int | str = str(row_id) if isinstance(row_id, uuid.UUID) else row_id
    if not isinstance(ident, int | str):
        raise TypeError(f"unsupported row id type {type(row_id).__name__}")
    raw = orjson.dumps([_VERSION, kind, value, ident])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(text: str) -> Cursor:
    """The cursor's position, or InvalidCursorError (422) with a reason a client can act on."""
    if len(text) > MAX_CURSOR_LENGTH:
        raise InvalidCursorError("too long; pass back the next_cursor of the previous page unchanged")
    if not _BASE64URL.fullmatch(text):
        raise InvalidCursorError("not a cursor this API issued")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data: Any = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidCursorError("not a cursor this API issued") from None
    if not (isinstance(data, list) and len(data) == 4 and data[0] == _VERSION):
        raise InvalidCursorError("not a cursor this API issued (or one of an older version)")
    _, kind, value, ident = data
    if not isinstance(value, str) or isinstance(ident, bool) or not isinstance(ident, int | str):
        raise InvalidCursorError("not a cursor this API issued")
    key: SortKey
    try:
        if kind == "d":
            key = datetime.fromisoformat(value)
            if key.tzinfo is None:
                raise ValueError
        elif kind == "i":
            if not re.fullmatch(r"-?[0-9]{1,20}", value):
                raise ValueError
            key = int(value)
        elif kind == "s":
            key = value
        else:
            raise ValueError
    except ValueError:
        raise InvalidCursorError("not a cursor this API issued") from None
    return Cursor(key, ident)


@dataclass(frozen=True)
class PageRequest:
    """``limit`` items after ``after`` (None: the first page)."""

    limit: int = DEFAULT_LIMIT
    after: Cursor | None = None


def page_params(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page (1-{MAX_LIMIT}).")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_LENGTH,
            description="The next_cursor of the previous page; omit for the first page.",
        ),
    ] = None,
) -> PageRequest:
    return PageRequest(limit=limit, after=decode_cursor(cursor) if cursor is not None else None)


PageParams = Annotated[PageRequest, Depends(page_params)]


class Page(BaseModel, Generic[T]):
    """One page of a list; ``next_cursor`` is null on the last page."""

    items: list[T]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= to get the next page; null when this is the last."
    )


def split_page(
    rows: Sequence[T], page: PageRequest, key: Callable[[T], tuple[SortKey, RowId]]
) -> tuple[list[T], str | None]:
    """The page's items and the next cursor, from rows fetched with ``LIMIT page.limit + 1``."""
    items = list(rows[: page.limit])
    if len(rows) > page.limit and items:
        return items, encode_cursor(*key(items[-1]))
    return items, None


def _python_type(column: ColumnElement[Any]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


def _bind(value: SortKey | int | str, column: ColumnElement[Any], what: str) -> Any:
    """The cursor value as the column's Python type; a mismatch is the client's fault (422)."""
    expected = _python_type(column)
    if expected is uuid.UUID:
        try:
            return uuid.UUID(str(value))
        except ValueError:
            raise InvalidCursorError(f"the {what} does not belong to this list") from None
    if expected is not None and not isinstance(value, expected):
        raise InvalidCursorError(f"the {what} does not belong to this list")
    return value


def keyset(
    stmt: Select[Any],
    page: PageRequest,
    sort_column: ColumnElement[Any],
    id_column: ColumnElement[Any],
    *,
    descending: bool = True,
) -> Select[Any]:
    """``stmt`` restricted to the rows after the cursor, ordered, with ``LIMIT limit + 1``."""
    if page.after is not None:
        key = _bind(page.after.key, sort_column, "cursor's sort key")
        ident = _bind(page.after.id, id_column, "cursor's id")
        position = tuple_(literal(key, sort_column.type), literal(ident, id_column.type))
        columns = tuple_(sort_column, id_column)
        stmt = stmt.where(columns < position if descending else columns > position)
    if descending:
        stmt = stmt.order_by(sort_column.desc(), id_column.desc())
    else:
        stmt = stmt.order_by(sort_column.asc(), id_column.asc())
    return stmt.limit(page.limit + 1)
