"""Property tests: whatever shape an object has, ``pod_spec_of`` and ``evaluate`` either answer or
raise ``MalformedObjectError`` (the webhook's 400) — never anything else; and well-formed pods
never raise at all."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qcdr_admission.pss import MalformedObjectError, evaluate, pod_spec_of

from tests.admission.pss.pods import container, make_pod

FIELDS = [
    "securityContext", "privileged", "capabilities", "add", "drop", "hostNetwork", "hostPID", "hostIPC",
    "ports", "hostPort", "volumes", "hostPath", "name", "annotations", "appArmorProfile", "type",
    "seLinuxOptions", "user", "role", "procMount", "seccompProfile", "sysctls", "windowsOptions",
    "hostProcess", "livenessProbe", "readinessProbe", "startupProbe", "httpGet", "tcpSocket", "host",
    "lifecycle", "postStart", "preStop", "allowPrivilegeEscalation", "runAsNonRoot", "runAsUser", "os",
    "hostUsers", "containers", "initContainers", "ephemeralContainers", "metadata", "spec", "template",
    "jobTemplate", "kind", "apiVersion", "image", "emptyDir",
]  # fmt: skip
KINDS = [
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "CronJob",
]
VERSIONS = ["v1.0", "v1.19", "v1.25", "v1.35", "latest"]

scalars = (
    st.none() | st.booleans() | st.integers(-5, 70000) | st.floats(allow_nan=False) | st.text(max_size=8)
)
keys = st.sampled_from(FIELDS) | st.text(max_size=6)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths(value, (*prefix, index))
    return found


def base_objects() -> list[dict[str, Any]]:
    pod = make_pod(
        initContainers=[container("init", seLinuxOptions={"type": "container_t"})],
        ephemeralContainers=[container("debug")],
        volumes=[{"name": "v", "emptyDir": {}}],
    )
    pod["containers"][0].update(
        ports=[{"containerPort": 80}],
        livenessProbe={"httpGet": {"port": 80}},
        lifecycle={"preStop": {"tcpSocket": {"port": 80}}},
    )
    pod["securityContext"]["sysctls"] = [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]
    metadata = {"name": "p", "annotations": {"seccomp.security.alpha.kubernetes.io/pod": "runtime/default"}}
    template = {"metadata": metadata, "spec": pod}
    return [
        {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod},
        {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": template}},
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "spec": {"jobTemplate": {"spec": {"template": template}}},
        },
    ]


def replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return obj


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    obj = copy.deepcopy(draw(st.sampled_from(base_objects())))
    for _ in range(draw(st.integers(1, 3))):
        candidates = paths(obj)
        path = draw(st.sampled_from(candidates))
        obj = replace(obj, path, draw(values))
    return obj


def judge(obj: Any) -> None:
    """Evaluate ``obj`` everywhere; a malformed object must say where and what was expected."""
    error: MalformedObjectError | None = None
    try:
        parts = pod_spec_of(obj)
        if parts is not None:
            for level in ("baseline", "restricted"):
                for version in VERSIONS:
                    evaluate(*parts, level, version)
    except MalformedObjectError as exc:
        error = exc
    if error is not None:
        assert error.path
        assert "expected" in str(error)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_objects_never_raise_anything_else(obj: Any) -> None:
    judge(obj)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, values, max_size=5), st.sampled_from(KINDS))
def test_random_objects_never_raise_anything_else(obj: dict[Any, Any], kind: str) -> None:
    judge({**obj, "kind": kind})
    judge(obj)


# well-formed pods: every field the checks read, with the type the API gives it
names = st.text(st.characters(categories=["Ll", "Nd"]), min_size=1, max_size=6)
opt_bool = st.none() | st.booleans()
caps = st.lists(st.sampled_from(["ALL", "NET_RAW", "CHOWN", "NET_BIND_SERVICE", "SYS_ADMIN"]), max_size=3)
handler = st.fixed_dictionaries(
    {},
    optional={
        "httpGet": st.fixed_dictionaries({"port": st.just(80)}, optional={"host": st.text(max_size=5)}),
        "tcpSocket": st.fixed_dictionaries({"port": st.just(80)}, optional={"host": st.text(max_size=5)}),
    },
)
profile = st.fixed_dictionaries({"type": st.sampled_from(["RuntimeDefault", "Localhost", "Unconfined"])})
security_context = st.fixed_dictionaries(
    {},
    optional={
        "privileged": opt_bool,
        "allowPrivilegeEscalation": opt_bool,
        "runAsNonRoot": opt_bool,
        "runAsUser": st.none() | st.integers(0, 70000),
        "procMount": st.none() | st.sampled_from(["Default", "Unmasked"]),
        "capabilities": st.none() | st.fixed_dictionaries({}, optional={"add": caps, "drop": caps}),
        "seccompProfile": st.none() | profile,
        "appArmorProfile": st.none() | profile,
        "seLinuxOptions": st.none()
        | st.fixed_dictionaries(
            {}, optional={"type": st.sampled_from(["", "container_t", "spc_t"]), "user": names, "role": names}
        ),
        "windowsOptions": st.fixed_dictionaries({}, optional={"hostProcess": opt_bool}),
    },
)
containers = st.lists(
    st.fixed_dictionaries(
        {"name": names, "image": st.just("img")},
        optional={
            "securityContext": security_context,
            "ports": st.lists(
                st.fixed_dictionaries(
                    {"containerPort": st.just(80)}, optional={"hostPort": st.integers(0, 9)}
                )
            ),
            "livenessProbe": handler,
            "lifecycle": st.fixed_dictionaries({}, optional={"postStart": handler, "preStop": handler}),
        },
    ),
    max_size=3,
)
pod_security_context = st.fixed_dictionaries(
    {},
    optional={
        "runAsNonRoot": opt_bool,
        "runAsUser": st.integers(0, 5),
        "seccompProfile": profile,
        "sysctls": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["kernel.shm_rmid_forced", "vm.x"]), "value": st.just("1")}
            )
        ),
    },
)
pods = st.fixed_dictionaries(
    {"containers": containers},
    optional={
        "initContainers": containers,
        "ephemeralContainers": containers,
        "securityContext": pod_security_context,
        "hostNetwork": opt_bool,
        "hostUsers": opt_bool,
        "os": st.fixed_dictionaries({"name": st.sampled_from(["linux", "windows"])}),
        "volumes": st.lists(
            st.fixed_dictionaries(
                {"name": names}, optional={"hostPath": st.just({"path": "/"}), "secret": st.just({})}
            )
        ),
    },
)


@settings(max_examples=300, deadline=None)
@given(pods, st.sampled_from(VERSIONS), st.sampled_from(["baseline", "restricted"]))
def test_well_formed_pods_never_raise(spec: dict[str, Any], version: str, level: str) -> None:
    for violation in evaluate({"annotations": {"a": "b"}}, spec, level, version):
        assert violation.message
