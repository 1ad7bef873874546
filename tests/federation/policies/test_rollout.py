"""Progressive rollouts and suspension of federated policies: which clusters a new generation
reaches and when (:func:`rollout.assess`, then through the hub app: pulls, status reports, the
rollout view), what a suspended policy keeps, and what the spec refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from pydantic import ValidationError
from qcdr_common.contracts.federation.v1 import FederatedPolicySpec, Rollout
from qcdr_federation.hub.policies import repository as repo
from qcdr_federation.hub.policies.metrics import ROLLOUTS_HALTED
from qcdr_federation.hub.policies.rollout import ROLLOUT_LOCK_KEY, ClusterTimes, RolloutLoop, advance, assess
from qcdr_federation.hub.policies.sets import LivePolicy
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from tests.federation.conftest import READ_HEADERS, WRITE_HEADERS, make_hub_settings
from tests.federation.policies.conftest import (
    Clusters,
    policies_app,
    policy_body,
    running,
    spoke,
    tracing_policy,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

# --------------------------------------------------------------------------- assess (no I/O)


def _policy(generation: int = 2, *, enforce: bool = True, **rollout: Any) -> LivePolicy:
    spec = FederatedPolicySpec.model_validate(
        {
            "template": tracing_policy(),
            "placement": {"cluster_selector": {"match_labels": {"env": "prod"}}},
            "enforce": enforce,
            "rollout": {"strategy": "progressive", **rollout},
        }
    )
    return LivePolicy("fp-1", "no-ptrace", generation, spec)


def _clusters(*names: str) -> list[repo.LiveCluster]:
    return [repo.LiveCluster(f"id-{n}", n, {"env": "prod"}) for n in names]


def _applied(generation: int, at: datetime, state: str = "applied") -> ClusterTimes:
    return ClusterTimes(generation, state, None, at)


def test_canaries_first_then_by_name_a_few_at_a_time() -> None:
    placed = _clusters("d", "b", "a", "c")
    progress = assess(_policy(max_concurrency=2, order=("c",)), placed, {}, {}, T0)
    assert [c.cluster for c in progress.clusters] == ["c", "a", "b", "d"]
    assert progress.to_release == ("id-c", "id-a")
    assert progress.phase == "progressing"

    releases = {"id-c": (2, T0), "id-a": (2, T0)}
    # both updating: no free slot
    assert assess(_policy(max_concurrency=2), placed, releases, {}, T0).to_release == ()
    # one done: one slot
    statuses = {"id-a": _applied(2, T0)}
    assert assess(_policy(max_concurrency=2), placed, releases, statuses, T0).to_release == ("id-b",)


def test_a_percentage_of_the_placed_clusters_at_least_one() -> None:
    assert Rollout(strategy="progressive", max_concurrency="25%").concurrency(8) == 2
    assert Rollout(strategy="progressive", max_concurrency="25%").concurrency(3) == 1
    assert Rollout(strategy="progressive", max_concurrency="100%").concurrency(5) == 5
    assert len(assess(_policy(max_concurrency="50%"), _clusters(*"abcd"), {}, {}, T0).to_release) == 2


@pytest.mark.parametrize("bad", [0, -1, "0%", "150%", "25", "a%", "%"])
def test_max_concurrency_must_make_sense(bad: Any) -> None:
    with pytest.raises(ValidationError, match="max_concurrency"):
        Rollout(strategy="progressive", max_concurrency=bad)


def test_done_only_after_staying_applied_for_the_minimum_time() -> None:
    placed = _clusters("a", "b")
    releases = {"id-a": (2, T0)}
    statuses = {"id-a": _applied(2, T0)}
    policy = _policy(min_success_time_s=60)
    early = assess(policy, placed, releases, statuses, T0 + timedelta(seconds=59))
    assert early.clusters[0].phase == "updating"
    assert early.to_release == ()
    later = assess(policy, placed, releases, statuses, T0 + timedelta(seconds=60))
    assert later.clusters[0].phase == "done"
    assert later.to_release == ("id-b",)


def test_an_older_generation_applied_is_not_done() -> None:
    progress = assess(_policy(), _clusters("a", "b"), {"id-a": (2, T0)}, {"id-a": _applied(1, T0)}, T0)
    assert progress.clusters[0].phase == "updating"


def test_proposed_is_done_only_for_a_policy_that_is_not_enforced() -> None:
    statuses = {"id-a": _applied(2, T0, "proposed")}
    releases = {"id-a": (2, T0)}
    enforced = assess(_policy(enforce=True), _clusters("a"), releases, statuses, T0)
    assert enforced.clusters[0].phase == "updating"
    proposed = assess(_policy(enforce=False), _clusters("a"), releases, statuses, T0)
    assert proposed.clusters[0].phase == "done"
    assert proposed.phase == "complete"


def test_failures_beyond_the_budget_halt_the_rollout() -> None:
    placed = _clusters("a", "b", "c")
    releases = {"id-a": (2, T0)}
    statuses = {"id-a": _applied(2, T0, "failed")}
    halted = assess(_policy(), placed, releases, statuses, T0)
    assert halted.phase == "halted"
    assert halted.to_release == ()
    tolerated = assess(_policy(max_failures=1), placed, releases, statuses, T0)
    assert tolerated.phase == "progressing"
    assert tolerated.to_release == ("id-b",)  # a failed cluster holds no slot


def test_a_cluster_silent_past_the_deadline_is_a_failure() -> None:
    policy = _policy(progress_deadline_s=300)
    placed = _clusters("a", "b")
    releases = {"id-a": (2, T0)}
    assert assess(policy, placed, releases, {}, T0 + timedelta(seconds=300)).clusters[0].phase == "updating"
    late = assess(policy, placed, releases, {}, T0 + timedelta(seconds=301))
    assert late.clusters[0].phase == "failed"
    assert "progress deadline" in (late.clusters[0].message or "")
    assert late.phase == "halted"


def test_a_render_error_is_a_failure_and_suspension_releases_nothing() -> None:
    placed = _clusters("a", "b")
    releases = {"id-a": (2, T0)}
    broken = assess(_policy(max_failures=5), placed, releases, {}, T0, render_errors={"id-a": "no /spec/x"})
    assert broken.clusters[0].phase == "failed"
    assert broken.to_release == ("id-b",)
    suspended = assess(_policy(), placed, {}, {}, T0, suspended=True)
    assert (suspended.phase, suspended.to_release) == ("suspended", ())


def test_complete_when_every_placed_cluster_is_done() -> None:
    releases = {"id-a": (2, T0), "id-b": (2, T0)}
    statuses = {"id-a": _applied(2, T0), "id-b": _applied(2, T0)}
    progress = assess(_policy(), _clusters("a", "b"), releases, statuses, T0)
    assert progress.phase == "complete"
    assert progress.count("done") == 2


# --------------------------------------------------------------------------- through the hub

pytestmark = [pytest.mark.db, pytest.mark.redis]


@pytest.fixture
async def hub(
    federation_db: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    # the loop's own period is long: each test moves the rollout on with once()
    settings = make_hub_settings(
        federation_db, redis_url, redis_prefix, long_poll_max_s=10.0, rollout_interval_s=3600.0
    )
    app = policies_app(settings)
    async with running(app) as client:
        yield app, client


async def generations(client: httpx.AsyncClient, *names: str) -> dict[str, int | None]:
    """The generation of the (single) policy each cluster pulls now, None for none."""
    found: dict[str, int | None] = {}
    for name in names:
        response = await client.get("/federation/v1/policies", headers=spoke(name))
        assert response.status_code == 200, response.text
        policies = response.json()["policies"]
        found[name] = policies[0]["generation"] if policies else None
    return found


async def report(client: httpx.AsyncClient, cluster: str, state: str, message: str | None = None) -> None:
    """The cluster reports the policy it pulls now as ``state``."""
    placed = (await client.get("/federation/v1/policies", headers=spoke(cluster))).json()["policies"][0]
    item = {
        "policy_id": placed["policy_id"],
        "generation": placed["generation"],
        "content_hash": placed["content_hash"],
        "state": state,
        "message": message,
        "observed_at": datetime.now(UTC).isoformat(),
    }
    response = await client.post("/federation/v1/status", json={"policies": [item]}, headers=spoke(cluster))
    assert response.status_code == 204, response.text


async def rollout_view(client: httpx.AsyncClient, policy_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/federated-policies/{policy_id}/rollout", headers=READ_HEADERS)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def put(client: httpx.AsyncClient, policy_id: str, body: dict[str, Any]) -> httpx.Response:
    return await client.put(f"/v1/federated-policies/{policy_id}", json=body, headers=WRITE_HEADERS)


def rollouts(app: FastAPI) -> RolloutLoop:
    loop: RolloutLoop = app.state.rollouts
    return loop


async def test_an_update_rolls_out_canary_first_and_halts_on_a_failure(
    hub: tuple[FastAPI, httpx.AsyncClient], clusters: Clusters
) -> None:
    app, client = hub
    for name in ("a-1", "b-1", "c-1"):
        await clusters.add(name, {"env": "prod"})
    created = await client.post("/v1/federated-policies", json=policy_body(), headers=WRITE_HEADERS)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    assert await generations(client, "a-1", "b-1", "c-1") == {"a-1": 1, "b-1": 1, "c-1": 1}  # "all"
    view = await rollout_view(client, pid)
    assert (view["strategy"], view["phase"]) == ("all", "progressing")
    for name in ("a-1", "b-1", "c-1"):
        await report(client, name, "applied")
    assert (await rollout_view(client, pid))["phase"] == "complete"

    # the next generation rolls out one cluster at a time, c-1 first
    body = policy_body(
        template=tracing_policy(action="Post"),
        rollout={"strategy": "progressive", "max_concurrency": 1, "order": ["c-1"]},
    )
    updated = await client.put(f"/v1/federated-policies/{pid}", json=body, headers=WRITE_HEADERS)
    assert updated.status_code == 200, updated.text
    assert updated.json()["generation"] == 2
    assert updated.json()["rollout"]["strategy"] == "progressive"
    # turning the rollout on takes nothing away: every cluster keeps generation 1
    assert await generations(client, "a-1", "b-1", "c-1") == {"a-1": 1, "b-1": 1, "c-1": 1}

    released_before = REGISTRY.get_sample_value("qcdr_federation_rollout_releases_total") or 0.0
    assert await rollouts(app).once() == 1
    assert await generations(client, "a-1", "b-1", "c-1") == {"a-1": 1, "b-1": 1, "c-1": 2}
    assert REGISTRY.get_sample_value("qcdr_federation_rollout_releases_total") == released_before + 1
    view = await rollout_view(client, pid)
    assert view["phase"] == "progressing"
    assert [(c["cluster"], c["phase"], c["released_generation"]) for c in view["clusters"]] == [
        ("c-1", "updating", 2),
        ("a-1", "waiting", 1),
        ("b-1", "waiting", 1),
    ]
    assert await rollouts(app).once() == 0  # c-1 has not reported yet

    await report(client, "c-1", "applied")
    assert await rollouts(app).once() == 1
    assert await generations(client, "a-1", "b-1") == {"a-1": 2, "b-1": 1}

    await report(client, "a-1", "failed", "admission webhook denied the policy")
    assert await rollouts(app).once() == 0
    view = await rollout_view(client, pid)
    assert view["phase"] == "halted"
    assert view["counts"] == {"waiting": 1, "updating": 0, "done": 1, "failed": 1}
    failed = next(c for c in view["clusters"] if c["cluster"] == "a-1")
    assert failed["message"] == "admission webhook denied the policy"
    assert REGISTRY.get_sample_value("qcdr_federation_rollouts_halted") == 1.0
    assert await generations(client, "b-1") == {"b-1": 1}  # not reached: keeps what it had

    # back to "all": every placed cluster gets the current generation at once
    body["rollout"] = {"strategy": "all"}
    assert (await put(client, pid, body)).status_code == 200
    assert await generations(client, "a-1", "b-1", "c-1") == {"a-1": 3, "b-1": 3, "c-1": 3}


async def test_a_failed_rollout_rolls_back_and_waits_for_a_resume(
    hub: tuple[FastAPI, httpx.AsyncClient], clusters: Clusters
) -> None:
    """on_failure: rollback. The clusters that got the failing generation get their previous one
    back (a cluster that had none loses the policy); nothing more is released until a resume."""
    app, client = hub
    for name in ("a-1", "b-1", "c-1"):
        await clusters.add(name, {"env": "prod"})
    pid = (await client.post("/v1/federated-policies", json=policy_body(), headers=WRITE_HEADERS)).json()[
        "id"
    ]
    for name in ("a-1", "b-1", "c-1"):
        await report(client, name, "applied")

    rollout = {
        "strategy": "progressive",
        "max_concurrency": 2,
        "order": ["d-1", "c-1"],
        "on_failure": "rollback",
    }
    body = policy_body(template=tracing_policy(action="Post"), rollout=rollout)
    updated = await put(client, pid, body)
    assert updated.status_code == 200, updated.text
    assert updated.json()["rollout"]["on_failure"] == "rollback"
    await clusters.add("d-1", {"env": "prod"})  # joins during the rollout: generation 2 is its first
    await app.state.placements.changed()
    assert await rollouts(app).once() == 2
    assert await generations(client, "a-1", "b-1", "c-1", "d-1") == {"a-1": 1, "b-1": 1, "c-1": 2, "d-1": 2}
    rolled_before = REGISTRY.get_sample_value("qcdr_federation_rollout_rollbacks_total") or 0.0

    await report(client, "c-1", "failed", "Tetragon refused the policy")
    assert await rollouts(app).once() == 2  # two clusters changed back
    assert await generations(client, "a-1", "b-1", "c-1", "d-1") == {
        "a-1": 1,
        "b-1": 1,
        "c-1": 1,
        "d-1": None,
    }
    assert REGISTRY.get_sample_value("qcdr_federation_rollout_rollbacks_total") == rolled_before + 1
    view = await rollout_view(client, pid)
    assert (view["generation"], view["phase"]) == (2, "rolled_back")
    assert await rollouts(app).once() == 0  # stays rolled back
    assert REGISTRY.get_sample_value("qcdr_federation_rollouts_halted") == 0.0

    # a resume starts the rollout of generation 2 over (the operator fixed the clusters)
    resumed = await client.post(f"/v1/federated-policies/{pid}/resume", headers=WRITE_HEADERS)
    assert resumed.status_code == 200, resumed.text
    assert (await rollout_view(client, pid))["phase"] == "progressing"
    assert await rollouts(app).once() == 2
    assert await generations(client, "c-1", "d-1") == {"c-1": 2, "d-1": 2}
    # c-1's failure was about the first try: it is updating again, not failed
    view = await rollout_view(client, pid)
    assert view["phase"] == "progressing"
    assert {c["cluster"]: c["phase"] for c in view["clusters"]}["c-1"] == "updating"
    assert await rollouts(app).once() == 0

    # a rollback again, then a new generation rolls out without a resume
    await report(client, "d-1", "failed")
    assert await rollouts(app).once() == 2
    assert (await rollout_view(client, pid))["phase"] == "rolled_back"
    body["description"] = "the third try"
    assert (await put(client, pid, body)).json()["generation"] == 3
    assert (await rollout_view(client, pid))["phase"] == "progressing"
    assert await rollouts(app).once() == 2
    assert await generations(client, "c-1", "d-1") == {"c-1": 3, "d-1": 3}


def test_on_failure_halt_keeps_the_content_hash_of_older_rollouts() -> None:
    from qcdr_federation.hub.policies.render import spec_hash, spec_json

    spec = _policy().spec
    assert "on_failure" not in spec_json(spec)["rollout"]  # the default is left out of the hash
    rollback = spec.model_copy(update={"rollout": spec.rollout.model_copy(update={"on_failure": "rollback"})})
    assert spec_json(rollback)["rollout"]["on_failure"] == "rollback"
    assert spec_hash(rollback) != spec_hash(spec)
    with pytest.raises(ValidationError):
        Rollout(strategy="progressive", on_failure="retry")  # type: ignore[arg-type]


async def test_a_new_policy_reaches_half_the_clusters_at_a_time(
    hub: tuple[FastAPI, httpx.AsyncClient], clusters: Clusters
) -> None:
    app, client = hub
    names = ("p-1", "p-2", "p-3", "p-4")
    for name in names:
        await clusters.add(name, {"env": "prod"})
    body = policy_body(rollout={"strategy": "progressive", "max_concurrency": "50%"})
    pid = (await client.post("/v1/federated-policies", json=body, headers=WRITE_HEADERS)).json()["id"]
    assert set((await generations(client, *names)).values()) == {None}  # nothing before the loop runs

    assert await rollouts(app).once() == 2
    assert await generations(client, *names) == {"p-1": 1, "p-2": 1, "p-3": None, "p-4": None}
    await report(client, "p-1", "applied")
    assert await rollouts(app).once() == 1
    await report(client, "p-2", "applied")
    await report(client, "p-3", "applied")
    assert await rollouts(app).once() == 1
    await report(client, "p-4", "applied")
    assert await rollouts(app).once() == 0
    view = await rollout_view(client, pid)
    assert (view["phase"], view["counts"]["done"]) == ("complete", 4)

    # a cluster taken off the placement loses the policy at once, rollout or not
    await clusters.relabel("p-4", {"env": "staging"})
    await app.state.placements.changed()
    assert await generations(client, "p-4") == {"p-4": None}


async def test_a_suspended_policy_stays_where_it_is_until_resumed(
    hub: tuple[FastAPI, httpx.AsyncClient], clusters: Clusters
) -> None:
    app, client = hub
    await clusters.add("s-1", {"env": "prod"})
    await clusters.add("s-2", {"env": "prod"})
    await clusters.add("s-3", {"env": "staging"})
    created = await client.post("/v1/federated-policies", json=policy_body(), headers=WRITE_HEADERS)
    pid = created.json()["id"]
    assert await generations(client, "s-1", "s-2", "s-3") == {"s-1": 1, "s-2": 1, "s-3": None}

    suspended = await client.post(f"/v1/federated-policies/{pid}/suspend", headers=WRITE_HEADERS)
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["suspended"] is True
    assert suspended.json()["suspended_by"]
    again = await client.post(f"/v1/federated-policies/{pid}/suspend", headers=WRITE_HEADERS)
    assert again.json()["suspended_at"] == suspended.json()["suspended_at"]  # twice changes nothing

    # a new generation, a cluster joining the placement, one leaving it: nothing moves
    body = policy_body(template=tracing_policy(action="Post"))
    assert (await put(client, pid, body)).status_code == 200
    await clusters.relabel("s-3", {"env": "prod"})
    await clusters.relabel("s-2", {"env": "staging"})
    await app.state.placements.changed()
    assert await rollouts(app).once() == 0
    assert await generations(client, "s-1", "s-2", "s-3") == {"s-1": 1, "s-2": 1, "s-3": None}
    view = await rollout_view(client, pid)
    assert (view["phase"], view["suspended"]) == ("suspended", True)

    resumed = await client.post(f"/v1/federated-policies/{pid}/resume", headers=WRITE_HEADERS)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["suspended"] is False
    assert await generations(client, "s-1", "s-2", "s-3") == {"s-1": 2, "s-2": None, "s-3": 2}


async def test_created_suspended_and_suspended_with_a_change_through_the_body(
    hub: tuple[FastAPI, httpx.AsyncClient], clusters: Clusters
) -> None:
    _, client = hub
    await clusters.add("w-1", {"env": "prod"})
    body = policy_body(suspended=True)
    created = await client.post("/v1/federated-policies", json=body, headers=WRITE_HEADERS)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    assert created.json()["suspended"] is True
    assert await generations(client, "w-1") == {"w-1": None}  # created suspended: nobody has it

    body["suspended"] = False  # same spec: no new generation, only resumed
    resumed = await put(client, pid, body)
    assert (resumed.json()["generation"], resumed.json()["suspended"]) == (1, False)
    assert await generations(client, "w-1") == {"w-1": 1}

    # a new template and a suspension in one PUT: the cluster keeps generation 1
    changed = await put(client, pid, policy_body(template=tracing_policy(action="Post"), suspended=True))
    assert (changed.json()["generation"], changed.json()["suspended"]) == (2, True)
    assert await generations(client, "w-1") == {"w-1": 1}
    # omitted: the suspension stays as it is
    same = await put(client, pid, policy_body(template=tracing_policy(action="Post")))
    assert same.json()["suspended"] is True
    assert await generations(client, "w-1") == {"w-1": 1}
    body = policy_body(template=tracing_policy(action="Post"), suspended=False)
    assert (await put(client, pid, body)).json()["suspended"] is False
    assert await generations(client, "w-1") == {"w-1": 2}


async def test_suspend_and_resume_need_a_live_policy_and_the_write_scope(
    hub: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = hub
    missing = "fp-00000000-0000-0000-0000-000000000000"
    for verb in ("suspend", "resume"):
        response = await client.post(f"/v1/federated-policies/{missing}/{verb}", headers=WRITE_HEADERS)
        assert response.status_code == 404
        assert response.json()["reason"] == "policy_not_found"
        read_only = await client.post(f"/v1/federated-policies/{missing}/{verb}", headers=READ_HEADERS)
        assert read_only.status_code == 403
    view = await client.get(f"/v1/federated-policies/{missing}/rollout", headers=READ_HEADERS)
    assert view.status_code == 404


async def test_a_bad_rollout_is_refused_with_the_reason(
    hub: tuple[FastAPI, httpx.AsyncClient], clusters: Clusters
) -> None:
    _, client = hub
    body = policy_body(rollout={"strategy": "progressive", "max_concurrency": "150%"})
    response = await client.post("/v1/federated-policies", json=body, headers=WRITE_HEADERS)
    assert response.status_code == 422
    assert "max_concurrency" in response.text
    body = policy_body(rollout={"strategy": "canary"})
    assert (await client.post("/v1/federated-policies", json=body, headers=WRITE_HEADERS)).status_code == 422


async def test_a_replica_without_the_lock_reports_no_halted_rollouts(federation_db: str) -> None:
    """The gauge is the lock holder's: another replica's pass sets it to 0, so a sum over the
    replicas counts each halted rollout once even after the lock moved. (No hub app here: its own
    rollout loop would take the lock now and then.)"""
    engine = create_async_engine(federation_db, poolclass=NullPool)
    sessions = async_sessionmaker(engine)
    try:
        ROLLOUTS_HALTED.set(3)
        async with sessions() as holder, sessions() as other:
            assert await holder.scalar(select(func.pg_try_advisory_xact_lock(ROLLOUT_LOCK_KEY)))
            assert await advance(other) == 0
            assert REGISTRY.get_sample_value("qcdr_federation_rollouts_halted") == 0.0
    finally:
        await engine.dispose()
