"""Test inputs: Tetragon export lines, Falco alerts and a Hubble flow.

Tetragon events come from the real samples in ``shared/corpora/tetragon`` (read at run time,
never copied into the repo); Falco alerts are built from the ``output:`` format strings of the real
rules in ``shared/corpora/falco/rules``, as Falco formats them with ``json_output: true`` (each
``%field`` in the output becomes an ``output_fields`` entry; Falco's default ``append_output``
adds the container and Kubernetes fields).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

TETRAGON_KINDS = ("process_exec", "process_exit", "process_kprobe")


def tetragon_files(shared: Path) -> list[Path]:
    root = shared / "corpora" / "tetragon"
    files = [root / "testdata" / "events.json"]
    files += sorted((root / "docs-extracted-events").glob("*.json"))
    files += sorted((root / "docs" / "security-observability-with-ebpf").rglob("*.json"))
    return files


def load_json_or_lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    try:
        loaded = orjson.loads(data)
    except orjson.JSONDecodeError:
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]
    return loaded if isinstance(loaded, list) else [loaded]


def tetragon_corpus(shared: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file name, event) for every sample event in the corpus."""
    out = []
    for path in tetragon_files(shared):
        for event in load_json_or_lines(path):
            out.append((path.name, event))
    return out


def tetragon_sample(shared: Path, relative: str) -> dict[str, Any]:
    path = shared / "corpora" / "tetragon" / relative
    return copy.deepcopy(load_json_or_lines(path)[0])


GOLDEN = "docs/security-observability-with-ebpf/03_chapter/00_four_golden_signals"


def tetragon_events(shared: Path, count: int, *, start: int = 0) -> list[dict[str, Any]]:
    """``count`` distinct exec events (the corpus's first testdata line, with new exec ids and times)."""
    base = load_json_or_lines(shared / "corpora" / "tetragon" / "testdata" / "events.json")[1]
    out = []
    for i in range(start, start + count):
        event = copy.deepcopy(base)
        event["process_exec"]["process"]["exec_id"] = f"dGVzdC1ub2RlOjEyMzQ1Njc4OTA6{i:08d}"
        event["time"] = f"2026-03-01T12:{(i // 60) % 60:02d}:{i % 60:02d}.{i:06d}Z"
        out.append(event)
    return out


# ---------------------------------------------------------------------- Falco

_FIELD = re.compile(r"%([a-zA-Z0-9_.]+(?:\[[^\]]*\])?)")

# Values a real alert would carry, by field; what is not here gets Falco's "<NA>".
FALCO_VALUES: dict[str, Any] = {
    "evt.type": "execve",
    "evt.arg.flags": "EXE_WRITABLE|EXE_LOWER_LAYER",
    "evt.time": 1772366400123456789,
    "user.name": "root",
    "user.uid": 0,
    "user.loginuid": -1,
    "proc.name": "bash",
    "proc.exepath": "/usr/bin/bash",
    "proc.exe": "/usr/bin/bash",
    "proc.pid": 4242,
    "proc.pname": "node",
    "proc.pexe": "/usr/local/bin/node",
    "proc.pexepath": "/usr/local/bin/node",
    "proc.cmdline": "bash -c id",
    "proc.pcmdline": "node server.js",
    "proc.tty": 34816,
    "fd.name": "10.244.1.17:43518->203.0.113.50:4444",
    "fd.nameraw": "/etc/../etc/shadow",
    "fd.lport": 43518,
    "fd.rport": 4444,
    "fd.type": "ipv4",
    "fd.l4proto": "tcp",
    "fd.rip": "203.0.113.50",
    "fd.sip": "203.0.113.50",
    "fd.rip.name": "c2.example.net",
    "container.id": "3ad7b26ded6d",
    "container.name": "payments",
    "container.image.repository": "ghcr.io/acme/payments",
    "container.image.tag": "1.4.2",
    "k8s.ns.name": "shop",
    "k8s.pod.name": "payments-7d4b9c6f8-xk2qp",
}
# Falco's default append_output (falco.yaml) adds these to every alert.
APPENDED = (
    "container.id",
    "container.name",
    "container.image.repository",
    "container.image.tag",
    "k8s.ns.name",
    "k8s.pod.name",
)


@dataclass(frozen=True)
class FalcoRule:
    ruleset: str
    name: str
    output: str
    priority: str
    tags: tuple[str, ...]


def falco_rules(shared: Path) -> list[FalcoRule]:
    rules = []
    for path in sorted((shared / "corpora" / "falco" / "rules").glob("*.yaml")):
        for item in yaml.safe_load(path.read_text()) or []:
            if isinstance(item, dict) and "rule" in item and "output" in item and "priority" in item:
                rules.append(
                    FalcoRule(
                        path.name,
                        item["rule"],
                        " ".join(str(item["output"]).split()),
                        str(item["priority"]).strip(),
                        tuple(str(t) for t in item.get("tags", [])),
                    )
                )
    return rules


