"""The file output (once mode's names, only qcdr's files pruned) and ``qcdr-response replay``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.streams.names import stream_key
from qcdr_response.cli import cli
from qcdr_response.lifecycle import files
from qcdr_response.lifecycle.models import PolicyRow
from qcdr_response.lifecycle.transitions import revoke
from qcdr_response.worker import make_lifecycle
from redis import Redis as SyncRedis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from tests.response.service.conftest import (
    finding_envelope,
    handle_envelopes,
    make_finding,
    response_settings,
)

pytestmark = pytest.mark.db

Sessions = async_sessionmaker[AsyncSession]


def test_write_replaces_changed_files_and_prunes_only_qcdr_files(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("kind: ConfigMap\n")
    (tmp_path / "old.yaml").write_text(files.HEADER + "kind: TracingPolicy\n")
    written, removed = files.write(tmp_path, {"a.yaml": files.HEADER + "x: 1\n"})
    assert [p.name for p in written] == ["a.yaml"]
    assert [p.name for p in removed] == ["old.yaml"]
    assert (tmp_path / "mine.yaml").exists()
    again, _ = files.write(tmp_path, {"a.yaml": files.HEADER + "x: 1\n"})
    assert again == []  # unchanged content is not rewritten


async def test_files_hold_current_versions_and_leave_revoked_policies_out(
    sessions: Sessions, tmp_path: Path
) -> None:
    lc = make_lifecycle(response_settings())
    async with sessions.begin() as session:
        await handle_envelopes(
            session, [finding_envelope(make_finding(namespace=ns)) for ns in ("payments", "shop")], lc
        )
    async with sessions() as session:
        await files.sync(session, tmp_path)
    text = (tmp_path / "cdr-block-network-scan-20260301.yaml").read_text()
    assert text.startswith(files.HEADER)
    assert "namespace: payments" in text
    assert "namespace: shop" in text
    async with sessions.begin() as session:
        shop = (
            await session.scalars(
                select(PolicyRow.id).where(
                    PolicyRow.namespace == "shop", PolicyRow.name.startswith("cdr-block-network-scan")
                )
            )
        ).all()
        assert shop
        for policy_id in shop:
            await revoke(session, policy_id, None, cluster_id="c1")
    async with sessions() as session:
        await files.sync(session, tmp_path)
    text = (tmp_path / "cdr-block-network-scan-20260301.yaml").read_text()
    # the revoked policy is left out, the other stays (asserted on what this test created only,
    # so a row another test left in the worker's database cannot make it fail)
    assert "namespace: shop" not in text
    assert "namespace: payments" in text


@pytest.mark.redis
def test_replay_republishes_the_outbox(
    committed_database_url: str, redis_url: str, redis_prefix: str, fresh_settings: None
) -> None:
    async def seed() -> None:
        engine = make_engine(committed_database_url)
        try:
            async with make_session_factory(engine).begin() as session:
                lc = make_lifecycle(response_settings())
                await handle_envelopes(session, [finding_envelope(make_finding())], lc)
        finally:
            await engine.dispose()

    asyncio.run(seed())
    env = {"DATABASE_URL": committed_database_url, "REDIS_URL": redis_url, "QCDR_REDIS_PREFIX": redis_prefix}
    runner = CliRunner()
    redis = SyncRedis.from_url(redis_url)
    key = stream_key(redis_prefix, "response:events")
    try:
        for expected in (2, 4):  # every run re-publishes everything: consumers dedupe on the id
            result = runner.invoke(cli, ["replay"], env=env)
            assert result.exit_code == 0, result.output
            assert "re-published 2 envelopes" in result.output
            assert redis.xlen(key) == expected
    finally:
        redis.delete(key)
        redis.close()
