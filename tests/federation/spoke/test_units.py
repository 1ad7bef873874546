"""The spoke's pure parts: back-off, mapping response events to apply statuses, the policy-set
diff, bootstrap-token reading, actions from the response API, and the hub client's error classes."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from qcdr_common.contracts.federation.v1 import (
    BaselineUpload,
    CommandKind,
    CommandResult,
    FederationRole,
    PlacedPolicy,
    PlacedPolicySet,
    PolicyApplyState,
    SharedBaseline,
    SpokeCommand,
    StatusReport,
)
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.streams.envelope import new_envelope
from qcdr_federation.backoff import Backoff, StoppedError, unless_stopped
from qcdr_federation.settings import MAX_HEARTBEAT_INTERVAL_S, MIN_HEARTBEAT_INTERVAL_S, FederationSettings
from qcdr_federation.spoke import baselines
from qcdr_federation.spoke.baselines import BaselineSync
from qcdr_federation.spoke.client import Credential, HubClient, HubError, HubErrorKind
from qcdr_federation.spoke.models import SpokePolicyRow
from qcdr_federation.spoke.policies import diff
from qcdr_federation.spoke.registration import Registrar, read_bootstrap_token
from qcdr_federation.spoke.response_api import ResponseApi, to_pending_action
from qcdr_federation.spoke.runtime import AgentState
from qcdr_federation.spoke.status import status_update

HUB = "http://hub.test"


def settings(**overrides: Any) -> FederationSettings:
    values: dict[str, Any] = {"role": FederationRole.SPOKE, "hub_url": HUB, "cluster_name": "spoke-a"}
    values.update(overrides)
    return FederationSettings(_env_file=None, **values)


# --------------------------------------------------------------------------- back-off


def test_backoff_has_full_jitter_under_a_growing_capped_ceiling() -> None:
    backoff = Backoff(4.0, base_s=0.5, rng=random.Random(7))
    ceilings = []
    for _ in range(8):
        ceiling = backoff.ceiling()
        delay = backoff.next_delay()
        assert 0 <= delay <= ceiling
        ceilings.append(ceiling)
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.ceiling() == 0.5
    # full jitter: the waits are spread over [0, ceiling], not bunched at it
    spread = Backoff(10.0, base_s=10.0, rng=random.Random(1))
    delays = [spread.next_delay() for _ in range(200)]
    assert min(delays) < 2.0
    assert max(delays) > 8.0


async def test_unless_stopped_cancels_a_held_call() -> None:
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def held() -> int:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    asyncio.get_running_loop().call_later(0.05, stop.set)
    with pytest.raises(StoppedError):
        await asyncio.wait_for(unless_stopped(held(), stop), 2)
    assert cancelled.is_set()
    assert await unless_stopped(asyncio.sleep(0, result=5), asyncio.Event()) == 5


# --------------------------------------------------------------------------- response events → statuses

FED = {"policy_id": "fp-1", "generation": 2, "content_hash": "h2"}


def envelope(type_: str, payload: dict[str, Any]) -> Any:
    return new_envelope(
        type_, payload, source="response", cluster_id="spoke-a", occurred_at=datetime.now(UTC)
    )


@pytest.mark.parametrize(
    ("type_", "field", "status", "expected"),
    [
        ("response.policy_status_changed", "to_status", "proposed", PolicyApplyState.PROPOSED),
        ("response.policy_status_changed", "to_status", "approved", PolicyApplyState.APPROVED),
        ("response.policy_status_changed", "to_status", "applied", PolicyApplyState.APPLIED),
        ("response.policy_status_changed", "to_status", "revoked", PolicyApplyState.REVOKED),
        ("response.policy_status_changed", "to_status", "rejected", PolicyApplyState.FAILED),
        ("response.policy_changed", "status", "proposed", PolicyApplyState.PROPOSED),
        ("response.policy_changed", "status", "approved", PolicyApplyState.APPROVED),
    ],
)
def test_response_statuses_map_to_apply_states(
    type_: str, field: str, status: str, expected: PolicyApplyState
) -> None:
    payload = {
        "kind": "TracingPolicy",
        "namespace": None,
        "name": "p",
        "version": 3,
        field: status,
        "federation": FED,
    }
    update = status_update(envelope(type_, payload))
    assert update is not None
    assert (update.policy_id, update.generation, update.content_hash, update.state) == (
        "fp-1",
        2,
        "h2",
        expected,
    )


def test_rejected_policy_fails_with_the_reason() -> None:
    payload = {
        "federation": FED,
        "kind": "TracingPolicy",
        "namespace": None,
        "name": "p",
        "reason": "bad selector",
        "stage": "validation",
    }
    update = status_update(envelope("response.policy_rejected", payload))
    assert update is not None
    assert update.state is PolicyApplyState.FAILED
    assert update.message == "bad selector"


@pytest.mark.parametrize(
    ("type_", "payload"),
    [
        ("response.policy_status_changed", {"to_status": "applied"}),  # not federated
        ("response.policy_status_changed", {"to_status": "applied", "federation": None}),
        ("response.policy_status_changed", {"to_status": "applied", "federation": {"policy_id": "x"}}),
        (
            "response.policy_status_changed",
            {"to_status": "applied", "federation": {"policy_id": "x", "generation": "2"}},
        ),
        ("response.policy_status_changed", {"to_status": "weird", "federation": FED}),
        ("response.action_completed", {"federation": FED, "to_status": "applied"}),
    ],
)
def test_events_that_say_nothing_about_a_federated_policy_are_ignored(
    type_: str, payload: dict[str, Any]
) -> None:
    assert status_update(envelope(type_, payload)) is None


# --------------------------------------------------------------------------- the set diff


def manifest(name: str, kind: str = "TracingPolicy", namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "cilium.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": {}}


def placed(policy_id: str, generation: int, content_hash: str, name: str = "p") -> PlacedPolicy:
    return PlacedPolicy(
        policy_id=policy_id,
        name=policy_id,
        generation=generation,
        content_hash=content_hash,
        enforce=False,
        manifest=manifest(name),
    )


def held(policy_id: str, generation: int, content_hash: str, name: str = "p") -> SpokePolicyRow:
    return SpokePolicyRow(
        policy_id=policy_id,
        name=policy_id,
        generation=generation,
        content_hash=content_hash,
        enforce=False,
        api_version="cilium.io/v1alpha1",
        kind="TracingPolicy",
        namespace=None,
        manifest_name=name,
        manifest=manifest(name),
    )


def test_diff_places_new_and_changed_and_removes_gone() -> None:
    rows = {
        "same": held("same", 1, "a"),
        "newgen": held("newgen", 1, "a"),
        "newhash": held("newhash", 3, "a"),
        "gone": held("gone", 1, "a"),
    }
    current = PlacedPolicySet(
        cluster="spoke-a",
        etag="e",
        policies=(
            placed("same", 1, "a"),
            placed("newgen", 2, "b"),
            placed("newhash", 3, "b"),
            placed("fresh", 1, "a"),
        ),
    )
    changes = diff(rows, current)
    assert sorted(p.policy_id for p in changes.placed) == ["fresh", "newgen", "newhash"]
    assert [r.policy_id for r in changes.removed] == ["gone"]
    assert not diff(
        {"same": rows["same"]}, PlacedPolicySet(cluster="c", etag="e", policies=(placed("same", 1, "a"),))
    )


def test_a_renamed_manifest_is_removed_under_its_old_identity() -> None:
    changes = diff(
        {"p1": held("p1", 1, "a", name="old-name")},
        PlacedPolicySet(cluster="c", etag="e", policies=(placed("p1", 2, "b", name="new-name"),)),
    )
    assert [p.policy_id for p in changes.placed] == ["p1"]
    assert [(r.policy_id, r.manifest_name) for r in changes.removed] == [("p1", "old-name")]


# --------------------------------------------------------------------------- bootstrap token


def test_bootstrap_token_file_is_read_on_every_attempt(tmp_path: Path) -> None:
    path = tmp_path / "token"
    s = settings(bootstrap_token_file=path, bootstrap_token=SecretStr("from-env"))
    assert read_bootstrap_token(s) is not None
    assert read_bootstrap_token(s).get_secret_value() == "from-env"  # type: ignore[union-attr]  # no file yet
    path.write_text("first\n")
    assert read_bootstrap_token(s).get_secret_value() == "first"  # type: ignore[union-attr]
    path.write_text("second")
    assert read_bootstrap_token(s).get_secret_value() == "second"  # type: ignore[union-attr]
    assert read_bootstrap_token(settings()) is None


# --------------------------------------------------------------------------- response API


def test_pending_actions_carry_the_response_api_fields() -> None:
    item = {
        "id": 42,
        "action": "kill_process",
        "state": "pending",
        "target": {"pod": "web-1"},
        "finding_id": "f-1",
        "created_at": "2026-01-01T00:00:00Z",
        "lease_expires_at": None,
        "reason": "chain",
        "requested_by": "playbook",
        "other": "dropped",
    }
    action = to_pending_action(item)
    assert action is not None
    assert (action.action_id, action.action, action.state, action.finding_id) == (
        "42",
        "kill_process",
        "pending",
        "f-1",
    )
    dumped = action.model_dump()
    assert dumped["reason"] == "chain"
    assert "other" not in dumped
    assert to_pending_action({"action": "x"}) is None


async def test_response_api_down_gives_503_and_commands_call_the_right_routes() -> None:
    seen: list[tuple[str, str, bytes, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.content, request.headers.get("Authorization")))
        if request.url.path.endswith("/undo"):
            return httpx.Response(409, json={"status": 409, "reason": "illegal_transition"})
        return httpx.Response(200, json={"id": 7, "state": "queued"})

    api = ResponseApi(settings(response_token=SecretStr("rt")), transport=httpx.MockTransport(handler))
    now = datetime.now(UTC)

    def command(kind: CommandKind, **extra: Any) -> SpokeCommand:
        return SpokeCommand(id="c", kind=kind, action_id="7", requested_by="alice", created_at=now, **extra)

    ok = await api.run_command(command(CommandKind.APPROVE, reason="looks right"))
    assert (ok.status_code, ok.body) == (200, {"id": 7, "state": "queued"})
    undo = await api.run_command(command(CommandKind.UNDO))
    assert undo.status_code == 409
    assert undo.body["reason"] == "illegal_transition"
    await api.run_command(command(CommandKind.RENEW, lease_s=600))
    assert [(m, p, c) for m, p, c, _ in seen] == [
        ("POST", "/v1/actions/7/approve", b'{"note":"looks right"}'),
        ("POST", "/v1/actions/7/undo", b'{"note":""}'),
        ("POST", "/v1/actions/7/renew", b'{"lease":600}'),
    ]
    assert {auth for *_, auth in seen} == {"Bearer rt"}
    await api.aclose()

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    api = ResponseApi(settings(), transport=httpx.MockTransport(down))
    result = await api.run_command(command(CommandKind.REJECT))
    assert result.status_code == 503
    assert result.body["reason"] == "response_unavailable"
    await api.aclose()


# --------------------------------------------------------------------------- hub client errors


@pytest.mark.parametrize(
    ("answer", "kind", "reason"),
    [
        (
            httpx.Response(401, json={"status": 401, "reason": "revoked_credential", "detail": "revoked"}),
            HubErrorKind.UNAUTHORIZED,
            "revoked_credential",
        ),
        (
            httpx.Response(422, json={"status": 422, "reason": "validation_error"}),
            HubErrorKind.CLIENT,
            "validation_error",
        ),
        (httpx.Response(503, text="busy"), HubErrorKind.SERVER, None),
        (httpx.Response(200, json={"not": "an ack"}), HubErrorKind.SERVER, None),
    ],
)
async def test_hub_errors_are_classified(
    answer: httpx.Response, kind: HubErrorKind, reason: str | None
) -> None:
    client = HubClient(settings(), transport=httpx.MockTransport(lambda request: answer))
    client.credential = Credential("cid", SecretStr("cid.secret"))
    with pytest.raises(HubError) as caught:
        await client.rotate()
    error = caught.value
    assert error.kind is kind
    assert error.reason == reason
    if kind is HubErrorKind.UNAUTHORIZED:
        assert error.credential_id == "cid"
    assert "secret" not in str(error)
    await client.aclose()


def _sends(call: str) -> Callable[[HubClient], Awaitable[object]]:
    """A hub call whose answer carries nothing the spoke reads (only its status says delivered)."""
    baseline = SharedBaseline(profile_key=f"sha256:{0:064x}", source_cluster="spoke-a", generation=1, data={})
    calls: dict[str, Callable[[HubClient], Awaitable[object]]] = {
        "status": lambda c: c.report_status(StatusReport(policies=())),
        "command_result": lambda c: c.command_result("c1", CommandResult(status_code=200, body={"ok": True})),
        "baselines": lambda c: c.upload_baselines(BaselineUpload(baselines=[baseline])),
        # a 304 is "unchanged" only to a conditional GET (one that sent an ETag)
        "policies_unconditional": lambda c: c.policies(None, 0),
    }
    return calls[call]


@pytest.mark.parametrize("call", ["status", "command_result", "baselines", "policies_unconditional"])
@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(308, headers={"Location": "https://hub.test/federation/v1/x"}),
        httpx.Response(302, headers={"Location": "https://login.example/"}),
        httpx.Response(304),
    ],
    ids=["308", "302", "304"],
)
async def test_an_answer_that_is_no_2xx_is_no_delivery(call: str, answer: httpx.Response) -> None:
    """Every answer under 400 counted as success: behind a redirecting ingress (http -> https),
    statuses were marked reported and command results never sent again, the hub never got them.
    Anything but a 2xx is a hub error (server kind: retried)."""
    client = HubClient(settings(), transport=httpx.MockTransport(lambda request: answer))
    client.credential = Credential("cid", SecretStr("cid.secret"))
    with pytest.raises(HubError) as caught:
        await _sends(call)(client)
    assert caught.value.kind is HubErrorKind.SERVER
    assert caught.value.retryable
    assert caught.value.status == answer.status_code
    await client.aclose()


async def test_unreachable_hub_and_no_credential() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = HubClient(settings(), transport=httpx.MockTransport(refuse))
    with pytest.raises(HubError) as no_credential:
        await client.rotate()
    assert no_credential.value.kind is HubErrorKind.UNAUTHORIZED
    client.credential = Credential("cid", SecretStr("cid.secret"))
    with pytest.raises(HubError) as unreachable:
        await client.policies(None, 0)
    assert unreachable.value.kind is HubErrorKind.UNREACHABLE
    await client.aclose()


async def test_the_credential_travels_as_a_bearer_token_and_etags_are_echoed() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("If-None-Match") == '"v1"':
            return httpx.Response(304)
        body = {"cluster": "spoke-a", "etag": "v1", "policies": []}
        return httpx.Response(200, json=body, headers={"ETag": '"v1"'})

    client = HubClient(settings(), transport=httpx.MockTransport(handler))
    client.credential = Credential("cid", SecretStr("cid.secret"))
    first = await client.policies(None, 3)
    assert first is not None
    assert first[1] == '"v1"'
    assert await client.policies(first[1], 3) is None
    assert seen[0].headers["Authorization"] == "Bearer cid.secret"
    assert seen[0].url.params["wait"] == "3"
    await client.aclose()


def test_credential_age_setting_defaults_to_a_week() -> None:
    assert settings().credential_max_age_s == timedelta(days=7).total_seconds()


@pytest.mark.parametrize(
    ("told", "held"),
    [
        (12.5, 12.5),
        (1e15, MAX_HEARTBEAT_INTERVAL_S),
        (float("inf"), MAX_HEARTBEAT_INTERVAL_S),
        (1e-9, MIN_HEARTBEAT_INTERVAL_S),
        (float("nan"), 10.0),  # no number: the interval held (the setting's) stays
    ],
)
def test_the_heartbeat_interval_the_hub_tells_is_clamped_into_the_settings_range(
    told: float, held: float
) -> None:
    """The hub's value (registration answer, heartbeat ack) is only schema-checked as a float: a
    huge one overflowed the spoke's "three intervals ago" and its sleep."""
    state = AgentState.from_settings(settings())
    state.take_heartbeat_interval(told)
    assert state.heartbeat_interval_s == held


