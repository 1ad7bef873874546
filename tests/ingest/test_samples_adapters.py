"""The sample adapters on their own (no database): the Prometheus name and label mapping, counter
rates, per-sample rejections, the registry, and how accepted samples become envelopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import qcdr_ingest.samples.adapters as adapters_package
from qcdr_common.contracts.events.v1 import Workload
from qcdr_common.contracts.samples.v1 import WorkloadSample, WorkloadSamples
from qcdr_common.registry import import_submodules
from qcdr_ingest.events.service import NUL_REASON
from qcdr_ingest.samples import service
from qcdr_ingest.samples.adapters import prometheus
from qcdr_ingest.samples.registry import Horizon, ShapeError, load_sample_adapters

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
T0_MS = 1_777_636_800_000
DIGEST = "sha256:" + "0f" * 32
# the server's clock an hour after T0: samples up to 65 min after T0 are accepted (300 s ahead)
HORIZON = Horizon(T0 + timedelta(hours=1))


def series(name: str, points: list[tuple[Any, Any]], **labels: str) -> dict[str, Any]:
    pairs = {"__name__": name, "namespace": "shop", "pod": "cart-1", "container": "app", **labels}
    return {
        "labels": [{"name": k, "value": v} for k, v in pairs.items()],
        "samples": [{"value": v, "timestamp": t} for t, v in points],
    }


def ms(seconds: float) -> int:
    return T0_MS + int(seconds * 1000)


def convert(*timeseries: Any) -> Any:
    body = {"timeseries": list(timeseries)}
    return prometheus.convert(body, "default", HORIZON)


def test_each_adapter_module_registers_exactly_one() -> None:
    registry = load_sample_adapters()
    modules = import_submodules(adapters_package)
    origins = [registry.origin(name) for name in registry.names()]
    for module in modules:
        assert origins.count(module.__name__) == 1
    assert set(registry.names()) == {"json", "prometheus"}
    for adapter in registry:
        assert adapter.summary
        assert registry.origin(adapter.name).endswith("." + adapter.name)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cpu_cores", ("cpu_cores", False)),
        ("syscalls_per_second", ("syscalls_per_second", False)),
        ("container_memory_working_set_bytes", ("memory_bytes", False)),
        ("container_cpu_usage_seconds_total", ("cpu_cores", True)),
        ("container_network_receive_bytes_total", ("network_rx_bytes_per_second", True)),
        ("container_network_transmit_bytes_total", ("network_tx_bytes_per_second", True)),
        ("namespace_pod_container:container_cpu_usage_seconds_total:sum_irate", ("cpu_cores", False)),
        ("namespace_pod_container:container_cpu_usage_seconds_total:sum_rate", ("cpu_cores", False)),
        ("pod:container_network_receive_bytes_total:rate5m", ("network_rx_bytes_per_second", False)),
        ("pod:container_cpu_usage_seconds_total:sum", None),  # a sum of the counter, not a rate
        ("pod:container_cpu_usage_seconds_total:generated", None),
        ("container_memory_usage_bytes", None),
        ("up", None),
        ("", None),
    ],
)
def test_series_names(name: str, expected: tuple[str, bool] | None) -> None:
    target = prometheus.classify(name)
    assert (None if target is None else (target.metric, target.counter)) == expected


def test_workload_labels() -> None:
    labels = {
        "cluster": "east",
        "namespace": "shop",
        "pod_name": "cart-1",
        "container_name": "app",
        "image": "r/cart:1",
        "image_digest": DIGEST,
        "owner_kind": "ReplicaSet",
        "owner_name": "cart-7d9f",
    }
    assert prometheus.workload(labels, "default") == Workload(
        cluster="east",
        namespace="shop",
        owner_kind="ReplicaSet",
        owner_name="cart-7d9f",
        pod="cart-1",
        container="app",
        image="r/cart:1",
        image_digest=DIGEST,
    )
    mixin = {
        "namespace": "shop",
        "workload": "db",
        "workload_type": "statefulset",
        "image_id": f"x://r@{DIGEST}",
    }
    found = prometheus.workload(mixin, "default")
    assert found is not None
    assert (found.cluster, found.owner_kind, found.owner_name, found.image_digest) == (
        "default",
        "StatefulSet",
        "db",
        DIGEST,
    )
    bare = prometheus.workload(
        {"namespace": "a", "pod": "p", "owner_name": "<none>", "container": "POD"}, "c"
    )
    assert bare is not None
    assert (bare.owner_name, bare.owner_kind, bare.container) == (None, None, None)
    odd = prometheus.workload({"workload": "w", "workload_type": "rollout", "image_digest": "latest"}, "c")
    assert odd is not None
    assert (odd.owner_kind, odd.image_digest) == ("rollout", None)
    assert prometheus.workload({"instance": "node-1:9100"}, "c") is None


def test_counter_rates_resets_duplicates_and_order() -> None:
    points = [(ms(60), 4.0), (ms(0), 10.0), (ms(30), 16.0), (ms(30), 99.0), (ms(90), 7.0)]
    out = convert(series("container_cpu_usage_seconds_total", points))
    rates = {s.time: s.values["cpu_cores"] for s in out.samples}
    assert rates == {
        T0 + timedelta(seconds=30): pytest.approx(0.2),  # (16 - 10) / 30
        T0 + timedelta(seconds=60): pytest.approx(4 / 30),  # 16 -> 4: a reset, 4 since then
        T0 + timedelta(seconds=90): pytest.approx(0.1),  # (7 - 4) / 30
    }
    assert (out.accepted, out.ignored, out.rejected) == (3, 2, [])  # the first, the repeated time


def test_protojson_strings_and_bad_samples() -> None:
    out = convert(
        series(
            "memory_bytes",
            [
                (str(ms(0)), "1024"),
                (ms(1), "+Inf"),
                (ms(2), True),
                ("yesterday", 1.0),
                (ms(-(10**9)), 1.0),
                (ms(5), 10**400),
                (ms(6), None),
            ],
        ),
        {"labels": {"__name__": "memory_bytes"}, "samples": [{}, {}]},
        {"labels": [["__name__", "memory_bytes"]], "samples": [{}]},
        {"labels": [], "samples": "no"},
        ["not", "a", "series"],
        {"labels": [], "samples": [1, 2]},  # no name: ignored before its samples are read
    )
    assert [s.values for s in out.samples] == [{"memory_bytes": 1024.0}]
    reasons = [(r.index, r.sample, r.count, r.reason) for r in out.rejected]
    assert [(i, s, c) for i, s, c, _ in reasons] == [
        (0, 1, 1),
        (0, 2, 1),
        (0, 3, 1),
        (0, 4, 1),
        (0, 5, 1),
        (0, 6, 1),
        (1, None, 2),
        (2, None, 1),
        (3, None, 1),
        (4, None, 1),
    ]
    assert "not finite" in reasons[0][3]
    assert "must be a number" in reasons[1][3]
    assert "epoch milliseconds" in reasons[2][3]
    assert "not plausible" in reasons[3][3]
    assert "not a number" in reasons[4][3]
    assert out.ignored == 2
    assert out.rejected_count == 11


def test_series_of_one_workload_and_instant_are_merged_and_summed() -> None:
    out = convert(
        series(
            "container_network_receive_bytes_total",
            [(ms(0), 0), (ms(10), 1000)],
            interface="eth0",
            container="",
        ),
        series(
            "container_network_receive_bytes_total",
            [(ms(0), 0), (ms(10), 500)],
            interface="eth1",
            container="",
        ),
        series("network_tx_bytes_per_second", [(ms(10), 7.0)], container=""),
        series("memory_bytes", [(ms(10), 1.7e308)]),
        series("memory_bytes", [(ms(10), 1.7e308)]),  # the sum would be infinite
    )
    by_container = {s.workload.container: s.values for s in out.samples}
    assert by_container == {
        None: {"network_rx_bytes_per_second": 150.0, "network_tx_bytes_per_second": 7.0},
        "app": {"memory_bytes": 1.7e308},
    }
    assert [(r.index, r.sample, r.reason) for r in out.rejected] == [(4, 0, "value too large to represent")]


def test_samples_stamped_ahead_of_the_clock_are_rejected_like_events() -> None:
    """A node whose clock runs ahead: its sample would move analysis's clock and make it drop every
    live sample and event as late, so it is refused per sample, as an event would be."""
    out = convert(
        series("memory_bytes", [(ms(0), 1.0), (ms(3900), 2.0), (ms(86_400 * 30), 3.0)]),
        # a counter: the sample ahead neither gives a rate nor is the base of one
        series("container_cpu_usage_seconds_total", [(ms(0), 10.0), (ms(30), 16.0), (ms(7200), 99.0)]),
    )
    assert {(s.time, tuple(s.values)) for s in out.samples} == {
        (T0, ("memory_bytes",)),
        (T0 + timedelta(seconds=3900), ("memory_bytes",)),  # 300 s ahead: at the bound, accepted
        (T0 + timedelta(seconds=30), ("cpu_cores",)),
    }
    assert [(r.index, r.sample, r.reason) for r in out.rejected] == [
        (
            0,
            2,
            f"timestamp is {86_400 * 30 - 3600} s ahead of this server's clock (at most 300 s; "
            "is the node's clock set?)",
        ),
        (1, 2, "timestamp is 3600 s ahead of this server's clock (at most 300 s; is the node's clock set?)"),
    ]
    wider = prometheus.convert(
        {"timeseries": [series("memory_bytes", [(ms(7200), 1.0)])]},
        "c",
        Horizon(T0 + timedelta(hours=1), timedelta(hours=2)),
    )
    assert (wider.accepted, wider.rejected) == (1, [])


def test_a_nul_character_in_a_workload_label_rejects_the_series() -> None:
    """PostgreSQL refuses NUL in text: analysis could not store such a workload and would
    dead-letter the whole envelope, the good samples with it."""
    out = convert(
        series("memory_bytes", [(ms(0), 1.0), (ms(1), 2.0)], namespace="sh\x00op"),
        series("memory_bytes", [(ms(0), 1.0)], cluster="east\x00"),
        series("memory_bytes", [(ms(0), 3.0)], interface="eth\x000"),  # not published: harmless
    )
    assert [s.values for s in out.samples] == [{"memory_bytes": 3.0}]
    assert [(r.index, r.sample, r.count, r.reason) for r in out.rejected] == [
        (0, None, 2, f"workload.namespace {NUL_REASON}"),
        (1, None, 1, f"workload.cluster {NUL_REASON}"),
    ]


@pytest.mark.parametrize("body", [[], {"timeseries": {}}, {"series": []}, "x", None, {"timeseries": None}])
def test_prometheus_shape_errors(body: Any) -> None:
    with pytest.raises(ShapeError):
        prometheus.size(body)


def test_prometheus_size_counts_samples() -> None:
    body = {"timeseries": [series("up", [(1, 1), (2, 2)]), "bad", {"labels": [], "samples": []}]}
    assert prometheus.size(body) == 3


def _sample(seconds: int, cluster: str | None) -> WorkloadSample:
    return WorkloadSample(
        time=T0 + timedelta(seconds=seconds),
        workload=Workload(cluster=cluster, pod="p"),
        values={"cpu_cores": 1.0},
    )


def test_chunks_per_cluster_oldest_first() -> None:
    samples = [_sample(5, "a"), _sample(1, "b"), _sample(0, "a"), _sample(3, "a"), _sample(2, None)]
    chunks = service.chunks(samples, size=2)
    assert [[(s.workload.cluster, s.time.second) for s in chunk] for chunk in chunks] == [
        [("a", 0), ("a", 3)],
        [("a", 5)],
        [("b", 1)],
        [(None, 2)],
    ]


def test_envelopes_have_ids_derived_from_their_content() -> None:
    samples = [_sample(i, "a") for i in range(3)]
    first = service.envelopes("json", samples, service="ingest", default_cluster="here")
    again = service.envelopes("json", list(reversed(samples)), service="ingest", default_cluster="here")
    other = service.envelopes("json", samples[:2], service="ingest", default_cluster="here")
    assert [e.id for e in first] == [e.id for e in again]
    assert first[0].id != other[0].id
    [envelope] = first
    assert (envelope.type, envelope.cluster_id, envelope.occurred_at) == (
        "ingest.samples_received",
        "a",
        T0 + timedelta(seconds=2),
    )
    assert envelope.payload_as(WorkloadSamples).samples == tuple(samples)
    [unnamed] = service.envelopes("json", [_sample(0, None)], service="ingest", default_cluster="here")
    assert unnamed.cluster_id == "here"
