"""The engine's rules beyond what the upstream fixtures exercise: the version table, overrides,
ephemeral containers, Windows pods, user namespaces, and the messages."""

from __future__ import annotations

from typing import Any

import pytest
from qcdr_admission.pss import (
    KNOWN_VERSIONS,
    LATEST_MINOR,
    Violation,
    check_ids,
    evaluate,
    parse_version,
)
from qcdr_admission.pss.checks import load_checks
from qcdr_common.registry import import_submodules

from tests.admission.pss.pods import container, make_pod

ALL_CHECKS = {
    "privileged",
    "hostNamespaces",
    "hostPorts",
    "hostPathVolumes",
    "capabilities_baseline",
    "seLinuxOptions",
    "procMount",
    "sysctls",
    "appArmorProfile",
    "seccompProfile_baseline",
    "windowsHostProcess",
    "hostProbesAndHostLifecycle",
    "restrictedVolumes",
    "allowPrivilegeEscalation",
    "runAsNonRoot",
    "runAsUser",
    "seccompProfile_restricted",
    "capabilities_restricted",
    "procMount_restricted",
}


def ids(
    spec: dict[str, Any], level: str = "restricted", version: str = "latest", **metadata: Any
) -> set[str]:
    return {v.check for v in evaluate(metadata, spec, level, version)}


def test_every_module_registers_exactly_one_check() -> None:
    import qcdr_admission.pss.checks as package

    registry = load_checks()
    for module in import_submodules(package):
        mine = [name for name, _ in registry.items() if registry.origin(name) == module.__name__]
        assert len(mine) == 1, f"{module.__name__} registers {mine}"
    assert set(registry.names()) == ALL_CHECKS


def test_versions() -> None:
    assert parse_version("latest") == LATEST_MINOR == 37
    assert parse_version("v1.0") == 0
    assert parse_version("v1.25") == 25
    assert len(KNOWN_VERSIONS) == 39
    for bad in ("v1.38", "1.25", "v2.0", "v1.025", "Latest", ""):
        with pytest.raises(ValueError, match=r"known are latest and v1\.0 … v1\.37"):
            parse_version(bad)
    assert parse_version("v1.40", clamp=True) == 37
    with pytest.raises(ValueError, match="unknown Pod Security Standards version"):
        evaluate({}, make_pod(), "restricted", "v1.99")
    with pytest.raises(ValueError, match="level"):
        evaluate({}, make_pod(), "strict", "latest")
    assert evaluate({}, make_pod(hostPID=True), "privileged", "latest") == []


def test_checks_exist_from_their_first_version() -> None:
    assert "hostProbesAndHostLifecycle" not in check_ids("baseline", "v1.33")
    assert "hostProbesAndHostLifecycle" in check_ids("baseline", "v1.34")
    assert "allowPrivilegeEscalation" not in check_ids("restricted", "v1.7")
    assert "allowPrivilegeEscalation" in check_ids("restricted", "v1.8")
    assert "runAsUser" not in check_ids("restricted", "v1.22")
    assert "runAsUser" in check_ids("restricted", "v1.23")
    assert set(check_ids("baseline", "latest")).isdisjoint(
        {"restrictedVolumes", "runAsNonRoot", "capabilities_restricted"}
    )


@pytest.mark.parametrize(
    ("baseline", "restricted", "from_minor"),
    [
        ("hostPathVolumes", "restrictedVolumes", 0),
        ("seccompProfile_baseline", "seccompProfile_restricted", 19),
        ("capabilities_baseline", "capabilities_restricted", 22),
        ("procMount", "procMount_restricted", 35),
    ],
)
def test_restricted_checks_override_baseline_ones(baseline: str, restricted: str, from_minor: int) -> None:
    for minor in range(LATEST_MINOR + 1):
        version = f"v1.{minor}"
        running = check_ids("restricted", version)
        assert baseline in check_ids("baseline", version)
        if minor >= from_minor:
            assert restricted in running
            assert baseline not in running
        else:
            assert restricted not in running
            assert baseline in running


def test_all_three_container_lists_are_checked() -> None:
    debug = {"name": "debugger", "image": "busybox", "securityContext": {"privileged": True}}
    [violation] = evaluate({}, make_pod(ephemeralContainers=[debug]), "baseline", "latest")
    assert violation == Violation(
        "privileged", 'container "debugger" must not run privileged (securityContext.privileged=true)'
    )
    spec = make_pod(initContainers=[container("init", privileged=True)])
    assert ids(spec, "baseline") == {"privileged"}


def test_container_level_settings_override_the_pod_ones() -> None:
    assert ids(make_pod(containers=[container(runAsNonRoot=False)])) == {"runAsNonRoot"}
    # a pod-level false is a violation even when every container says true
    spec = make_pod(
        containers=[container(runAsNonRoot=True)],
        securityContext={"runAsNonRoot": False, "seccompProfile": {"type": "RuntimeDefault"}},
    )
    assert ids(spec) == {"runAsNonRoot"}
    # no pod-level seccomp: fine when every container sets it
    spec = make_pod(
        containers=[container(seccompProfile={"type": "Localhost", "localhostProfile": "p.json"})],
        securityContext={"runAsNonRoot": True},
    )
    assert ids(spec) == set()
    spec["containers"].append(container("sidecar"))
    [violation] = evaluate({}, spec, "restricted", "latest")
    assert violation.check == "seccompProfile_restricted"
    assert '"sidecar"' in violation.message
    assert '"app"' not in violation.message


