"""The threat-intel blocklist as the response service's loop: ingest's listed CIDRs (the real
view, real PostgreSQL) -> once mode's threat-intel-blocklist documents -> the file and the
Kubernetes API test server (validating against ../shared/schemas), pruning only its own objects."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_response.intel.blocklist import FILE_HEADER, Outcome, ThreatIntelBlocklistService
from qcdr_response.lifecycle.cluster import ClusterGateway
from qcdr_response.policies.threat_intel import FILENAME
from qcdr_response.settings import ResponseSettings, ThreatIntelMode

from tests.response.feed_pipelines import migrated_database, run_sql, validating_k8s
from tests.response.service.conftest import response_settings

pytestmark = [pytest.mark.db]

LISTED = [
    ("192.0.2.0/25", ["firehol-level1"], 1),
    ("198.51.100.7/32", ["feodo", "ipsum"], 5),
    ("203.0.113.9/32", ["tor-exit"], 1),
    ("2001:db8:1::/48", ["spamhaus-drop"], 1),
]
# a policy of the lifecycle (qcdr-managed, another pipeline): pruning here must never touch it
OTHER = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumClusterwideNetworkPolicy",
    "metadata": {
        "name": "qualys-cdr-blocklist",
        "labels": {"app.kubernetes.io/managed-by": "qcdr", "qcdr.qualys.com/pipeline": "cdr"},
    },
    "spec": {"endpointSelector": {}, "egressDeny": [{"toCIDR": ["192.0.2.200/32"]}]},
}
GROUPS = ("qcdr-threat-intel-000", "qcdr-threat-intel-001")


@pytest.fixture(scope="module")
def database_url(base_database_url: str) -> Iterator[str]:
    """Response's and ingest's migrations: the input comes from ingest's real view."""
    with migrated_database(base_database_url, "qcdr_response_intel") as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[str]:
    await run_sql(
        database_url, "INSERT INTO intel_indicators (cidr, feeds, confidence) VALUES ($1, $2, $3)", *LISTED
    )
    yield database_url
    await run_sql(database_url, "TRUNCATE intel_indicators, response_pipeline_written")


@pytest.fixture
def k8s(shared_path: Path) -> Iterator[K8sTestServer]:
    with validating_k8s(shared_path) as server:
        yield server


def _settings(db: str, tmp_path: Path, kubeconfig: Path | None, **overrides: Any) -> ResponseSettings:
    values: dict[str, Any] = {
        "database_url": db,
        "threat_intel_blocklist": ThreatIntelMode.APPLY if kubeconfig else ThreatIntelMode.FILES,
        "threat_intel_group_size": 2,
        "never_block": ("203.0.113.0/24",),
        "output_dir": tmp_path / "out",
        "kubeconfig": kubeconfig,
    }
    return response_settings(**(values | overrides))


class Loop:
    """One service (one process's memory of what it last wrote) over a real engine."""

    def __init__(self, settings: ResponseSettings) -> None:
        self.engine = make_engine(settings.database_url.get_secret_value())
        self.cluster = ClusterGateway.from_settings(settings)
        self.service = ThreatIntelBlocklistService(settings, make_session_factory(self.engine), self.cluster)

    async def refresh(self) -> Outcome:
        return await self.service.refresh()

    async def close(self) -> None:
        if self.cluster is not None:
            await self.cluster.close()
        await self.engine.dispose()


def _group_cidrs(k8s: K8sTestServer) -> dict[str, list[str]]:
    return {name: body["spec"]["externalCIDRs"] for (_, name), body in k8s.objects("CiliumCIDRGroup").items()}


async def test_applies_follows_the_set_and_prunes_only_its_own(
    db: str, k8s: K8sTestServer, tmp_path: Path, shared_path: Path
) -> None:
    k8s.seed(OTHER)
    loop = Loop(_settings(db, tmp_path, k8s.write_kubeconfig(tmp_path / "kubeconfig")))
    try:
        first = await loop.refresh()
        assert (first.outcome, first.error) == ("changed", None), first
        # the Tor exit sits in QCDR_NEVER_BLOCK: left out and said so
        assert first.left_out_never_block == ["203.0.113.9/32"]
        assert first.cidrs == 3
        assert first.feeds == {"feodo": 1, "firehol-level1": 1, "ipsum": 1, "spamhaus-drop": 1}
        assert _group_cidrs(k8s) == {
            GROUPS[0]: ["192.0.2.0/25", "198.51.100.7/32"],
            GROUPS[1]: ["2001:db8:1::/48"],
        }
        policies = k8s.objects("CiliumClusterwideNetworkPolicy")
        assert set(policies) == {(None, "threat-intel-blocklist"), (None, "qualys-cdr-blocklist")}
        peers = policies[(None, "threat-intel-blocklist")]["spec"]["egressDeny"][0]["toCIDRSet"]
        assert peers == [{"cidrGroupRef": g} for g in GROUPS]
        # the file: its own header (the lifecycle's file sync prunes only files with the policy header)
        text = (tmp_path / "out" / FILENAME).read_text()
        assert text.startswith(FILE_HEADER)
        validator = ManifestValidator(shared_path)
        docs = [d for d in yaml.safe_load_all(text) if d]
        assert [d["kind"] for d in docs] == [
            "CiliumCIDRGroup",
            "CiliumCIDRGroup",
            "CiliumClusterwideNetworkPolicy",
        ]
        for doc in docs:
            assert validator.errors(doc) == [], doc["kind"]

        # nothing changed: nothing written or applied again
        requests = len(k8s.requests)
        assert (await loop.refresh()).outcome == "unchanged"
        assert len(k8s.requests) == requests

        # the feeds shrink to one shard: the empty shard is pruned, the lifecycle's policy stays
        await run_sql(db, "DELETE FROM intel_indicators WHERE cidr <> '198.51.100.7/32'")
        shrunk = await loop.refresh()
        assert shrunk.outcome == "changed"
        assert shrunk.applied["pruned"] == [f"CiliumCIDRGroup/{GROUPS[1]}"], shrunk
        assert _group_cidrs(k8s) == {GROUPS[0]: ["198.51.100.7/32"]}

        # the set empties: the blocklist goes, the other policy is untouched
        await run_sql(db, "DELETE FROM intel_indicators")
        emptied = await loop.refresh()
        assert emptied.outcome == "changed"
        assert k8s.objects("CiliumCIDRGroup") == {}
        assert set(k8s.objects("CiliumClusterwideNetworkPolicy")) == {(None, "qualys-cdr-blocklist")}
    finally:
        await loop.close()


