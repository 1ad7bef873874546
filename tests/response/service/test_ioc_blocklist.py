"""The CDR IOC blocklists in the service: once mode's ``qualys-cdr-blocklist`` (Cilium) and
``cdr-dynamic-blocklist`` (Tetragon) kept from every verdict naming a destination, with the same
content once mode writes for the same findings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.streams.envelope import Envelope
from qcdr_response.lifecycle.generation import finding_to_event
from qcdr_response.lifecycle.models import FindingPolicyRow, FindingRow, PolicyRow, PolicyVersionRow
from qcdr_response.lifecycle.service import BatchOutcome, Lifecycle
from qcdr_response.policies.checks import default_checker
from qcdr_response.policies.generate import PolicyGenerator
from qcdr_response.worker import make_lifecycle
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.response.service.conftest import (
    finding_envelope,
    handle_envelopes,
    make_finding,
    response_settings,
)

pytestmark = pytest.mark.db

Sessions = async_sessionmaker[AsyncSession]
C2 = "185.220.101.7"
C2_2 = "45.155.205.99"
BLOCKLISTS = {
    ("CiliumClusterwideNetworkPolicy", "qualys-cdr-blocklist"),
    ("TracingPolicy", "cdr-dynamic-blocklist"),
}


def c2_finding(ip: str, **overrides: Any) -> Finding:
    values: dict[str, Any] = {
        "category": "Reverse_Shell",
        "techniques": ["T1059.004"],
        "process": {"name": "bash", "path": "/bin/bash"},
        "network": {"ip": ip, "port": 4444},
    }
    values.update(overrides)
    return make_finding(**values)


async def handle(sessions: Sessions, envelopes: Sequence[Envelope], lc: Lifecycle) -> BatchOutcome:
    async with sessions.begin() as session:
        outcome = await handle_envelopes(session, envelopes, lc)
    lc.cache.update(outcome.new_events)
    return outcome


async def blocklists(sessions: Sessions) -> dict[tuple[str, str], tuple[PolicyRow, PolicyVersionRow]]:
    async with sessions() as session:
        rows = (
            await session.execute(
                select(PolicyRow, PolicyVersionRow)
                .join(PolicyVersionRow, PolicyVersionRow.policy_id == PolicyRow.id)
                .where(
                    PolicyRow.family == "network-iocs", PolicyVersionRow.version == PolicyRow.current_version
                )
            )
        ).all()
    return {(p.kind, p.name): (p, v) for p, v in rows}


def cidrs(body: dict[str, Any]) -> set[str]:
    return {c["cidr"] for rule in body["spec"]["egressDeny"] for c in rule.get("toCIDRSet", [])}


async def test_verdicts_with_a_destination_keep_once_modes_blocklists(sessions: Sessions) -> None:
    lc = make_lifecycle(response_settings())
    first = [c2_finding(C2), c2_finding(C2, pod="api-2")]
    await handle(sessions, [finding_envelope(f) for f in first], lc)
    found = await blocklists(sessions)
    assert set(found) == BLOCKLISTS
    cnp = found[("CiliumClusterwideNetworkPolicy", "qualys-cdr-blocklist")][1]
    assert cidrs(cnp.body) == {f"{C2}/32"}

    # once mode, from the same findings, writes the same documents (the service dates them by
    # the newest finding, so a replay gives the same hash)
    config = lc.generator.config.model_copy(update={"run_date": first[0].event_time.date()})
    once = PolicyGenerator(config, default_checker(config)).generate([finding_to_event(f) for f in first])
    assert {(d.kind, d.name): d.content_hash for d in once.network_documents} == {
        k: v.content_hash for k, (_, v) in found.items()
    }

    # a new address: a new version holding both; the same batch again changes nothing
    batch = [finding_envelope(c2_finding(C2_2))]
    outcome = await handle(sessions, batch, lc)
    again = await blocklists(sessions)
    assert {(p.id, 2) for p, _ in again.values()} <= set(outcome.versions)
    assert cidrs(again[("CiliumClusterwideNetworkPolicy", "qualys-cdr-blocklist")][1].body) == {
        f"{C2}/32",
        f"{C2_2}/32",
    }
    assert all(p.current_version == 2 for p, _ in again.values())
    redelivered = await handle(sessions, batch, lc)
    assert redelivered.versions == []


async def test_anomalies_private_addresses_and_the_switch_block_nothing(sessions: Sessions) -> None:
    lc = make_lifecycle(response_settings())
    anomaly = c2_finding(C2, kind="anomaly", detector="behaviour")
    private = c2_finding("10.0.3.4", network={"ip": "10.0.3.4", "port": 8080})
    await handle(sessions, [finding_envelope(anomaly), finding_envelope(private)], lc)
    assert await blocklists(sessions) == {}
    async with sessions() as session:
        flags = dict((await session.execute(select(FindingRow.id, FindingRow.ioc))).all())
    assert flags == {anomaly.id: False, private.id: True}

    off = make_lifecycle(response_settings(ioc_blocklist=False))
    await handle(sessions, [finding_envelope(c2_finding(C2))], off)
    assert await blocklists(sessions) == {}


async def test_a_finding_no_family_answers_is_covered_by_the_blocklist(sessions: Sessions) -> None:
    lc = make_lifecycle(response_settings())
    listed = c2_finding(
        C2, kind="intel_match", detector="intel_match", category="unheard_of_category", techniques=[]
    )
    await handle(sessions, [finding_envelope(listed)], lc)
    cnp = (await blocklists(sessions))[("CiliumClusterwideNetworkPolicy", "qualys-cdr-blocklist")][1]
    async with sessions() as session:
        link = await session.scalar(select(FindingPolicyRow).where(FindingPolicyRow.finding_id == listed.id))
    assert link is not None
    assert (link.outcome, link.policy_version_id) == ("linked", cnp.id)
