"""``prometheus``: a Prometheus remote-write request as JSON (the protobuf's fields, not the
snappy-compressed protobuf itself)::

    {"timeseries": [{"labels": [{"name": "__name__", "value": "container_memory_working_set_bytes"},
                                {"name": "namespace", "value": "shop"},
                                {"name": "pod", "value": "cart-7d9f-x2"},
                                {"name": "container", "value": "app"}],
                     "samples": [{"value": 73400320, "timestamp": 1777636800000}]}]}

Which series become which metric (anything else is counted as *ignored*, not as an error):

* ``__name__`` already one of our names (``cpu_cores``, ``memory_bytes``, ...): taken as it is;
* gauges: ``container_memory_working_set_bytes`` -> ``memory_bytes``;
* counters, turned into per-second rates **within one request**: ``container_cpu_usage_seconds_total``
  -> ``cpu_cores``, ``container_network_receive_bytes_total`` -> ``network_rx_bytes_per_second``,
  ``container_network_transmit_bytes_total`` -> ``network_tx_bytes_per_second``. Consecutive samples
  of a series give (increase / seconds between them) at the later one's time; the first sample of
  each series is ignored, and a drop in value is a counter reset (the new value is the increase).
  No state is kept between requests, so a sender that writes one sample per series per request
  should send a rate instead:
* recording rules named ``level:<counter>:<operations>`` whose operations name a rate
  (``namespace_pod_container:container_cpu_usage_seconds_total:sum_irate``, ``...:rate5m``) are
  already rates and map like a gauge onto the counter's metric.

cAdvisor's CPU and memory series without a container (or for the ``POD`` sandbox) are the pod's
cgroup totals, the sum of its containers, and are ignored so nothing is counted twice; network
series exist only per pod and keep ``container`` empty. Several series of one workload and instant
that map to one metric (per network interface, say) are added up.

Workload labels: ``cluster`` (else the request's default), ``namespace``, ``pod`` (``pod_name``),
``container`` (``container_name``), ``image``, the owner as ``owner_kind``/``owner_name``
(kube_pod_owner) or ``workload_type``/``workload`` (the kubernetes-mixin's
``namespace_workload_pod:kube_pod_owner:relabel``), and the digest from ``image_digest`` or
``image_id`` (the ``sha256:…`` part). A series naming no namespace, pod or owner (a node's or the
root cgroup's) is ignored. Values must be finite and non-negative: NaN (Prometheus stale markers
included), infinities and negative numbers are rejected per sample, as are timestamps beyond the
horizon (a node's clock ahead); a series whose workload labels hold a NUL character is rejected.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from pydantic import ValidationError
from qcdr_common.contracts.events.v1 import Workload
from qcdr_common.contracts.samples.v1 import KNOWN_METRICS, WorkloadSample

from qcdr_ingest.events.service import millis
from qcdr_ingest.samples.registry import Converted, Horizon, Rejection, ShapeError, register, unstorable

GAUGES = {"container_memory_working_set_bytes": "memory_bytes"}
COUNTERS = {
    "container_cpu_usage_seconds_total": "cpu_cores",  # CPU seconds per second = cores
    "container_network_receive_bytes_total": "network_rx_bytes_per_second",
    "container_network_transmit_bytes_total": "network_tx_bytes_per_second",
}
# cAdvisor series that exist per container and also once more as the pod's total
PER_CONTAINER = frozenset({"container_memory_working_set_bytes", "container_cpu_usage_seconds_total"})
# kubernetes-mixin workload_type values -> Kubernetes kinds (others are kept as they are)
KINDS = {
    "deployment": "Deployment",
    "daemonset": "DaemonSet",
    "statefulset": "StatefulSet",
    "replicaset": "ReplicaSet",
    "replicationcontroller": "ReplicationController",
    "job": "Job",
    "cronjob": "CronJob",
}
_RATE_OPERATION = re.compile(r"i?rate(?:\d+[smhdwy])?")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_SANDBOX = {"", "POD"}
_NONE = {"", "<none>"}  # kube-state-metrics writes <none> for a pod without an owner
# Epoch milliseconds between 2000-01-01 and 2200-01-01.
_MS_MIN, _MS_MAX = 946_684_800_000, 7_258_118_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Target:
    metric: str  # our name
    counter: bool  # needs a rate
    per_container: bool  # the container-less series is a pod total (ignored)


@lru_cache(maxsize=4096)
def classify(name: str) -> Target | None:
    """How a series name maps onto our metrics; None: not one we use."""
    if name in KNOWN_METRICS:
        return Target(name, counter=False, per_container=False)
    if name in GAUGES:
        return Target(GAUGES[name], counter=False, per_container=name in PER_CONTAINER)
    if name in COUNTERS:
        return Target(COUNTERS[name], counter=True, per_container=name in PER_CONTAINER)
    parts = name.split(":")
    if (
        len(parts) == 3
        and parts[1] in COUNTERS
        and any(_RATE_OPERATION.fullmatch(op) for op in parts[2].split("_"))
    ):
        return Target(COUNTERS[parts[1]], counter=False, per_container=False)
    return None


class _BadInputError(ValueError):
    """One series or sample is unusable; the message is the reason."""


def _labels(raw: Any) -> dict[str, str]:
    if not isinstance(raw, list):
        raise _BadInputError(f"labels must be an array, got {type(raw).__name__}")
    labels: dict[str, str] = {}
    for label in raw:
        if not (
            isinstance(label, dict)
            and isinstance(label.get("name"), str)
            and isinstance(label.get("value"), str)
        ):
            raise _BadInputError("each label must be an object {name: string, value: string}")
        labels[label["name"]] = label["value"]
    return labels


def _label(labels: dict[str, str], *names: str) -> str | None:
    for name in names:
        value = labels.get(name)
        if value is not None and value not in _NONE:
            return value
    return None


def _digest(labels: dict[str, str]) -> str | None:
    for name in ("image_digest", "image_id"):
        found = _DIGEST.search(labels.get(name, ""))
        if found:
            return found.group()
    return None


def workload(labels: dict[str, str], cluster: str) -> Workload | None:
    """The workload a series describes; None when it names no namespace, pod or owner."""
    namespace = _label(labels, "namespace")
    pod = _label(labels, "pod", "pod_name")
    container = _label(labels, "container", "container_name")
    owner_name = _label(labels, "owner_name")
    owner_kind = _label(labels, "owner_kind") if owner_name else None
    if owner_name is None:
        owner_name = _label(labels, "workload")
        kind = _label(labels, "workload_type") if owner_name else None
        owner_kind = KINDS.get(kind.lower(), kind) if kind else None
    if not (namespace or pod or owner_name):
        return None
    return Workload(
        cluster=_label(labels, "cluster") or cluster,
        namespace=namespace,
        owner_kind=owner_kind,
        owner_name=owner_name,
        pod=pod,
        container=None if container == "POD" else container,
        image=_label(labels, "image"),
        image_digest=_digest(labels),
    )


def _value(raw: Any) -> float:
    # protojson writes NaN and infinities as strings, so numeric strings are accepted too
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise _BadInputError(f"value must be a number, got {type(raw).__name__}")
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        raise _BadInputError(f"value {str(raw)[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise _BadInputError(f"value {str(raw)[:40]} is not finite (NaN is also a Prometheus stale marker)")
    if value < 0:
        raise _BadInputError(f"value {value} is negative")
    return value


def _millis(raw: Any) -> int:
    # protojson writes int64 as a string
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _BadInputError(f"timestamp must be epoch milliseconds, got {type(raw).__name__}")
    if not _MS_MIN <= raw < _MS_MAX:
        raise _BadInputError(f"timestamp {raw} is not plausible epoch milliseconds")
    return raw


def _series_size(series: Any) -> int:
    samples = series.get("samples") if isinstance(series, dict) else None
    return len(samples) if isinstance(samples, list) else 1


def size(body: Any) -> int:
    if not isinstance(body, dict) or "timeseries" not in body:
        raise ShapeError('body must be a JSON object {"timeseries": [...]} (remote-write fields as JSON)')
    if not isinstance(body["timeseries"], list):
        raise ShapeError(f'"timeseries" must be an array, got {type(body["timeseries"]).__name__}')
    return sum(_series_size(series) for series in body["timeseries"])


class _Builder:
    """Values merged per (workload, instant): one WorkloadSample carries all metrics of a scrape."""

    def __init__(self) -> None:
        self.out = Converted([])
        self.groups: dict[tuple[Workload, int], dict[str, float]] = {}
        self.first_series: dict[tuple[Workload, int], int] = {}

    def add(self, index: int, position: int, who: Workload, ms: int, metric: str, value: float) -> None:
        key = (who, ms)
        values = self.groups.setdefault(key, {})
        total = values.get(metric, 0.0) + value
        if not math.isfinite(total):
            self.out.rejected.append(Rejection(index, "value too large to represent", position))
            return
        values[metric] = total
        self.first_series.setdefault(key, index)
        self.out.accepted += 1

    def finish(self) -> Converted:
        for (who, ms), values in self.groups.items():
            try:
                sample = WorkloadSample(time=_EPOCH + timedelta(milliseconds=ms), workload=who, values=values)
            except ValidationError as exc:  # the checks above should make this unreachable
                index = self.first_series[(who, ms)]
                self.out.rejected.append(
                    Rejection(index, str(exc.errors()[0]["msg"])[:300], count=len(values))
                )
                self.out.accepted -= len(values)
                continue
            self.out.samples.append(sample)
        self.out.rejected.sort(key=lambda r: (r.index, -1 if r.sample is None else r.sample))
        return self.out


def _points(
    index: int, raw_samples: list[Any], out: Converted, horizon: Horizon
) -> list[tuple[int, int, float]]:
    """(milliseconds, position, value) of the usable samples; the others rejected."""
    points: list[tuple[int, int, float]] = []
    latest_ms = millis(horizon.latest)
    for position, raw in enumerate(raw_samples):
        try:
            if not isinstance(raw, dict):
                raise _BadInputError(f"a sample must be an object, got {type(raw).__name__}")
            ms = _millis(raw.get("timestamp"))
            if ms > latest_ms and (
                ahead := horizon.refuses(_EPOCH + timedelta(milliseconds=ms), "timestamp")
            ):
                raise _BadInputError(ahead)
            points.append((ms, position, _value(raw.get("value"))))
        except _BadInputError as exc:
            out.rejected.append(Rejection(index, str(exc), position))
    return points


def convert(body: Any, cluster: str, horizon: Horizon) -> Converted:
    builder = _Builder()
    out = builder.out
    for index, series in enumerate(body["timeseries"]):
        count = _series_size(series)
        try:
            if not isinstance(series, dict):
                raise _BadInputError(f"a series must be an object, got {type(series).__name__}")
            labels = _labels(series.get("labels"))
            raw_samples = series.get("samples", [])
            if not isinstance(raw_samples, list):
                raise _BadInputError(f"samples must be an array, got {type(raw_samples).__name__}")
        except _BadInputError as exc:
            out.rejected.append(Rejection(index, str(exc), count=count))
            continue
        mapping = classify(labels.get("__name__", ""))
        who = workload(labels, cluster) if mapping is not None else None
        if mapping is None or who is None or (mapping.per_container and who.container is None):
            out.ignored += count
            continue
        if refused := unstorable(who):
            out.rejected.append(Rejection(index, refused, count=count))
            continue
        points = _points(index, raw_samples, out, horizon)
        if not mapping.counter:
            for ms, position, value in points:
                builder.add(index, position, who, ms, mapping.metric, value)
            continue
        points.sort()
        previous: tuple[int, int, float] | None = None
        for point in points:
            if previous is None or point[0] == previous[0]:
                out.ignored += 1  # the first sample (or a repeated timestamp) gives no rate
                previous = previous or point
                continue
            ms, position, value = point
            increase = value - previous[2] if value >= previous[2] else value  # a drop is a reset
            rate = increase / ((ms - previous[0]) / 1000)
            builder.add(index, position, who, ms, mapping.metric, rate)
            previous = point
    return builder.finish()


register(
    "prometheus",
    "Prometheus remote-write fields as JSON: {timeseries: [{labels, samples}]}",
    size,
    convert,
    __name__,
)
