"""Tetragon export lines for the simulated workloads, built on real exported events.

One real event per type is read from ``../shared/corpora/tetragon`` at run time and used as the
template of every line of that type (its keys, flags, capabilities, layout):

* exec: ``process_exec`` of the book's lifecycle chapter (``nc_process_exec.json``);
* connection: that chapter's ``process_kprobe`` (``cat_process_kprobe.json``) as the
  ``tcp_connect`` hook of the ``connect`` TracingPolicy (``examples/tracingpolicy/tcp-connect.yaml``)
  reports it: one ``sock_arg`` with the addresses and ports;
* file write: the docs' ``security_file_permission`` event (``use-cases__filename-access``), whose
  ``int_arg`` 2 is MAY_WRITE.

Lines become ``SecurityEvent``s through the real ingest adapter. Converting 400,000 lines would
take most of the test's budget, so the adapter converts the first line of each *shape* (one
workload's pod doing one behaviour item), every :data:`ADAPTER_EVERY`-th line and every injected
line; the others copy the adapter's event of their shape with ``model_copy`` (new id, time, raw
line and pid), which the unit tests check gives what the adapter gives.
"""

from __future__ import annotations

import base64
import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_ingest.events.adapters.tetragon import convert
from qcdr_ingest.events.fields import stable_id

from tests.analysis.simulation import CLUSTER, START
from tests.analysis.simulation.cluster import SHIM, Cluster, Spec

BOOK = "docs/security-observability-with-ebpf/03_chapter/00_process_lifecycle"
EXEC_TEMPLATE = f"{BOOK}/nc_process_exec.json"
CONNECT_TEMPLATE = f"{BOOK}/cat_process_kprobe.json"
WRITE_TEMPLATE = "docs-extracted-events/use-cases__filename-access.block0.json"
ADAPTER_EVERY = 50
BOOT_NS = 3_000_000_000_000  # the nodes' uptime at START, for exec ids (ktime)


def corpus_dir() -> Path:
    from qcdr_common.testing.plugin import shared_dir

    shared = shared_dir()
    path = shared / "corpora" / "tetragon" if shared else None
    if path is None or not path.is_dir():
        raise FileNotFoundError("../shared/corpora/tetragon is absent (set QCDR_SHARED_DIR)")
    return path


class Templates:
    def __init__(self, corpus: Path) -> None:
        self.exec = json.loads((corpus / EXEC_TEMPLATE).read_text("utf-8"))["process_exec"]
        self.kprobe = json.loads((corpus / CONNECT_TEMPLATE).read_text("utf-8"))["process_kprobe"]
        self.write = json.loads((corpus / WRITE_TEMPLATE).read_text("utf-8"))["process_kprobe"]
        self.pod: dict[str, Any] = self.write["process"]["pod"]  # the newer pod shape (workload, kind)
        assert self.write["function_name"] == "security_file_permission"


_MINUTE_US = 60_000_000
_minute_prefix: dict[int, str] = {}


def iso(us: int) -> str:
    """Tetragon's time format (RFC 3339, UTC, ``Z``), with the minute's prefix cached (hot path)."""
    minute, rest = divmod(us, _MINUTE_US)
    prefix = _minute_prefix.get(minute)
    if prefix is None:
        moment = START + timedelta(microseconds=minute * _MINUTE_US)
        prefix = _minute_prefix[minute] = moment.strftime("%Y-%m-%dT%H:%M:")
    seconds, micros = divmod(rest, 1_000_000)
    return f"{prefix}{seconds:02d}.{micros:06d}Z"