@pytest.mark.parametrize("interval", ["1e15", "inf", "0", "0.01"])
def test_the_heartbeat_interval_setting_is_bounded(interval: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub tells its own setting to every spoke: it is bounded by the same range."""
    monkeypatch.setenv("QCDR_FEDERATION_HEARTBEAT_INTERVAL_S", interval)
    with pytest.raises(ValidationError, match=r"(?i)heartbeat_interval_s"):
        settings()
    monkeypatch.setenv("QCDR_FEDERATION_HEARTBEAT_INTERVAL_S", "300")
    assert settings().heartbeat_interval_s == MAX_HEARTBEAT_INTERVAL_S


# --------------------------------------------------------------------------- baseline uploads


def test_baseline_uploads_are_split_by_size_and_unshareable_ones_settled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = settings()
    state = AgentState.from_settings(s)
    client = HubClient(s)
    sync = BaselineSync(
        s,
        make_session_factory(make_engine("postgresql+asyncpg://unused@127.0.0.1/unused")),
        client,
        Registrar(
            s,
            make_session_factory(make_engine("postgresql+asyncpg://unused@127.0.0.1/unused")),
            client,
            state,
        ),
        state,
        lambda: None,
    )
    monkeypatch.setattr(baselines, "UPLOAD_BYTES", 3000)
    now = datetime.now(UTC)
    rows: list[tuple[str, int, datetime | None, Any]] = [
        ("sha256:" + "1" * 64, 1, now, {"blob": "x" * 1000}),
        ("not-a-digest", 1, now, {"blob": "y"}),
        ("sha256:" + "2" * 64, 2, now, {"blob": "x" * 1000}),
        ("sha256:" + "3" * 64, 3, None, {"blob": "x" * 1000}),
        ("sha256:" + "4" * 64, 4, now, ["not", "an", "object"]),
        ("sha256:" + "5" * 64 + "\n", 5, now, {"blob": "z"}),  # the whole key must match, "\n" too
    ]
    chunks = list(sync._chunks(rows))
    assert [[b.profile_key[7:8] for b in chunk] for chunk, _ in chunks] == [["1", "2"], ["3"]]
    assert [[k[:8] for k, _ in keys] for _, keys in chunks] == [
        ["sha256:1", "not-a-di", "sha256:2"],
        ["sha256:3", "sha256:4", "sha256:5"],
    ]
    assert {b.source_cluster for chunk, _ in chunks for b in chunk} == {"spoke-a"}
