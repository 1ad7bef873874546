"""Tetragon export lines in the shapes of ../shared/corpora/tetragon, turned into SecurityEvents by
the real ingest adapter, for the profile and drift tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import count
from typing import Any

from qcdr_analysis.detectors import behaviour
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_ingest.events.adapters.tetragon import convert

from tests.analysis.conftest import T0

# made-up digests: the corpus images may already have profiles from other tests
DIGEST = "5eed" * 16
OTHER_DIGEST = "0de1" * 16
PROFILE = f"sha256:{DIGEST}"
WORKLOAD = "prod/shop/Deployment/api"
HOURS = timedelta(hours=1)
SHIM = "/usr/bin/containerd-shim-runc-v2"
_exec_ids = count(1)


def _pod(owner: str, digest: str, namespace: str, pod: str | None) -> dict[str, Any]:
    return {
        "namespace": namespace,
        "name": pod or f"{owner}-6f87496b94-qdlh8",
        "container": {
            "id": "containerd://16ecce28d6808e01f6b91f990b07616c0fc8dff67036231f9911191c7ff3d1cd",
            "name": owner,
            "image": {"id": f"docker.io/acme/{owner}@sha256:{digest}", "name": f"docker.io/acme/{owner}:1.0"},
            "start_time": "2026-03-01T11:00:00Z",
            "pid": 1,
        },
        "workload": owner,
        "workload_kind": "Deployment",
    }


def _process(binary: str, arguments: str, pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "exec_id": f"ZXhlYy17{next(_exec_ids):08d}",
        "pid": 4242,
        "uid": 0,
        "cwd": "/",
        "binary": binary,
        "arguments": arguments,
        "flags": "execve clone",
        "start_time": "2026-03-01T11:00:00Z",
        "pod": pod,
    }


def _event(kind: str, body: dict[str, Any], at: datetime) -> SecurityEvent:
    line = {kind: body, "node_name": "node-1", "time": at.isoformat().replace("+00:00", "Z")}
    return convert(line, "prod")


def exec_event(
    binary: str,
    at: datetime = T0,
    *,
    parent: str = SHIM,
    arguments: str = "",
    owner: str = "api",
    digest: str = DIGEST,
    namespace: str = "shop",
    pod: str | None = None,
) -> SecurityEvent:
    pod_info = _pod(owner, digest, namespace, pod)
    body = {"process": _process(binary, arguments, pod_info), "parent": _process(parent, "", pod_info)}
    return _event("process_exec", body, at)


def file_event(
    binary: str,
    path: str,
    at: datetime = T0,
    *,
    write: bool = False,
    owner: str = "api",
    digest: str = DIGEST,
) -> SecurityEvent:
    """security_file_permission with MAY_WRITE (2) or MAY_READ (4), as Tetragon's file policies report it."""
    pod = _pod(owner, digest, "shop", None)
    body = {
        "process": _process(binary, "", pod),
        "parent": _process(SHIM, "", pod),
        "function_name": "security_file_permission",
        "args": [{"file_arg": {"path": path, "permission": "-rw-r--r--"}}, {"int_arg": 2 if write else 4}],
        "action": "KPROBE_ACTION_POST",
        "policy_name": "file-monitoring",
    }
    return _event("process_kprobe", body, at)


def connect_event(
    binary: str, ip: str, port: int, at: datetime = T0, *, owner: str = "api", digest: str = DIGEST
) -> SecurityEvent:
    pod = _pod(owner, digest, "shop", None)
    sock = {"family": "AF_INET", "protocol": "IPPROTO_TCP", "daddr": ip, "dport": port, "sport": 40112}
    body = {
        "process": _process(binary, "", pod),
        "parent": _process(SHIM, "", pod),
        "function_name": "tcp_connect",
        "args": [{"sock_arg": sock}],
        "action": "KPROBE_ACTION_POST",
        "policy_name": "connect",
    }
    return _event("process_kprobe", body, at)


def exec_hash_event(
    binary: str, digest_hex: str, at: datetime = T0, *, caller: str = "/bin/sh", owner: str = "api"
) -> SecurityEvent:
    """An LSM ``bprm_check_security`` hook with ``imaHash``: the exec'd file and its hash."""
    pod = _pod(owner, DIGEST, "shop", None)
    body = {
        "process": _process(caller, "", pod),
        "parent": _process(SHIM, "", pod),
        "function_name": "bprm_check_security",
        "args": [{"linux_binprm_arg": {"path": binary}}],
        "action": "KPROBE_ACTION_POST",
        "policy_name": "lsm",
        "ima_hash": f"sha256:{digest_hex}",
    }
    return _event("process_lsm", body, at)


def detector(**config: Any) -> behaviour.State:
    return behaviour.setup(behaviour.Config.model_validate(config))


def run(state: behaviour.State, *events: SecurityEvent) -> list[Finding]:
    """Events through ``detect`` as one batch, in memory (no lookup: nothing is in Postgres)."""
    state.store.begin_batch(set())
    return behaviour.detect(events, state)


def learn_api(state: behaviour.State, hours: int = 48) -> None:
    """A web app learning for ``hours`` (one event per hour): gunicorn workers run python, which
    reads its config and talks to Postgres; a shell runs a health check now and then."""
    for h in range(hours):
        at = T0 + h * HOURS
        run(
            state,
            exec_event("/usr/local/bin/python3", at, parent="/usr/local/bin/gunicorn"),
            exec_event("/usr/bin/curl", at, parent="/bin/sh"),
            file_event("/usr/local/bin/python3", "/app/config.yaml", at),
            file_event("/usr/local/bin/python3", "/etc/passwd", at),
            file_event("/usr/local/bin/python3", "/tmp/app.sock", at, write=True),
            connect_event("/usr/local/bin/python3", "10.0.0.20", 5432, at),
        )


def by_category(findings: list[Finding]) -> dict[str, Finding]:
    return {f.category: f for f in findings}
