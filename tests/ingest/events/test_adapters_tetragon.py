"""The Tetragon adapter against the real exported events in shared/corpora/tetragon."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import orjson
import pytest
from qcdr_common.contracts.events.v1 import Severity
from qcdr_ingest.events.adapters.tetragon import KINDS
from qcdr_ingest.events.adapters.tetragon import convert as tetragon
from qcdr_ingest.events.registry import AdapterError

from tests.ingest.events.factories import GOLDEN, tetragon_corpus, tetragon_sample

pytestmark = pytest.mark.shared


def kind_of(raw: dict[str, Any]) -> str:
    return next(k for k in raw if k.startswith("process_"))


def test_every_corpus_event_converts(shared_path: Path) -> None:
    corpus = tetragon_corpus(shared_path)
    assert len(corpus) >= 50
    kinds = set()
    ids: dict[str, bytes] = {}
    for name, raw in corpus:
        kind = kind_of(raw)
        event = tetragon(raw, "kind-cluster")
        kinds.add(kind)
        body = raw[kind]
        assert event.source == "tetragon", name
        assert event.category == kind, name
        assert event.event_time.tzinfo is not None, name
        assert event.process is not None, name
        assert event.process.path == body["process"]["binary"], name
        assert event.raw == raw, name
        assert event.workload.cluster == "kind-cluster", name
        # the id is stable: the same line sent again is the same event
        assert tetragon(orjson.loads(orjson.dumps(raw)), "other").id == event.id, name
        canonical = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
        assert ids.setdefault(event.id, canonical) == canonical, f"{name}: id collision"
    assert set(kinds) >= {"process_exec", "process_exit", "process_kprobe"}


def test_exec_maps_pod_container_image_and_parent(shared_path: Path) -> None:
    raw = tetragon_sample(shared_path, "testdata/events.json")
    event = tetragon(raw, "c1")
    assert event.category == "process_exec"
    assert event.severity is Severity.INFO
    w = event.workload
    assert (w.namespace, w.pod, w.container) == ("default", "tiefighter", "spaceship")
    assert w.container_id == "19a02291e106ce6227b684197be232ea57c4e1a5ab2604a12608c325d701c7f4"
    assert w.image == "docker.io/tgraf/netperf:latest"
    assert w.image_digest == "sha256:8e86f744bfea165fd4ce68caa05abc96500f40130b857773186401926af7e9e6"
    assert event.process is not None
    assert (event.process.name, event.process.pid) == ("netserver", 68790)
    assert event.process.parent_path == "/usr/bin/containerd-shim-runc-v2"
    assert event.message == "process_exec: /usr/bin/netserver -D"


def test_exec_without_time_uses_the_process_start(shared_path: Path) -> None:
    raw = tetragon_sample(shared_path, "testdata/events.json")
    assert "time" not in raw  # the corpus's first line has none
    assert tetragon(raw, "c").event_time == datetime(2022, 10, 18, 3, 16, 18, 273546, tzinfo=UTC)


def test_kprobe_hook_and_message(shared_path: Path) -> None:
    event = tetragon(tetragon_sample(shared_path, f"{GOLDEN}/process_kprobe.json"), "c")
    assert event.category == "process_kprobe"
    assert event.severity is Severity.LOW
    assert event.message == "__x64_sys_write: /usr/bin/vi /etc/passwd"
    assert (event.workload.namespace, event.workload.container) == ("tenant-jobs", "elasticsearch")
    assert event.event_time == datetime(2021, 10, 18, 20, 8, 55, 567000, tzinfo=UTC)
    assert event.network is None


def test_exit(shared_path: Path) -> None:
    event = tetragon(tetragon_sample(shared_path, f"{GOLDEN}/process_exit.json"), "c")
    assert event.category == "process_exit"
    assert event.severity is Severity.INFO


def test_legacy_connect_has_the_destination(shared_path: Path) -> None:
    path = "docs/security-observability-with-ebpf/03_chapter/03_security_observability_events/02_persistance"
    event = tetragon(tetragon_sample(shared_path, f"{path}/merlin-agent-go-connect.json"), "c")
    assert event.network is not None
    assert (event.network.ip, event.network.port) == (ip_address("34.116.205.187"), 443)


def kprobe_with(shared: Path, args: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    raw = tetragon_sample(shared, f"{GOLDEN}/process_kprobe.json")
    raw["process_kprobe"].update(function_name="tcp_connect", args=args, **changes)
    return raw


@pytest.mark.parametrize(
    ("arg", "ip", "port"),
    [
        (
            {
                "sock_arg": {
                    "family": "AF_INET",
                    "saddr": "10.0.0.5",
                    "daddr": "198.51.100.7",
                    "sport": 4,
                    "dport": 4444,
                }
            },
            "198.51.100.7",
            4444,
        ),
        (
            {"sock_arg": {"family": "AF_INET6", "daddr": "::ffff:203.0.113.9", "dport": 443}},
            "203.0.113.9",
            443,
        ),
        ({"sockaddr_arg": {"family": "AF_INET", "addr": "192.0.2.33", "port": 53}}, "192.0.2.33", 53),
        (
            {"skb_arg": {"saddr": "10.0.0.5", "daddr": "2001:db8::7", "sport": 5, "dport": 8443}},
            "2001:db8::7",
            8443,
        ),
    ],
)
def test_kprobe_socket_arguments_give_the_destination(
    shared_path: Path, arg: dict[str, Any], ip: str, port: int
) -> None:
    event = tetragon(kprobe_with(shared_path, [{"int_arg": 3}, arg]), "c")
    assert event.network is not None
    assert (event.network.ip, event.network.port) == (ip_address(ip), port)
    assert event.message is not None
    assert event.message.startswith("tcp_connect: ")


def test_enforcing_policy_raises_the_severity(shared_path: Path) -> None:
    raw = kprobe_with(shared_path, [], action="KPROBE_ACTION_SIGKILL", policy_name="block-nc")
    event = tetragon(raw, "c")
    assert event.severity is Severity.MEDIUM
    # the policy is part of the identity: another policy hooking the same call is another event
    other = kprobe_with(shared_path, [], action="KPROBE_ACTION_SIGKILL", policy_name="audit-nc")
    assert tetragon(other, "c").id != event.id


def test_workload_owner_and_cluster_name(shared_path: Path) -> None:
    raw = tetragon_sample(shared_path, "testdata/events.json")
    raw["cluster_name"] = "prod-eu"
    raw["process_exec"]["process"]["pod"].update(workload="tiefighter", workload_kind="Deployment")
    event = tetragon(raw, "default")
    assert (event.workload.cluster, event.workload.owner_kind, event.workload.owner_name) == (
        "prod-eu",
        "Deployment",
        "tiefighter",
    )


def test_without_exec_id_the_whole_event_is_the_identity(shared_path: Path) -> None:
    raw = tetragon_sample(shared_path, f"{GOLDEN}/process_exit.json")
    del raw["process_exit"]["process"]["exec_id"]
    first = tetragon(raw, "c").id
    raw["process_exit"]["status"] = 1
    assert tetragon(raw, "c").id != first


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ([1, 2], "not a JSON object"),
        (
            {"process_loader": {"process": {}}, "time": "2024-01-01T00:00:00Z"},
            "not a supported Tetragon event",
        ),
        ({"node_name": "n1"}, "not a supported Tetragon event"),
        ({"process_exec": "x", "time": "2024-01-01T00:00:00Z"}, "process_exec is not an object"),
        ({"process_exit": {"pid": 1}, "time": "2024-01-01T00:00:00Z"}, "process_exit.process is missing"),
        ({"process_exit": {"process": {"binary": "/bin/sh"}}}, "time is missing"),
        ({"process_exit": {"process": {"binary": "/bin/sh"}}, "time": "yesterday"}, "not ISO 8601"),
        ({"process_exit": {"process": {"binary": "/bin/sh"}}, "time": "2024-01-01T00:00:00"}, "no time zone"),
        (
            {"process_exit": {"process": {"binary": "/bin/sh", "pid": -4}}, "time": "2024-01-01T00:00:00Z"},
            None,
        ),
    ],
)
def test_bad_events_are_rejected_with_a_reason(raw: Any, reason: str | None) -> None:
    if reason is None:  # a negative pid is dropped, not fatal
        assert tetragon(raw, "c").process is not None
        return
    with pytest.raises(AdapterError, match=reason):
        tetragon(raw, "c")


def test_the_supported_kinds_are_documented() -> None:
    assert {"process_exec", "process_exit", "process_kprobe"} <= KINDS
