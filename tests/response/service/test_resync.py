"""The response worker's resync period: what failed to reach the cluster or the policy folder is
retried without a new finding (a quiet stream would otherwise leave it undone for good)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from qcdr_common.streams.names import stream_key
from qcdr_common.streams.producer import publish
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_response.lifecycle.cluster import ClusterError, ClusterGateway
from redis.asyncio import Redis

from tests.response.service.conftest import finding_envelope, make_finding
from tests.response.service.test_worker import FINDINGS, eventually, running, scalar, settings_for

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]

RESYNC_S = 0.3


class FlakyGateway(ClusterGateway):
    """The cluster's API server refuses applies until ``down`` is cleared."""

    down = True
    attempts = 0

    async def apply(self, doc: Any) -> str:
        self.attempts += 1
        if self.down:
            raise ClusterError("connection refused (the API server restarts)")
        return await super().apply(doc)


async def test_a_failed_auto_apply_is_retried_once_the_cluster_is_back_without_a_new_finding(
    committed_db: str,
    redis_url: str,
    redis_prefix: str,
    redis_client: Redis,
    tmp_path: Path,
    shared_path: Path,
) -> None:
    k8s = K8sTestServer(validator=ManifestValidator(shared_path))
    with k8s.serve():
        settings = settings_for(
            committed_db,
            redis_url,
            redis_prefix,
            auto_apply=True,
            kubeconfig=k8s.write_kubeconfig(tmp_path / "kubeconfig"),
            policy_resync_s=RESYNC_S,
        )
        base = ClusterGateway.from_settings(settings)
        assert base is not None
        cluster = FlakyGateway(base._factory, field_manager=base.field_manager)
        key = stream_key(redis_prefix, FINDINGS)
        await publish(redis_client, key, [finding_envelope(make_finding())], maxlen=10_000)
        try:
            async with running(settings, redis_client, cluster=cluster):

                async def tried_twice() -> bool:  # the batch's apply, then a resync's
                    return cluster.attempts >= 2

                await eventually(tried_twice)
                assert await scalar(committed_db, "SELECT status FROM response_policies") == "approved"
                cluster.down = False  # the API server is back; no finding comes

                async def applied() -> bool:
                    return await scalar(committed_db, "SELECT status FROM response_policies") == "applied"

                await eventually(applied, within_s=10)
            kind = await scalar(committed_db, "SELECT kind FROM response_policies")
            name = await scalar(committed_db, "SELECT name FROM response_policies")
            assert name in {n for _, n in k8s.objects(kind)}
        finally:
            await cluster.close()


async def test_a_policy_file_deleted_by_hand_comes_back(
    committed_db: str, redis_url: str, redis_prefix: str, redis_client: Redis, tmp_path: Path
) -> None:
    out = tmp_path / "policies"
    settings = settings_for(committed_db, redis_url, redis_prefix, output_dir=out, policy_resync_s=RESYNC_S)
    key = stream_key(redis_prefix, FINDINGS)
    await publish(redis_client, key, [finding_envelope(make_finding())], maxlen=10_000)
    async with running(settings, redis_client):

        async def written() -> bool:
            return any(out.glob("*.yaml"))

        await eventually(written)
        files = sorted(out.glob("*.yaml"))
        contents = {f.name: f.read_text() for f in files}
        for f in files:
            f.unlink()
        await eventually(written, within_s=10)
        assert {f.name: f.read_text() for f in sorted(out.glob("*.yaml"))} == contents