def test_windows_pods_skip_the_linux_only_restricted_checks_from_v1_25() -> None:
    windows = {
        "os": {"name": "windows"},
        "containers": [{"name": "win", "image": "mcr.microsoft.com/windows/nanoserver"}],
        "securityContext": {"runAsNonRoot": True},
    }
    assert ids(windows, version="v1.25") == set()
    assert ids(windows, version="latest") == set()
    assert ids(windows, version="v1.24") == {
        "allowPrivilegeEscalation",
        "capabilities_restricted",
        "seccompProfile_restricted",
    }
    # the exemption does not reach runAsNonRoot, nor baseline checks
    del windows["securityContext"]
    assert ids(windows) == {"runAsNonRoot"}
    linux = {**windows, "os": {"name": "linux"}}
    assert "allowPrivilegeEscalation" in ids(linux)


def test_user_namespaces() -> None:
    rootful = make_pod(
        hostUsers=False, securityContext={"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}}
    )
    assert ids(rootful, version="v1.34") == {"runAsNonRoot", "runAsUser"}
    assert ids(rootful, version="v1.35") == set()
    assert ids({**rootful, "hostUsers": True}, version="latest") == {"runAsNonRoot", "runAsUser"}
    unmasked = make_pod(hostUsers=False, containers=[container(procMount="Unmasked")])
    assert ids(unmasked, "baseline", "v1.34") == {"procMount"}
    assert ids(unmasked, "baseline", "v1.35") == set()
    assert ids(unmasked, "restricted", "v1.35") == {"procMount_restricted"}
    assert ids({**unmasked, "hostUsers": True}, "baseline", "latest") == {"procMount"}


def test_app_armor_fields_and_annotations() -> None:
    unconfined = make_pod(securityContext={"appArmorProfile": {"type": "Unconfined"}})
    assert ids(unconfined, "baseline", "v1.0") == {"appArmorProfile"}
    spec = make_pod(
        containers=[container(appArmorProfile={"type": "Localhost", "localhostProfile": "k8s-apparmor"})]
    )
    assert ids(spec, "baseline") == set()
    annotations = {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}
    [violation] = evaluate({"annotations": annotations}, make_pod(), "baseline", "latest")
    assert 'container.apparmor.security.beta.kubernetes.io/app="unconfined"' in violation.message
    fine = {"container.apparmor.security.beta.kubernetes.io/app": "localhost/profile"}
    assert evaluate({"annotations": fine}, make_pod(), "baseline", "latest") == []


def test_seccomp_annotations_before_v1_19_fields_after() -> None:
    annotations = {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}
    assert ids(make_pod(), "baseline", "v1.18", annotations=annotations) == {"seccompProfile_baseline"}
    assert ids(make_pod(), "baseline", "v1.19", annotations=annotations) == set()
    unconfined = make_pod(containers=[container(seccompProfile={"type": "Unconfined"})])
    assert ids(unconfined, "baseline", "v1.18") == set()
    assert ids(unconfined, "baseline", "v1.19") == {"seccompProfile_baseline"}


def test_volumes() -> None:
    image = make_pod(volumes=[{"name": "models", "image": {"reference": "registry.example/models:1"}}])
    assert ids(image, version="v1.0") == set()
    assert ids(image) == set()
    defaulted = make_pod(volumes=[{"name": "scratch"}])
    assert ids(defaulted) == set()
    unknown = make_pod(volumes=[{"name": "future", "someNewVolumeType": {}}])
    [violation] = evaluate({}, unknown, "restricted", "latest")
    assert violation.message == 'volume "future" must not use the restricted volume type "someNewVolumeType"'
    host = make_pod(volumes=[{"name": "root", "hostPath": {"path": "/"}}])
    assert ids(host, "baseline") == {"hostPathVolumes"}
    assert ids(host) == {"restrictedVolumes"}


def test_per_version_allowed_values() -> None:
    engine = make_pod(containers=[container(seLinuxOptions={"type": "container_engine_t"})])
    assert ids(engine, "baseline", "v1.30") == {"seLinuxOptions"}
    assert ids(engine, "baseline", "v1.31") == set()
    sysctl = make_pod(
        securityContext={"sysctls": [{"name": "net.ipv4.tcp_slow_start_after_idle", "value": "0"}]}
    )
    assert ids(sysctl, "baseline", "v1.36") == {"sysctls"}
    assert ids(sysctl, "baseline", "v1.37") == set()
    reserved = make_pod(
        securityContext={"sysctls": [{"name": "net.ipv4.ip_local_reserved_ports", "value": "80"}]}
    )
    assert ids(reserved, "baseline", "v1.26") == {"sysctls"}
    assert ids(reserved, "baseline", "v1.27") == set()


def test_messages_say_what_and_where() -> None:
    spec = make_pod(
        hostNetwork=True,
        initContainers=[container("init", capabilities={"add": ["SYS_ADMIN", "NET_RAW"], "drop": ["ALL"]})],
        containers=[
            {
                "name": "web",
                "image": "nginx",
                "ports": [{"containerPort": 80, "hostPort": 80}],
                "livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}},
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }
        ],
    )
    messages = {v.check: v.message for v in evaluate({}, spec, "restricted", "latest")}
    assert messages == {
        "capabilities_restricted": 'container "init" must not add "NET_RAW", "SYS_ADMIN" '
        '(securityContext.capabilities.add may only hold "NET_BIND_SERVICE")',
        "hostNamespaces": "pod must not share host namespaces (hostNetwork=true)",
        "hostPorts": 'container "web" must not bind host ports (hostPort 80)',
        "hostProbesAndHostLifecycle": 'container "web" must not aim probes or lifecycle handlers at another '
        'host (host "10.0.0.1")',
    }
