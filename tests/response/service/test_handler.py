"""The findings handler: exactly-once effects under redelivery, versions only on content change."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from qcdr_common.streams.consumer import Delivery
from qcdr_common.streams.envelope import Envelope
from qcdr_response.lifecycle.handlers import FindingsHandler, MalformedFindingError
from qcdr_response.lifecycle.models import (
    FindingPolicyRow,
    PolicyRow,
    PolicyStatus,
    PolicyVersionRow,
    ReceivedRow,
)
from qcdr_response.lifecycle.service import BatchOutcome, EventCache, Lifecycle
from qcdr_response.policies.config import EnforcementAction
from qcdr_response.worker import make_lifecycle
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.response.service.conftest import (
    finding_envelope,
    handle_envelopes,
    make_finding,
    response_settings,
)

pytestmark = pytest.mark.db

Sessions = async_sessionmaker[AsyncSession]


def lifecycle(**settings: object) -> Lifecycle:
    return make_lifecycle(response_settings(**settings))


async def handle(sessions: Sessions, envelopes: Sequence[Envelope], lc: Lifecycle) -> BatchOutcome:
    async with sessions.begin() as session:
        outcome = await handle_envelopes(session, envelopes, lc)
    lc.cache.update(outcome.new_events)
    return outcome


async def count(sessions: Sessions, model: type[object]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def policies(sessions: Sessions) -> list[PolicyRow]:
    async with sessions() as session:
        return list((await session.scalars(select(PolicyRow).order_by(PolicyRow.id))).all())


async def links(sessions: Sessions) -> dict[str, FindingPolicyRow]:
    async with sessions() as session:
        rows = (await session.scalars(select(FindingPolicyRow))).all()
    return {r.finding_id: r for r in rows}


async def outbox_types(sessions: Sessions) -> list[str]:
    from qcdr_response.db.models import outbox

    async with sessions() as session:
        return list((await session.execute(select(outbox.c.type).order_by(outbox.c.id))).scalars())


async def test_the_same_batch_twice_has_its_effects_once(sessions: Sessions) -> None:
    lc = lifecycle()
    batch = [finding_envelope(make_finding()) for _ in range(5)]
    first = await handle(sessions, batch, lc)
    assert (first.received, first.duplicates, first.new_findings, first.links) == (5, 0, 5, 5)
    assert len(first.versions) == 1
    assert await outbox_types(sessions) == ["response.policy_changed", "response.policy_status_changed"]

    again = await handle(sessions, batch, lc)
    assert (again.received, again.duplicates, again.new_findings, again.links) == (5, 5, 0, 0)
    assert again.versions == []
    assert again.outbox_rows == 0

    assert await count(sessions, ReceivedRow) == 5
    assert await count(sessions, PolicyVersionRow) == 1
    assert len(await outbox_types(sessions)) == 2
    linked = await links(sessions)
    assert len(linked) == 5
    assert {r.outcome for r in linked.values()} == {"linked"}
    assert len({r.policy_version_id for r in linked.values()}) == 1
    [policy] = await policies(sessions)
    assert (policy.kind, policy.namespace, policy.name) == (
        "TracingPolicyNamespaced",
        "payments",
        "cdr-block-network-scan",
    )
    assert policy.status == PolicyStatus.PROPOSED  # audit mode: nothing is approved by itself
    assert policy.current_version == 1


async def test_a_finding_raised_again_under_a_new_envelope_changes_nothing(sessions: Sessions) -> None:
    lc = lifecycle()
    finding = make_finding()
    await handle(sessions, [finding_envelope(finding)], lc)
    outcome = await handle(sessions, [finding_envelope(finding)], lc)
    assert (outcome.duplicates, outcome.new_findings, outcome.links, outcome.versions) == (0, 0, 0, [])
    assert await count(sessions, PolicyVersionRow) == 1
    assert await count(sessions, ReceivedRow) == 2


async def test_a_new_finding_in_the_scope_makes_a_version_covering_all_findings(sessions: Sessions) -> None:
    lc = lifecycle()
    await handle(sessions, [finding_envelope(make_finding()) for _ in range(2)], lc)
    other_scope = await handle(sessions, [finding_envelope(make_finding(namespace="shop"))], lc)
    assert len(other_scope.versions) == 1  # the shop policy's first version; payments untouched
    newer = make_finding()
    outcome = await handle(sessions, [finding_envelope(newer)], lc)
    [(policy_id, version)] = outcome.versions
    assert version == 2

    async with sessions() as session:
        rows = (
            await session.scalars(
                select(PolicyVersionRow)
                .where(PolicyVersionRow.policy_id == policy_id)
                .order_by(PolicyVersionRow.version)
            )
        ).all()
    assert [v.finding_count for v in rows] == [2, 3]
    assert rows[0].content_hash != rows[1].content_hash
    assert rows[1].body["metadata"]["annotations"]["qcdr.io/finding-count"] == "3"
    linked = await links(sessions)
    # earlier findings keep their link to version 1; the new one links to version 2
    assert linked[newer.id].policy_version_id == rows[1].id
    assert sum(1 for r in linked.values() if r.policy_version_id == rows[0].id) == 2
    assert len(await policies(sessions)) == 2


async def test_regeneration_from_the_database_equals_regeneration_from_the_cache(sessions: Sessions) -> None:
    cached = lifecycle()
    await handle(sessions, [finding_envelope(make_finding()) for _ in range(3)], cached)
    assert len(cached.cache) == 3
    # a restarted process (empty cache) regenerates the same content: no spurious version
    cold = lifecycle(event_cache_size=0)
    finding = make_finding()
    hot_outcome = await handle(sessions, [finding_envelope(finding)], cached)
    assert len(hot_outcome.versions) == 1
    async with sessions() as session:
        hot = await session.scalar(select(PolicyVersionRow).where(PolicyVersionRow.version == 2))
    assert hot is not None
    redone = Lifecycle(cold.generator, cluster_id="x", cache=EventCache(0))
    async with sessions() as session:
        from qcdr_response.lifecycle.service import _scope_events

        scope = redone.generator.scope_of(hot_outcome.new_events[0])
        assert scope is not None
        events = await _scope_events(session, scope, {}, redone.cache)
    result = redone.generator.generate(scope, events)
    assert result.main is not None
    assert result.main.content_hash == hot.content_hash


async def test_unmapped_findings_get_one_link_saying_why(sessions: Sessions) -> None:
    lc = lifecycle()
    odd = make_finding(category="Weird_Thing", techniques=[])
    outcome = await handle(sessions, [finding_envelope(odd)], lc)
    assert outcome.links == 1
    assert outcome.versions == []
    link = (await links(sessions))[odd.id]
    assert link.outcome == "unmapped"
    assert link.policy_version_id is None
    assert link.reason is not None
    assert "Weird_Thing" in link.reason


async def test_override_mode_links_findings_to_the_main_policy(sessions: Sessions) -> None:
    lc = lifecycle(policy_action=EnforcementAction.OVERRIDE)
    finding = make_finding(category="Container_Escape", techniques=["T1611"], process={"name": "nsenter"})
    await handle(sessions, [finding_envelope(finding)], lc)
    names = {p.name for p in await policies(sessions)}
    assert "cdr-block-container-escape" in names
    link = (await links(sessions))[finding.id]
    async with sessions() as session:
        version = await session.get(PolicyVersionRow, link.policy_version_id)
        assert version is not None
        policy = await session.get(PolicyRow, version.policy_id)
    assert policy is not None
    assert policy.name == "cdr-block-container-escape"


async def test_a_new_version_reopens_an_approved_policy(sessions: Sessions) -> None:
    lc = lifecycle()
    await handle(sessions, [finding_envelope(make_finding())], lc)
    [policy] = await policies(sessions)
    async with sessions.begin() as session:
        from qcdr_response.lifecycle.transitions import approve

        await approve(session, policy.id, cluster_id="test")
    await handle(sessions, [finding_envelope(make_finding())], lc)
    [policy] = await policies(sessions)
    assert policy.status == PolicyStatus.PROPOSED
    assert policy.current_version == 2
    assert policy.status_reason == "version 2 (2 findings)"
    assert (await outbox_types(sessions))[-2:] == [
        "response.policy_changed",
        "response.policy_status_changed",
    ]


async def test_malformed_payloads_fail_after_the_good_ones_are_committed(sessions: Sessions) -> None:
    handler = FindingsHandler(sessions, lifecycle())
    good = finding_envelope(make_finding())
    bad = good.model_copy(update={"id": "bad-1", "payload": {"id": "x"}})
    old = good.model_copy(update={"id": "bad-2", "version": 2})
    nul = finding_envelope(make_finding(title="a\x00b"), id="bad-3")
    batch = [
        Delivery("1-0", good, 1),
        Delivery("1-1", bad, 1),
        Delivery("1-2", old, 1),
        Delivery("1-3", nul, 1),
    ]
    with pytest.raises(MalformedFindingError, match=r"envelope bad-1 \(and 2 more\): .*validation error"):
        await handler(batch)
    assert await count(sessions, ReceivedRow) == 1
    assert len(await links(sessions)) == 1
    # the consumer's one-by-one retry: the good one is skipped, the bad ones fail again
    await handler([batch[0]])
    with pytest.raises(MalformedFindingError, match="version 2 is not supported"):
        await handler([batch[2]])
    with pytest.raises(MalformedFindingError, match="NUL character"):
        await handler([batch[3]])
    assert await count(sessions, ReceivedRow) == 1


async def test_other_envelope_types_are_recorded_and_skipped(sessions: Sessions) -> None:
    lc = lifecycle()
    other = finding_envelope(make_finding()).model_copy(update={"type": "analysis.chain_closed"})
    outcome = await handle(sessions, [other], lc)
    assert (outcome.received, outcome.new_findings) == (1, 0)
    assert await count(sessions, ReceivedRow) == 1
