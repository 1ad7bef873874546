"""The subresources the test API server serves: ``pods/{name}/eviction`` and
``{deployments,replicasets,statefulsets}/{name}/scale``, answered as a real API server answers them.

Eviction (``POST``, a ``policy/v1`` ``Eviction``) deletes the pod, honouring ``dryRun``, the UID
and resourceVersion preconditions of ``deleteOptions`` and, when the PodDisruptionBudget kind is
installed, the budgets selecting the pod (429 when the eviction would break one). With no
controllers here, every pod counts as healthy and the expected count is the number of matching
pods (the real disruption controller takes it from the owners' scale for ``maxUnavailable`` and
percentages, so those differ when a workload is not at its desired size).

Scale (``GET``, merge/strategic ``PATCH``, ``PUT``) is the ``autoscaling/v1`` ``Scale`` view of
the owner: writes change the owner's ``spec.replicas`` (as an Update by the field manager).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from qcdr_common.testing.k8s import fields
from qcdr_common.testing.k8s.resources import Discovery, ResourceType, Subresource
from qcdr_common.testing.k8s.selectors import from_label_selector, selector_string
from qcdr_common.testing.k8s.status import (
    StatusError,
    bad_request,
    invalid,
    rv_conflict,
    uid_precondition_failed,
)
from qcdr_common.testing.k8s.store import Store
from qcdr_common.testing.schemas import Issue

MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
_EVICTION_VERSIONS = ("policy/v1", "policy/v1beta1")
_METHODS = {"create": "POST", "get": "GET", "patch": "PATCH", "update": "PUT"}


def handle(
    store: Store,
    discovery: Discovery,
    rt: ResourceType,
    sub: Subresource,
    namespace: str | None,
    name: str,
    method: str,
    content_type: str | None,
    body: Any,
    manager: str,
    dry_run: bool,
) -> tuple[int, Any]:
    if method not in {_METHODS[verb] for verb in sub.verbs}:
        raise StatusError(405, "MethodNotAllowed", f"{method} is not supported on {rt.plural}/{sub.name}")
    if sub.name == "eviction":
        return 201, evict(store, discovery, rt, namespace, name, body, dry_run)
    current = scale_of(store.get(rt, namespace, name))
    if method == "GET":
        return 200, current
    if method == "PATCH":
        if content_type not in MERGE_TYPES:
            raise StatusError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(MERGE_TYPES)}",
            )
        if not isinstance(body, dict):
            raise bad_request("a merge patch must be a JSON object")
        wanted = fields.merge_patch(current, body)
    else:
        wanted = body
    return 200, _write_scale(store, rt, namespace, name, current, wanted, manager, dry_run)


# --------------------------------------------------------------------------- scale


def scale_of(owner: Mapping[str, Any]) -> dict[str, Any]:
    """The ``autoscaling/v1`` Scale of a Deployment, ReplicaSet or StatefulSet."""
    meta = owner["metadata"]
    spec = owner.get("spec") or {}
    status: dict[str, Any] = {"replicas": (owner.get("status") or {}).get("replicas", 0)}
    selector = spec.get("selector")
    if isinstance(selector, Mapping):
        status["selector"] = selector_string(from_label_selector(selector))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        # the API server defaults an unset replicas to 1; this server has no defaulting
        "spec": {"replicas": spec.get("replicas", 1)},
        "status": status,
    }


def _write_scale(
    store: Store,
    rt: ResourceType,
    namespace: str | None,
    name: str,
    current: dict[str, Any],
    wanted: Any,
    manager: str,
    dry_run: bool,
) -> dict[str, Any]:
    if not isinstance(wanted, dict):
        raise bad_request("the request body must be a JSON object")
    if (
        wanted.get("kind", "Scale") != "Scale"
        or wanted.get("apiVersion", "autoscaling/v1") != "autoscaling/v1"
    ):
        raise bad_request(
            f"the kind/apiVersion in the data ({wanted.get('kind')}, {wanted.get('apiVersion')}) "
            "is not autoscaling/v1 Scale"
        )
    meta = wanted.get("metadata") or {}
    if meta.get("name") and meta["name"] != name:
        raise bad_request(
            f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
        )
    if meta.get("uid") and meta["uid"] != current["metadata"]["uid"]:
        raise uid_precondition_failed(rt, name, meta["uid"], current["metadata"]["uid"])
    rv = meta.get("resourceVersion")
    if rv and rv != current["metadata"]["resourceVersion"]:
        raise rv_conflict(rt, name)
    replicas = (wanted.get("spec") or {}).get("replicas")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        scale_rt = ResourceType("autoscaling", "v1", "Scale", "scale", rt.namespaced)
        raise invalid(
            scale_rt,
            name,
            [Issue("spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0")],
        )
    owner = store.merge_patch(rt, namespace, name, {"spec": {"replicas": replicas}}, manager, dry_run=dry_run)
    return scale_of(owner)


# --------------------------------------------------------------------------- eviction


def evict(
    store: Store,
    discovery: Discovery,
    rt: ResourceType,
    namespace: str | None,
    name: str,
    body: Any,
    dry_run: bool,
) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("the request body must be an Eviction object")
    if (
        body.get("kind", "Eviction") != "Eviction"
        or body.get("apiVersion", "policy/v1") not in _EVICTION_VERSIONS
    ):
        raise bad_request(
            f"the body is not a policy/v1 Eviction ({body.get('apiVersion')}, {body.get('kind')})"
        )
    meta = body.get("metadata") or {}
    if meta.get("name") and meta["name"] != name:
        raise bad_request("name in URL does not match name in Eviction object")
    pod = store.get(rt, namespace, name)
    preconditions = (body.get("deleteOptions") or {}).get("preconditions") or {}
    uid = pod["metadata"]["uid"]
    if preconditions.get("uid") and preconditions["uid"] != uid:
        raise uid_precondition_failed(rt, name, preconditions["uid"], uid)
    rv = preconditions.get("resourceVersion")
    if rv and rv != pod["metadata"]["resourceVersion"]:
        raise rv_conflict(rt, name)
    _check_budgets(store, discovery, namespace, pod)
    store.delete(rt, namespace, name, dry_run=dry_run)
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


def _check_budgets(store: Store, discovery: Discovery, namespace: str | None, pod: dict[str, Any]) -> None:
    pdb_rt = discovery.find_kind("policy/v1", "PodDisruptionBudget")
    if pdb_rt is None:
        return
    labels = pod["metadata"].get("labels") or {}
    budgets = []
    for pdb in store.list_objects(pdb_rt, namespace)[0]:
        selector = (pdb.get("spec") or {}).get("selector")
        if isinstance(selector, Mapping) and all(r.matches(labels) for r in from_label_selector(selector)):
            budgets.append(pdb)
    if not budgets:
        return
    if len(budgets) > 1:
        raise StatusError(
            500,
            "InternalError",
            "This pod has more than one PodDisruptionBudget, "
            "which the eviction subresource does not support.",
        )
    pdb = budgets[0]
    pod_rt = discovery.find_kind("v1", "Pod")
    assert pod_rt is not None
    selected = [
        p
        for p in store.list_objects(pod_rt, namespace)[0]
        if all(
            r.matches(p["metadata"].get("labels") or {}) for r in from_label_selector(pdb["spec"]["selector"])
        )
    ]
    healthy = expected = len(selected)
    desired = _desired_healthy(pdb["spec"], expected)
    if healthy - desired <= 0:
        pdb_name = pdb["metadata"]["name"]
        raise StatusError(
            429,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
            {
                "causes": [
                    {
                        "reason": "DisruptionBudget",
                        "message": f"The disruption budget {pdb_name} needs {desired} healthy pods "
                        f"and has {healthy} currently",
                    }
                ]
            },
        )


def _scaled(value: Any, total: int) -> int:
    """An int-or-percent, rounded up (as the disruption controller does)."""
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(total * int(value[:-1]) / 100)
    return int(value)


def _desired_healthy(spec: Mapping[str, Any], expected: int) -> int:
    if spec.get("maxUnavailable") is not None:
        return max(0, expected - _scaled(spec["maxUnavailable"], expected))
    if spec.get("minAvailable") is not None:
        return _scaled(spec["minAvailable"], expected)
    return 0
