"""Cursor pagination: opaque cursors, limits, and keyset walks over a real PostgreSQL table."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import orjson
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from qcdr_common.api import ApiAuthSettings, Page, PageParams, PageRequest, keyset, split_page
from qcdr_common.api.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Cursor,
    InvalidCursorError,
    decode_cursor,
    encode_cursor,
)
from qcdr_common.service_app import create_service_app
from qcdr_common.settings import CommonSettings
from sqlalchemy import BigInteger, Column, DateTime, MetaData, Table, Text, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

TOKEN = "pagination-test-token-0123456789"

aware_datetimes = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9998, 12, 31),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]),
)
sort_keys = st.one_of(aware_datetimes, st.integers(-(2**63), 2**63 - 1), st.text(max_size=60))
row_ids = st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=60), st.uuids())


@given(key=sort_keys, row_id=row_ids)
def test_cursor_round_trip(key: datetime | int | str, row_id: int | str | uuid.UUID) -> None:
    text = encode_cursor(key, row_id)
    assert text.isascii()
    assert "=" not in text
    cursor = decode_cursor(text)
    assert cursor == Cursor(key, str(row_id) if isinstance(row_id, uuid.UUID) else row_id)
    if isinstance(key, datetime):
        assert isinstance(cursor.key, datetime)
        assert cursor.key.utcoffset() == key.utcoffset()


def _raw(data: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "!!!",
        "abc",  # base64 of garbage
        "x" * 600,
        _raw({"k": 1}),
        _raw([2, "i", "1", 1]),  # an unknown version
        _raw([1, "i", "1"]),
        _raw([1, "q", "1", 1]),
        _raw([1, "i", "one", 1]),
        _raw([1, "i", "1" * 30, 1]),
        _raw([1, "d", "2026-01-01T00:00:00", 1]),  # naive
        _raw([1, "d", "yesterday", 1]),
        _raw([1, "s", 5, 1]),
        _raw([1, "s", "a", True]),
        _raw([1, "s", "a", None]),
        _raw([1, "s", "a", [1]]),
        base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),
    ],
)
def test_bad_cursors_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(InvalidCursorError) as info:
        decode_cursor(text)
    assert info.value.status == 422
    assert info.value.reason == "invalid_cursor"
    assert info.value.errors is not None
    assert info.value.errors[0].loc == ["query", "cursor"]


def test_encode_refuses_what_it_cannot_round_trip() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_cursor(datetime(2026, 1, 1), 1)
    with pytest.raises(TypeError):
        encode_cursor(True, 1)
    with pytest.raises(TypeError):
        encode_cursor(1, False)
    with pytest.raises(TypeError):
        encode_cursor(1.5, 1)  # type: ignore[arg-type]


def test_split_page() -> None:
    rows = [(i, f"id{i}") for i in range(5)]
    items, nxt = split_page(rows, PageRequest(limit=4), key=lambda r: r)
    assert items == rows[:4]
    assert nxt is not None
    assert decode_cursor(nxt) == Cursor(3, "id3")
    assert split_page(rows, PageRequest(limit=5), key=lambda r: r) == (rows, None)
    assert split_page([], PageRequest(limit=5), key=lambda r: r) == ([], None)


# --------------------------------------------------------------------------- through HTTP


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_service_app(
        CommonSettings(), title="t", auth=ApiAuthSettings(QCDR_API_TOKEN=SecretStr(TOKEN))
    )

    @app.get("/v1/numbers")
    async def numbers(page: PageParams) -> Page[int]:
        start = 0
        if page.after is not None:
            assert isinstance(page.after.key, int)
            start = page.after.key + 1
        rows = list(range(start, min(start + page.limit + 1, 250)))
        items, nxt = split_page(rows, page, key=lambda n: (n, n))
        return Page(items=items, next_cursor=nxt)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as c:
        yield c


async def test_limits(client: httpx.AsyncClient) -> None:
    first = (await client.get("/v1/numbers")).json()
    assert len(first["items"]) == DEFAULT_LIMIT
    assert len((await client.get("/v1/numbers", params={"limit": 1})).json()["items"]) == 1
    assert len((await client.get("/v1/numbers", params={"limit": MAX_LIMIT})).json()["items"]) == 250
    for bad in (0, -1, MAX_LIMIT + 1, "ten"):
        response = await client.get("/v1/numbers", params={"limit": bad})
        assert response.status_code == 422, bad
        assert response.json()["errors"][0]["loc"] == ["query", "limit"]


async def test_walk_and_bad_cursor(client: httpx.AsyncClient) -> None:
    seen: list[int] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, str | int] = {"limit": 60}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/numbers", params=params)).json()
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(250))
    response = await client.get("/v1/numbers", params={"cursor": "not-a-cursor"})
    assert response.status_code == 422
    assert response.json()["reason"] == "invalid_cursor"
    assert (await client.get("/v1/numbers", params={"cursor": "x" * 513})).status_code == 422


# --------------------------------------------------------------------------- keyset on PostgreSQL


metadata = MetaData()
events = Table(
    f"pagination_test_{uuid.uuid4().hex[:8]}",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("name", Text, nullable=False),
)
BASE_TIME = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ROWS = [
    # Few distinct timestamps, so many rows tie on the sort key and the id must break the tie.
    {"id": i, "occurred_at": BASE_TIME + timedelta(seconds=(i * 7) % 13), "name": f"n{(i * 5) % 17:02d}"}
    for i in range(1, 138)
]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(events.insert(), ROWS)
    yield engine
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
    await engine.dispose()


async def _walk(engine: AsyncEngine, limit: int, *, descending: bool, by_name: bool = False) -> list[int]:
    sort_column = events.c.name if by_name else events.c.occurred_at
    seen: list[int] = []
    page = PageRequest(limit=limit)
    async with engine.connect() as conn:
        for _ in range(len(ROWS) + 2):
            stmt = keyset(select(events), page, sort_column, events.c.id, descending=descending)
            rows = (await conn.execute(stmt)).all()
            items, nxt = split_page(rows, page, key=lambda r: (r.name if by_name else r.occurred_at, r.id))
            seen.extend(r.id for r in items)
            if nxt is None:
                return seen
            page = PageRequest(limit=limit, after=decode_cursor(nxt))
    raise AssertionError("the walk did not end")


@pytest.mark.db
@pytest.mark.parametrize("limit", [1, 7, 50, 136, 137, 1000])
@pytest.mark.parametrize("descending", [True, False])
async def test_keyset_walk_visits_every_row_once_in_order(
    engine: AsyncEngine, limit: int, descending: bool
) -> None:
    expected = [r["id"] for r in sorted(ROWS, key=lambda r: (r["occurred_at"], r["id"]), reverse=descending)]
    assert await _walk(engine, limit, descending=descending) == expected


@pytest.mark.db
async def test_keyset_on_a_text_column(engine: AsyncEngine) -> None:
    expected = [r["id"] for r in sorted(ROWS, key=lambda r: (r["name"], r["id"]), reverse=True)]
    assert await _walk(engine, 10, descending=True, by_name=True) == expected


@pytest.mark.db
@pytest.mark.parametrize(
    "cursor",
    [
        Cursor("not-a-time", 1),  # a string where the list sorts by time
        Cursor(BASE_TIME, "abc"),  # a text id where ids are integers
        Cursor(5, 1),
    ],
)
async def test_a_cursor_of_another_list_is_a_422_not_a_database_error(
    engine: AsyncEngine, cursor: Cursor
) -> None:
    with pytest.raises(InvalidCursorError):
        keyset(select(events), PageRequest(limit=5, after=cursor), events.c.occurred_at, events.c.id)


def test_uuid_ids_are_bound_as_uuids() -> None:
    from sqlalchemy import Uuid

    table = Table("t", MetaData(), Column("id", Uuid), Column("at", DateTime(timezone=True)))
    ident = uuid.uuid4()
    stmt = keyset(
        select(table), PageRequest(limit=3, after=Cursor(BASE_TIME, str(ident))), table.c.at, table.c.id
    )
    assert ident in stmt.compile().params.values()
    with pytest.raises(InvalidCursorError):
        keyset(select(table), PageRequest(limit=3, after=Cursor(BASE_TIME, "nope")), table.c.at, table.c.id)