class EventFactory:
    """Export lines and events of one cluster; caches per pod and per shape, so most lines cost a
    few dict copies and a ``model_copy``."""

    def __init__(self, templates: Templates, cluster: Cluster) -> None:
        self.t = templates
        self.cluster = cluster
        self.pods: dict[tuple[int, int], dict[str, Any]] = {}
        self.entries: dict[tuple[int, int], dict[str, Any]] = {}
        self.shims: dict[tuple[int, int], dict[str, Any]] = {}
        self.shapes: dict[tuple[Any, ...], SecurityEvent] = {}
        self.pid = 10_000
        self.count = 0
        self.converted = 0

    # ------------------------------------------------------------------ processes

    def _exec_id(self, node: str, us: int, pid: int) -> str:
        return base64.b64encode(f"{node}:{BOOT_NS + us * 1000}:{pid}".encode()).decode()

    def _pod(self, w: int, p: int) -> dict[str, Any]:
        found = self.pods.get((w, p))
        if found is None:
            spec, pod = self.cluster.workloads[w], self.cluster.workloads[w].pods[p]
            found = copy.deepcopy(self.t.pod)
            found.update(
                namespace=spec.namespace,
                name=pod.name,
                pod_labels={"app": spec.name},
                workload=spec.name,
                workload_kind=spec.kind,
            )
            found["container"].update(
                id=f"containerd://{pod.container_id}",
                name=spec.container,
                image={"id": f"{spec.image.rsplit(':', 1)[0]}@{spec.digest}", "name": spec.image},
                start_time=iso(-86_400_000_000).replace(".000000", ""),
                pid=1,
            )
            self.pods[(w, p)] = found
        return found

    def _process(
        self,
        template: dict[str, Any],
        spec: Spec,
        p: int,
        us: int,
        pid: int,
        binary: str,
        arguments: str,
        parent: dict[str, Any],
    ) -> dict[str, Any]:
        pod = spec.pods[p]
        process = dict(template["process"])
        process.update(
            exec_id=self._exec_id(pod.node, us, pid),
            pid=pid,
            cwd=spec.cwd,
            binary=binary,
            arguments=arguments,
            start_time=iso(us),
            pod=self._pod(spec.index, p),
            docker=pod.container_id[:31],
            parent_exec_id=parent["exec_id"],
        )
        if "tid" in process:
            process["tid"] = pid
        if not arguments:
            del process["arguments"]
        return process

    def _shim(self, w: int, p: int) -> dict[str, Any]:
        found = self.shims.get((w, p))
        if found is None:
            pod = self.cluster.workloads[w].pods[p]
            found = {
                "exec_id": self._exec_id(pod.node, -86_400_000_001, 900 + p),
                "pid": 900 + p,
                "uid": 0,
                "cwd": "/run/containerd/io.containerd.runtime.v2.task/k8s.io",
                "binary": SHIM,
                "arguments": f"-namespace k8s.io -id {pod.container_id}",
                "flags": "procFS auid rootcwd",
                "start_time": iso(-86_400_000_001),
                "auid": 4294967295,
                "parent_exec_id": self._exec_id(pod.node, -99_000_000_000, 1),
            }
            self.shims[(w, p)] = found
        return found

    def _entry(self, w: int, p: int) -> dict[str, Any]:
        """The container's main process, started a day before the scenario."""
        found = self.entries.get((w, p))
        if found is None:
            spec = self.cluster.workloads[w]
            found = self._process(
                self.t.kprobe,
                spec,
                p,
                -86_400_000_000,
                1000 + p,
                spec.entrypoint,
                spec.arguments,
                self._shim(w, p),
            )
            self.entries[(w, p)] = found
        return found

    def _parent(self, w: int, p: int, binary: str) -> dict[str, Any]:
        return self._shim(w, p) if binary == SHIM else self._entry(w, p)

    def _next_pid(self) -> int:
        self.pid = self.pid + 1 if self.pid < 4_000_000 else 10_000
        return self.pid

    # ------------------------------------------------------------------ lines

    def exec_lines(self, w: int, p: int, chain: int, us: int) -> list[dict[str, Any]]:
        """The lines of one exec chain (``sh -c curl`` is two execs, 3 ms apart)."""
        spec = self.cluster.workloads[w]
        lines: list[dict[str, Any]] = []
        parent: dict[str, Any] | None = None
        for step, (binary, parent_binary, arguments) in enumerate(spec.chains[chain]):
            when = us + 3000 * step
            parent = parent if parent is not None else self._parent(w, p, parent_binary)
            process = self._process(self.t.exec, spec, p, when, self._next_pid(), binary, arguments, parent)
            node = spec.pods[p].node
            lines.append(
                {"process_exec": {"process": process, "parent": parent}, "node_name": node, "time": iso(when)}
            )
            parent = process
        return lines

    def injected_exec_line(self, w: int, p: int, binary: str, arguments: str, us: int) -> dict[str, Any]:
        spec = self.cluster.workloads[w]
        parent = self._entry(w, p)
        process = self._process(self.t.exec, spec, p, us, self._next_pid(), binary, arguments, parent)
        return {
            "process_exec": {"process": process, "parent": parent},
            "node_name": spec.pods[p].node,
            "time": iso(us),
        }

    def connect_line(self, w: int, p: int, ip: str, port: int, us: int) -> dict[str, Any]:
        pod = self.cluster.workloads[w].pods[p]
        sport = 32768 + (us // 1000) % 28000
        body = {
            **self.t.kprobe,
            "process": self._entry(w, p),
            "parent": self._shim(w, p),
            "function_name": "tcp_connect",
            "args": [
                {
                    "sock_arg": {
                        "family": "AF_INET",
                        "type": "SOCK_STREAM",
                        "protocol": "IPPROTO_TCP",
                        "saddr": pod.ip,
                        "daddr": ip,
                        "sport": sport,
                        "dport": port,
                    }
                }
            ],
            "policy_name": "connect",
        }
        return {"process_kprobe": body, "node_name": pod.node, "time": iso(us)}

    def write_line(self, w: int, p: int, path: str, us: int) -> dict[str, Any]:
        spec = self.cluster.workloads[w]
        body = {
            **self.t.write,
            "process": self._entry(w, p),
            "parent": self._shim(w, p),
            "args": [{"file_arg": {"path": path, "permission": "-rw-r--r--"}}, {"int_arg": 2}],
        }
        return {"process_kprobe": body, "node_name": spec.pods[p].node, "time": iso(us)}

    # ------------------------------------------------------------------ events

    def convert(self, line: dict[str, Any]) -> SecurityEvent:
        self.converted += 1
        self.count += 1
        return convert(line, CLUSTER)

    def event(self, shape: tuple[Any, ...], line: dict[str, Any], us: int) -> SecurityEvent:
        """The event of ``line``: the adapter's for a new shape and every ADAPTER_EVERY-th line,
        else a copy of the shape's event with what differs between two lines of one shape."""
        template = self.shapes.get(shape)
        self.count += 1
        if template is None or self.count % ADAPTER_EVERY == 0:
            self.count -= 1
            event = self.convert(line)
            self.shapes.setdefault(shape, event)
            return event
        kind = "process_exec" if "process_exec" in line else "process_kprobe"
        body = line[kind]
        process = body["process"]
        hook = body.get("function_name") or ""
        policy = body.get("policy_name") or ""
        update: dict[str, Any] = {
            "id": stable_id("tetragon", kind, process["exec_id"], line["time"], hook, policy),
            "event_time": START + timedelta(microseconds=us),
            "raw": line,
        }
        if template.process is not None and template.process.pid != process["pid"]:
            update["process"] = template.process.model_copy(update={"pid": process["pid"]})
        return template.model_copy(update=update)
