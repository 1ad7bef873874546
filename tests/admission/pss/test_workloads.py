"""``pod_spec_of``: the pod of a Pod and of every workload kind's template; nothing for others."""

from __future__ import annotations

from typing import Any

import pytest
from qcdr_admission.pss import MalformedObjectError, evaluate, pod_path, pod_spec_of

from tests.admission.pss.pods import make_pod

TEMPLATE = {"metadata": {"labels": {"app": "web"}}, "spec": make_pod(hostPID=True)}


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("apps/v1", "ReplicaSet"),
        ("v1", "ReplicationController"),
        ("batch/v1", "Job"),
        ("extensions/v1beta1", "Deployment"),
        (None, "Deployment"),
    ],
)
def test_pod_templates(api_version: str | None, kind: str) -> None:
    obj: dict[str, Any] = {"kind": kind, "metadata": {"name": "w"}, "spec": {"template": TEMPLATE}}
    if api_version is not None:
        obj["apiVersion"] = api_version
    parts = pod_spec_of(obj)
    assert parts is not None
    metadata, spec = parts
    assert metadata is TEMPLATE["metadata"]  # no copies
    assert spec is TEMPLATE["spec"]
    assert [v.check for v in evaluate(metadata, spec, "baseline")] == ["hostNamespaces"]
    assert pod_path(kind) == "spec.template"


def test_pod_and_cronjob() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": make_pod()}
    assert pod_spec_of(pod) == (pod["metadata"], pod["spec"])
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": TEMPLATE}}},
    }
    assert pod_spec_of(cron) == (TEMPLATE["metadata"], TEMPLATE["spec"])
    assert pod_path("CronJob") == "spec.jobTemplate.spec.template"
    assert pod_path("Pod") == ""


def test_no_pod() -> None:
    for obj in (
        {"apiVersion": "v1", "kind": "Service", "spec": {"template": TEMPLATE}},
        {"apiVersion": "v1", "kind": "ConfigMap", "data": {}},
        {"apiVersion": "example.com/v1", "kind": "Deployment", "spec": {"template": TEMPLATE}},
        {"apiVersion": "apps/v1", "kind": "Pod", "spec": make_pod()},
        {"metadata": {"name": "no-kind"}},
    ):
        assert pod_spec_of(obj) is None, obj


def test_missing_template_is_an_empty_pod() -> None:
    parts = pod_spec_of({"apiVersion": "v1", "kind": "ReplicationController", "spec": {}})
    assert parts is not None
    assert dict(parts[0]) == {}
    assert dict(parts[1]) == {}
    assert evaluate(*parts, "restricted") == []


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        ([], "(object)"),
        ({"kind": 3}, "kind"),
        ({"kind": "Pod", "apiVersion": ["v1"]}, "apiVersion"),
        ({"kind": "Pod", "spec": []}, "spec"),
        ({"kind": "Pod", "metadata": "x"}, "metadata"),
        ({"kind": "Deployment", "spec": {"template": []}}, "spec.template"),
        ({"kind": "CronJob", "spec": {"jobTemplate": {"spec": 1}}}, "spec.jobTemplate.spec"),
    ],
)
def test_malformed_objects(obj: Any, path: str) -> None:
    with pytest.raises(MalformedObjectError) as caught:
        pod_spec_of(obj)
    assert caught.value.path == path


def test_malformed_pod_fields_name_the_path() -> None:
    spec = make_pod(containers=[{"name": "a", "securityContext": {"privileged": "yes"}}])
    with pytest.raises(MalformedObjectError) as caught:
        evaluate({}, spec, "baseline")
    assert str(caught.value) == "spec.containers[0].securityContext.privileged: expected a boolean, got str"
    placed = caught.value.under(pod_path("Deployment"))
    assert placed.path == "spec.template.spec.containers[0].securityContext.privileged"
    assert str(placed).endswith("expected a boolean, got str")