async def test_files_mode_inline_and_a_missing_view(db: str, tmp_path: Path) -> None:
    loop = Loop(_settings(db, tmp_path, None, threat_intel_format="inline", threat_intel_group_size=5000))
    try:
        outcome = await loop.refresh()
        assert (outcome.outcome, outcome.applied) == ("changed", {})
        docs = [d for d in yaml.safe_load_all((tmp_path / "out" / FILENAME).read_text()) if d]
        assert [d["metadata"]["name"] for d in docs] == ["threat-intel-blocklist"]
        cidrs = [c["cidr"] for c in docs[0]["spec"]["egressDeny"][0]["toCIDRSet"]]
        assert cidrs == ["192.0.2.0/25", "198.51.100.7/32", "2001:db8:1::/48"]
    finally:
        await loop.close()

    missing = Loop(_settings(db, tmp_path, None, threat_intel_view="no_such_view"))
    try:
        outcome = await missing.refresh()
        assert outcome.outcome == "skipped"
        assert "no_such_view is not in this database" in outcome.warnings[0]
    finally:
        await missing.close()


def test_settings_refuse_what_cannot_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="threat_intel_blocklist=apply needs a cluster"):
        response_settings(threat_intel_blocklist="apply")
    with pytest.raises(ValueError, match="threat_intel_blocklist=files needs output_dir"):
        response_settings(threat_intel_blocklist="files")
    with pytest.raises(ValueError, match="threat_intel_view"):
        response_settings(threat_intel_view="x; DROP TABLE y")


async def test_a_refresh_another_replica_holds_is_skipped(db: str, tmp_path: Path) -> None:
    from qcdr_response.intel.blocklist import LOCK_KEY

    holder = await asyncpg.connect(db.replace("+asyncpg", ""))
    loop = Loop(_settings(db, tmp_path, None))
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        assert (await loop.refresh()).outcome == "skipped"
        assert not (tmp_path / "out" / FILENAME).exists()
        await holder.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        assert (await loop.refresh()).outcome == "changed"
    finally:
        await holder.close()
        await loop.close()


async def test_replicas_apply_what_the_other_changed_back(
    db: str, k8s: K8sTestServer, tmp_path: Path
) -> None:
    """B applies set X, A applies Y, the feeds go back to X: B applies X again (it used to remember
    only its own last write and skip), and an unchanged set is applied by neither."""
    kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig")
    a = Loop(_settings(db, tmp_path / "a", kubeconfig))
    b = Loop(_settings(db, tmp_path / "b", kubeconfig))
    x = {GROUPS[0]: ["192.0.2.0/25", "198.51.100.7/32"], GROUPS[1]: ["2001:db8:1::/48"]}
    try:
        assert (await b.refresh()).outcome == "changed"
        assert _group_cidrs(k8s) == x
        await run_sql(db, "DELETE FROM intel_indicators WHERE cidr = '192.0.2.0/25'")
        assert (await a.refresh()).outcome == "changed"
        assert _group_cidrs(k8s) == {GROUPS[0]: ["198.51.100.7/32", "2001:db8:1::/48"]}
        await run_sql(
            db, "INSERT INTO intel_indicators (cidr, feeds, confidence) VALUES ($1, $2, $3)", *LISTED[:1]
        )
        assert (await b.refresh()).outcome == "changed"
        assert _group_cidrs(k8s) == x
        # unchanged for both now; a's own file catches up without an apply
        assert (await a.refresh()).outcome == "unchanged"
        assert (await b.refresh()).outcome == "unchanged"
        assert (tmp_path / "a" / "out" / FILENAME).read_text() == (
            tmp_path / "b" / "out" / FILENAME
        ).read_text()
    finally:
        await a.close()
        await b.close()
