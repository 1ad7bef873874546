"""Rollouts: a new image of a workload starts from the baseline of the image it replaced (same
repository, ready, recent) and learns one hour on top of it, instead of 48 hours from nothing;
found in this worker's memory or, after a restart, in Postgres."""

from __future__ import annotations

from datetime import timedelta

import pytest
from qcdr_analysis.detectors import behaviour
from qcdr_analysis.profiles import service
from qcdr_analysis.profiles.profile import Limits, Profile
from qcdr_analysis.profiles.rollout import repository
from qcdr_common.contracts.events.v1 import SecurityEvent
from sqlalchemy import text

from tests.analysis.conftest import T0
from tests.analysis.profiles_factory import (
    HOURS,
    OTHER_DIGEST,
    PROFILE,
    WORKLOAD,
    by_category,
    detector,
    exec_event,
    exec_hash_event,
)
from tests.analysis.test_profiles_store import Sessions, batch, learn, sessions

__all__ = ["sessions"]

V2 = f"sha256:{OTHER_DIGEST}"
READY = T0 + 48 * HOURS
MINUTES = timedelta(minutes=1)


def v2(event: SecurityEvent, image: str = "docker.io/acme/api:2.0") -> SecurityEvent:
    """The same event from the workload's next image (a new digest; the factory's pods run 1.0)."""
    workload = event.workload.model_copy(update={"image_digest": V2, "image": image})
    return event.model_copy(update={"workload": workload})


async def learn_v1(sessions: Sessions, state: behaviour.State) -> None:
    """The first image's 48 h of learning, then one event that finds its profile ready."""
    await learn(sessions, state)
    await batch(
        sessions, state, exec_event("/usr/local/bin/python3", READY, parent="/usr/local/bin/gunicorn")
    )


async def summary(sessions: Sessions, key: str) -> dict[str, object]:
    async with sessions() as session:
        row = await service.resolve(session, key)
        assert row is not None
        return service.summary_of(row).model_dump()


@pytest.mark.db
@pytest.mark.parametrize("worker", ["same", "restarted"])
async def test_a_rollout_starts_from_the_replaced_images_baseline(sessions: Sessions, worker: str) -> None:
    state = detector(count_flush_interval="PT0S")
    await learn_v1(sessions, state)
    if worker == "restarted":  # the new image arrives at a worker with empty memory: Postgres has it
        state = detector(count_flush_interval="PT0S")
    start = READY + 2 * HOURS
    # the new version runs what the old one did: nothing to report, from its first event
    first = await batch(
        sessions, state, v2(exec_event("/usr/local/bin/python3", start, parent="/usr/local/bin/gunicorn"))
    )
    assert first == []
    profile = state.store.get(V2)
    assert profile is not None
    assert profile.inherited is not None
    assert profile.inherited["from"] == PROFILE
    assert profile.inherited["workload"] == WORKLOAD
    assert profile.learning_period == 3600
    assert "/usr/bin/curl" in profile.processes  # the old image's baseline
    assert profile.workloads == {WORKLOAD: start.timestamp()}  # its own workloads only
    # what it does new in its first hour joins the baseline
    assert await batch(sessions, state, v2(exec_event("/usr/local/bin/migrate", start + 10 * MINUTES))) == []
    after = start + 2 * HOURS
    assert await batch(sessions, state, v2(exec_event("/usr/local/bin/migrate", after))) == []
    raised = by_category(await batch(sessions, state, v2(exec_event("/usr/bin/xmrig", after + MINUTES))))
    assert set(raised) == {"anomaly.unknown_process", "drift.new_executable"}
    learning = raised["anomaly.unknown_process"].attributes["explanation"]["learning"]
    assert learning["inherited_from"] == PROFILE
    assert learning["period_hours"] == 1
    assert (
        f"on top of the baseline of the image it replaced ({PROFILE})"
        in raised["anomaly.unknown_process"].explanation
    )
    listed = await summary(sessions, V2)
    assert listed["inherited_from"] == PROFILE
    assert listed["state"] == "ready"
    assert (await summary(sessions, PROFILE))["inherited_from"] is None
    async with sessions() as session:
        row = (await session.execute(text("SELECT profile_key, image FROM analysis_profile_workloads"))).one()
    assert (row.profile_key, row.image) == (V2, "docker.io/acme/api:2.0")