def falco_alert(
    rule: FalcoRule, *, time: str = "2026-03-01T12:00:00.123456789Z", **values: Any
) -> dict[str, Any]:
    """The JSON alert Falco would emit for ``rule`` (``values`` override field values)."""
    fields: dict[str, Any] = {}
    source = {**FALCO_VALUES, **values}
    names = [*_FIELD.findall(rule.output), *APPENDED]
    network = any(n in names for n in ("fd.rport", "fd.lport", "fd.rip", "fd.sip"))
    for name in names:
        fields[name] = source.get(name, "<NA>")
        if name == "fd.name" and not network and "fd.name" not in values:
            fields[name] = "/etc/shadow"  # a file rule: the descriptor is a file, not a socket

    def fill(match: re.Match[str]) -> str:
        return str(fields[match.group(1)])

    priority = rule.priority.capitalize()
    text = _FIELD.sub(fill, rule.output)
    appended = " ".join(f"{name}={fields[name]}" for name in APPENDED)
    return {
        "hostname": "worker-3",
        "output": f"{time[:26]}+0000: {priority} {text} {appended}",
        "output_fields": {"evt.time": source["evt.time"], **fields},
        "priority": priority,
        "rule": rule.name,
        "source": "syscall",
        "tags": list(rule.tags),
        "time": time,
    }


def falco_alerts(shared: Path, count: int) -> Iterator[dict[str, Any]]:
    rules = falco_rules(shared)
    for i in range(count):
        yield falco_alert(rules[i % len(rules)], time=f"2026-03-01T12:00:{i % 60:02d}.{i:09d}Z")


# A SYN as `hubble observe -o json` prints it (field names from Hubble's flow.proto JSON).
HUBBLE_SYN: dict[str, Any] = {
    "flow": {
        "time": "2026-07-31T10:41:02.202450754Z",
        "uuid": "cd75b2ac-8dd3-486b-beca-3d17d9d56cff",
        "verdict": "FORWARDED",
        "ethernet": {"source": "62:6b:d0:a4:c5:63", "destination": "6e:d0:ea:78:fc:0a"},
        "IP": {"source": "10.0.1.235", "destination": "10.0.0.21", "ipVersion": "IPv4"},
        "l4": {"TCP": {"source_port": 60524, "destination_port": 5432, "flags": {"SYN": True}}},
        "source": {
            "ID": 423,
            "identity": 24753,
            "cluster_name": "topgun",
            "namespace": "shop",
            "labels": ["k8s:app=api"],
            "pod_name": "api-9b649846d-bxqfc",
            "workloads": [{"name": "api", "kind": "Deployment"}],
        },
        "destination": {
            "identity": 24075,
            "cluster_name": "topgun",
            "namespace": "shop",
            "labels": ["k8s:app=db"],
            "pod_name": "db-0",
        },
        "Type": "L3_L4",
        "node_name": "topgun/worker-1",
        "event_type": {"type": 4},
        "traffic_direction": "EGRESS",
        "trace_observation_point": "TO_STACK",
        "is_reply": False,
        "Summary": "TCP Flags: SYN",
    },
    "node_name": "topgun/worker-1",
    "time": "2026-07-31T10:41:02.202450754Z",
}


def hubble_flow(**changes: Any) -> dict[str, Any]:
    """HUBBLE_SYN with flow fields replaced (``None`` removes one)."""
    item = copy.deepcopy(HUBBLE_SYN)
    for key, value in changes.items():
        if value is None:
            item["flow"].pop(key, None)
        else:
            item["flow"][key] = value
    return item


def hubble_http_request(
    url: str,
    *,
    method: str = "GET",
    destination: str = "169.254.169.254",
    port: int = 80,
    user_agent: str | None = "curl/8.5.0",
    verdict: str = "FORWARDED",
    time: str = "2026-07-31T10:41:02.2Z",
) -> dict[str, Any]:
    """A pod's HTTP request as Hubble's L7 proxy reports it (``hubble observe -o json``)."""
    http: dict[str, Any] = {"method": method, "url": url, "protocol": "HTTP/1.1"}
    if user_agent is not None:
        http["headers"] = [{"key": "User-Agent", "value": user_agent}]
    return {
        "flow": {
            "time": time,
            "verdict": verdict,
            "IP": {"source": "10.0.1.235", "destination": destination, "ipVersion": "IPv4"},
            "l4": {"TCP": {"source_port": 41234, "destination_port": port}},
            "source": {
                "namespace": "shop",
                "pod_name": "api-1",
                "workloads": [{"name": "api", "kind": "Deployment"}],
            },
            "destination": {"labels": ["reserved:world"]},
            "Type": "L7",
            "l7": {"type": "REQUEST", "http": http},
            "traffic_direction": "EGRESS",
        }
    }