@pytest.mark.db
@pytest.mark.parametrize(
    ("case", "expect_inherited"),
    [
        ("same repository", True),
        ("another repository (a sidecar)", False),
        ("replaced image idle too long", False),
        ("switched off", False),
        ("replaced image still learning", False),
    ],
)
async def test_what_passes_a_baseline_on(sessions: Sessions, case: str, expect_inherited: bool) -> None:
    config = {"inherit_on_rollout": False} if case == "switched off" else {}
    state = detector(**config)
    if case == "replaced image still learning":
        await batch(sessions, state, exec_event("/usr/bin/curl", T0, parent="/bin/sh"))
    else:
        await learn_v1(sessions, state)
    at = READY + 2 * HOURS
    if case == "replaced image idle too long":
        at = READY + timedelta(days=15)
    image = (
        "docker.io/istio/proxyv2:1.20"
        if case == "another repository (a sidecar)"
        else "docker.io/acme/api:2.0"
    )
    await batch(sessions, state, v2(exec_event("/usr/local/bin/python3", at), image=image))
    profile = state.store.get(V2)
    assert profile is not None
    assert (profile.inherited is not None) is expect_inherited
    assert profile.learning_period == (3600 if expect_inherited else 48 * 3600)
    assert ("/usr/bin/curl" in profile.processes) is expect_inherited


@pytest.mark.db
async def test_hashes_are_the_new_images_own(sessions: Sessions) -> None:
    """A new build has new executable hashes: the old ones are not inherited (they would all
    read as modified executables); the new image learns its own in its first hour."""
    state = detector()
    await batch(sessions, state, exec_hash_event("/usr/local/bin/python3", "aa" * 32, T0))
    await learn_v1(sessions, state)
    old = state.store.get(PROFILE)
    assert old is not None
    assert set(old.processes["/usr/local/bin/python3"].hashes) == {"sha256:" + "aa" * 32}
    start = READY + 2 * HOURS
    await batch(sessions, state, v2(exec_event("/usr/local/bin/python3", start)))
    profile = state.store.get(V2)
    assert profile is not None
    assert all(not p.hashes for p in profile.processes.values())
    await batch(sessions, state, v2(exec_hash_event("/usr/local/bin/python3", "bb" * 32, start + MINUTES)))
    later = start + 3 * HOURS
    assert await batch(sessions, state, v2(exec_hash_event("/usr/local/bin/python3", "bb" * 32, later))) == []
    modified = await batch(sessions, state, v2(exec_hash_event("/usr/local/bin/python3", "cc" * 32, later)))
    assert [f.category for f in modified] == ["drift.modified_executable"]


def test_successor_keeps_the_baseline_and_drops_what_belongs_to_the_old_image() -> None:
    old = Profile(PROFILE, Limits(), generation=7)
    old.start(0.0, 10.0)
    old.learn_exec("/bin/app", "/bin/sh", 1.0)
    old.learn_hash("/bin/app", "sha256:" + "aa" * 32, 1.0)
    old.learn_destination(["10.0.0.20:5432"], 5432, 1.0)
    old.learn_file("/app/config.yaml", False, 1.0)
    old.see_workload(WORKLOAD, 1.0)
    old.ready = True
    old.novel_entry("anomaly.unknown_process", "/tmp/x", 20.0)
    new = old.successor(V2, WORKLOAD, 100.0)
    assert (new.key, new.generation, new.first_seen, new.ready, new.events) == (V2, 0, None, False, 0)
    assert new.processes["/bin/app"].parents == {"/bin/sh": 1}
    assert new.processes["/bin/app"].hashes == {}
    assert set(new.destinations) == {"10.0.0.20:5432"}
    assert set(new.ports) == {5432}
    assert set(new.files) == {"/app/config.yaml"}
    assert (new.workloads, new.novel) == ({}, {})
    assert new.missing_mass("processes") == old.missing_mass("processes")
    assert new.inherited == {"from": PROFILE, "generation": 7, "workload": WORKLOAD, "taken_at": 100.0}
    assert old.processes["/bin/app"].hashes  # the old profile is untouched
    again = Profile.from_json(new.to_json(), Limits(), 1)
    assert again.inherited == new.inherited
    assert again.summary()["inherited_from"] == PROFILE
    again.reset()  # an API reset learns from nothing again
    assert again.inherited is None
    assert "inherited" not in again.to_json()


@pytest.mark.parametrize(
    ("image", "repo"),
    [
        ("docker.io/acme/api:1.0", "docker.io/acme/api"),
        ("docker.io/acme/api@sha256:" + "ab" * 32, "docker.io/acme/api"),
        ("registry.local:5000/team/api:2.1@sha256:" + "ab" * 32, "registry.local:5000/team/api"),
        ("registry.local:5000/api", "registry.local:5000/api"),
        ("nginx", "nginx"),
        ("nginx:1.27", "nginx"),
        ("", None),
        (None, None),
    ],
)
def test_repository_of_an_image_reference(image: str | None, repo: str | None) -> None:
    assert repository(image) == repo
