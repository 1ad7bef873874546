"""Attack-chain correlation: the built-in patterns, the semantics of issue 6 item 1, checkpoints."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from qcdr_analysis.correlation import Engine, PatternError, load_patterns
from qcdr_analysis.correlation.correlator import Correlator
from qcdr_analysis.correlation.patterns import builtin_patterns, parse
from qcdr_analysis.detectors import attack_rules
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding, FindingKind
from qcdr_ingest.events.adapters.tetragon import convert

from tests.analysis.conftest import load_events

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_ids = count(1)
CHAIN_DIR = (
    "corpora/tetragon/docs/security-observability-with-ebpf/03_chapter/03_security_observability_events"
)

# pattern -> one positive trace: the techniques each step's event carries (as attack_rules or a
# source's own detection would tag them), in the order the attack happens
POSITIVE: dict[str, list[tuple[str, ...]]] = {
    "container_breakout": [("T1611",), ("T1068",), ("T1059.004",)],
    "cryptominer": [("T1105",), ("T1059.004",), ("T1496.001",)],
    "credential_theft": [("T1552.007",), ("T1041",)],
    "reverse_shell": [("T1059.004", "T1095"), ("T1071",)],
    "recon_to_lateral_movement": [("T1046",), ("T1021.004",)],
    "persistence_establishment": [("T1548.001",), ("T1053.003",)],
    "defense_evasion": [("T1070.003",), ("T1564.001",)],
}


def event(
    techniques: tuple[str, ...] = (), seconds: float = 0, *, container: str = "c-1", **fields: Any
) -> SecurityEvent:
    n = next(_ids)
    data: dict[str, Any] = {
        "id": fields.pop("id", f"ev-{n:06d}"),
        "source": "falco",
        "category": fields.pop("category", "alert"),
        "severity": fields.pop("severity", "high"),
        "event_time": T0 + timedelta(seconds=seconds),
        "workload": {
            "cluster": fields.pop("cluster", "prod"),
            "namespace": "shop",
            "pod": fields.pop("pod", "api-1"),
            "container": "api",
            "container_id": container,
        },
        "techniques": list(techniques),
    }
    data.update(fields)
    return SecurityEvent.model_validate(data)


def trace(pattern: str, gap: float = 10, **fields: Any) -> list[SecurityEvent]:
    return [event(t, i * gap, **fields) for i, t in enumerate(POSITIVE[pattern])]


@pytest.fixture(scope="module")
def patterns() -> list[Any]:
    return load_patterns()


def run(engine: Engine, *batches: list[SecurityEvent], findings: tuple[Finding, ...] = ()) -> list[Finding]:
    out: list[Finding] = []
    for batch in batches:
        out += engine.feed(batch, findings)
    return out + engine.flush()


def test_twelve_builtins_with_current_techniques() -> None:
    names = [p.name for p in builtin_patterns()]
    assert len(names) == 12
    assert set(POSITIVE) < set(names)
    assert "privileged_pod_to_exfiltration" in names
    # the cross-cluster ones (tests/analysis/test_cross_cluster.py, test_lateral_movement.py);
    # lateral_movement_between_pods is in test_lateral_movement.py too
    cross = {p.name for p in builtin_patterns() if p.distinct_clusters}
    assert cross == {
        "same_image_attacked_in_several_clusters",
        "same_ioc_in_several_clusters",
        "lateral_movement_between_clusters",
    }


@pytest.mark.parametrize("name", sorted(POSITIVE))
def test_each_builtin_detected_once_with_its_techniques(patterns: list[Any], name: str) -> None:
    engine = Engine(patterns)
    chains = run(engine, trace(name))
    assert [c.category for c in chains] == [f"chain.{name}"]
    (chain,) = chains
    pattern = next(p for p in patterns if p.name == name)
    assert chain.kind is FindingKind.CHAIN
    assert chain.severity is pattern.severity
    for step_techniques in POSITIVE[name]:
        assert set(step_techniques) & set(chain.techniques) or any(
            t.split(".")[0] in chain.techniques for t in step_techniques
        )
    for wanted in pattern.techniques:
        assert any(t == wanted or t.startswith(wanted + ".") for t in chain.techniques), wanted
    steps = chain.attributes["steps"]
    assert [s["name"] for s in steps] == [s.name for s in pattern.steps]
    assert len(chain.evidence_event_ids) == len(pattern.steps)
    assert 0 < chain.attributes["confidence"] <= 1
    assert chain.attributes["clusters"] == ["prod"]
    assert chain.attributes["join"] == {"key": pattern.join.value, "value": chain.attributes["join"]["value"]}
    assert engine.partials() == [] or all(p["pattern"] != name for p in engine.partials())


def test_real_tetragon_chain(shared_path: Path, patterns: list[Any]) -> None:
    """The book's recorded attack: converted by ingest's adapter, tagged by attack_rules, as one
    consumer would see it (events plus the findings raised on them)."""
    folder = shared_path / CHAIN_DIR
    assert folder.is_dir(), f"corpus moved: {folder}"
    events = sorted(
        (convert(raw, "kind") for path in sorted(folder.rglob("*.json")) for raw in load_events(path)),
        key=lambda e: e.event_time,
    )
    assert len(events) == 25
    rules = attack_rules.setup(attack_rules.Config())
    engine = Engine(patterns)
    chains: list[Finding] = []
    for i in range(0, len(events), 4):  # micro-batches of 4
        batch = events[i : i + 4]
        chains += engine.feed(batch, attack_rules.detect(batch, rules))
    chains += engine.flush()
    assert [c.category for c in chains] == ["chain.privileged_pod_to_exfiltration"]
    chain = chains[0]
    assert {"T1611", "T1543.005", "T1071", "T1048"} <= set(chain.techniques)
    assert any(t.startswith("T1059") for t in chain.techniques)
    assert chain.attributes["join"] == {"key": "node", "value": "kind/minikube"}
    commands = {s["name"]: s["event_id"] for s in chain.attributes["steps"]}
    by_id = {e.id: e for e in events}
    assert by_id[commands["host_namespaces"]].process.path == "/usr/bin/nsenter"  # type: ignore[union-attr]
    assert by_id[commands["exfiltration"]].process.path == "/usr/bin/scp"  # type: ignore[union-attr]
    # without the findings the raw events carry no technique: nothing is claimed
    assert run(Engine(patterns), events) == []


def test_order_matters_reverse_shell_connect_before_shell_is_not_a_chain(patterns: list[Any]) -> None:
    shell, connect = trace("reverse_shell")
    late_shell = event(shell.techniques, 60)
    assert run(Engine(patterns), [connect, late_shell]) == []


def test_out_of_order_within_lateness_is_reordered(patterns: list[Any]) -> None:
    first, second = trace("credential_theft", gap=20)
    assert len(run(Engine(patterns), [second], [first])) == 1


def test_out_of_order_beyond_lateness_is_dropped(patterns: list[Any]) -> None:
    engine = Engine(patterns)
    first, second = trace("credential_theft", gap=40)  # 40 s > the 30 s allowed lateness
    assert run(engine, [second], [first]) == []
    assert engine.stats.late == 1


def test_an_event_from_a_clock_years_ahead_does_not_make_the_rest_late(patterns: list[Any]) -> None:
    # the engine's clock sits just after the trace; one event claims to be from 2031
    engine = Engine(patterns, clock=lambda: (T0 + timedelta(minutes=10)).timestamp())
    first, second = trace("credential_theft", gap=20)
    skewed = first.model_copy(update={"id": "skewed", "event_time": datetime(2031, 1, 1, tzinfo=UTC)})
    assert run(engine, [skewed]) == []
    assert engine.stats.future == 1
    assert len(run(engine, [first, second])) == 1  # still on time: the watermark did not move
    assert engine.stats.late == 0
    # a few minutes ahead is an ordinary clock difference, not an error
    near = Engine(patterns, clock=lambda: (T0 - timedelta(minutes=4)).timestamp())
    assert len(run(near, trace("credential_theft", gap=20))) == 1
    assert near.stats.future == 0


def test_a_source_delivering_in_batches_keeps_its_place_with_per_source_watermarks(
    patterns: list[Any],
) -> None:
    """A poller's detections arrive minutes old beside a live source: with one watermark they are
    late; with one per source the lowest active one governs, and a source that went quiet for
    longer than ``source_idle_s`` stops holding the others back."""
    wall = [T0.timestamp()]

    def clock() -> float:
        return wall[0]

    def live(start: int, stop: int) -> list[SecurityEvent]:
        return [event((), t, source="tetragon", container="other") for t in range(start, stop, 10)]

    first, second = trace("credential_theft", gap=30, source="qualys")  # at 0 s and 30 s
    first = first.model_copy(update={"event_time": T0 + timedelta(seconds=100)})
    second = second.model_copy(update={"event_time": T0 + timedelta(seconds=130)})

    def scenario(engine: Engine) -> list[Finding]:
        out = engine.feed([event((), 0, source="qualys", container="other")])  # the poller's last round
        for start in range(0, 400, 50):  # live events, delivered as they happen
            wall[0] = T0.timestamp() + start + 50
            out += engine.feed(live(start, start + 50))
        out += engine.feed([first, second])  # the poller's next round, at 400 s: 270-300 s old
        return out

    wall[0] = T0.timestamp()
    single = Engine(patterns, clock=clock)
    assert scenario(single) + single.flush() == []
    assert single.stats.late == 2

    wall[0] = T0.timestamp()
    per_source = Engine(patterns, clock=clock, source_idle_s=600)
    assert scenario(per_source) == []  # waiting for the poller's watermark (130 s) to move on
    assert per_source.stats.late == 0
    assert per_source.buffered >= 1
    restarted = Engine(patterns, clock=clock, source_idle_s=600)
    restarted.restore(json.loads(json.dumps(per_source.snapshot())))
    assert restarted.snapshot() == per_source.snapshot()  # the per-source marks are checkpointed
    # the poller stays quiet past the idle timeout: the live source alone moves W, the chain completes
    wall[0] += 601
    chains = restarted.feed(live(400, 460))
    assert [c.category for c in chains] == ["chain.credential_theft"]


def test_expired_window(patterns: list[Any]) -> None:
    # reverse_shell's maxspan is 5 minutes
    assert run(Engine(patterns), trace("reverse_shell", gap=301)) == []
    assert len(run(Engine(patterns), trace("reverse_shell", gap=299))) == 1


def test_steps_split_across_unrelated_workloads(patterns: list[Any]) -> None:
    events = [
        event(t, i * 10, container=f"c-{i}", pod=f"pod-{i}")
        for i, t in enumerate(POSITIVE["container_breakout"])
    ]
    assert run(Engine(patterns), events) == []


def test_benign_look_alikes(patterns: list[Any]) -> None:
    # a package install: download, then dpkg's maintainer script runs a shell, then a build burns CPU
    download = event(("T1105",), 0)
    script = event(("T1059.004",), 5, process={"path": "/bin/sh", "parent_path": "/usr/bin/dpkg"})
    busy = event(("T1496.001",), 10)
    # one event carrying every step's technique cannot be a chain on its own
    everything = event(("T1611", "T1068", "T1059.004"), 20, container="c-9")
    assert run(Engine(patterns), [download, script, busy, everything]) == []


def test_redelivered_event_never_advances_twice(patterns: list[Any]) -> None:
    engine = Engine(patterns)
    first, second, third = trace("container_breakout")
    assert engine.feed([first, second, second, first]) == []
    again = SecurityEvent.model_validate({**second.model_dump(), "event_time": third.event_time})
    assert engine.feed([again]) == []  # the same id later in time: still the same event
    assert engine.stats.duplicates >= 3
    assert len(run(engine, [third, third])) == 1


def test_restore_mid_sequence_then_redelivery_emits_exactly_once(patterns: list[Any]) -> None:
    first, second, third = trace("container_breakout", gap=5)
    third = SecurityEvent.model_validate({**third.model_dump(), "event_time": T0 + timedelta(seconds=70)})
    unrelated = event((), 60)  # matches nothing, moves the watermark: the first two steps are processed
    buffered = event(("T1070.003",), 65)  # still within lateness: waits in the buffer
    events = [first, second, unrelated, buffered, third]
    engine = Engine(patterns)
    assert engine.feed(events[:4]) == []
    assert [p["progress"] for p in engine.partials()] == ["2/3"]
    snapshot = json.loads(json.dumps(engine.snapshot()))  # what Redis would hold
    assert len(snapshot["buffer"]) == 1
    restarted = Engine(load_patterns())
    restarted.restore(snapshot)
    assert restarted.partials() == engine.partials()
    # the consumer re-reads from the last acknowledged offset: everything again
    chains = run(restarted, events)
    assert [c.category for c in chains] == ["chain.container_breakout"]
    assert restarted.stats.chains == 1
    # the original engine, fed the rest, emits the same chain (same natural key, same id)
    original = run(engine, events[4:])
    assert [c.id for c in original] == [c.id for c in chains]
    assert chains[0].attributes["natural_key"] == f"container_breakout\x1fc-1\x1f{first.id}"


def test_restore_drops_state_of_changed_patterns(patterns: list[Any]) -> None:
    engine = Engine(patterns)
    engine.feed(trace("container_breakout")[:1])
    engine.flush()
    snapshot = engine.snapshot()
    snapshot["patterns"]["container_breakout"] = "something-else"
    restarted = Engine(patterns)
    restarted.restore(snapshot)
    assert restarted.partials() == []


def test_until_breaks_the_chain() -> None:
    (pattern,) = parse(
        """
name: shell_then_connect
description: test
severity: high
maxspan: 10m
join: container
steps:
  - {name: shell, technique: T1059}
  - {name: connect, category: [process_connect], destination_port: [4444]}
until: {category: process_exit}
""",
        "test.yaml",
    )
    shell = event(("T1059.004",), 0)
    exited = event((), 5, category="process_exit")
    connect = event((), 10, category="process_connect", network={"ip": "203.0.113.7", "port": 4444})
    assert run(Engine([pattern]), [shell, exited, connect]) == []
    assert len(run(Engine([pattern]), [shell, connect])) == 1


def test_exec_ancestry_join(shared_path: Path) -> None:
    """nsenter and the host bash descend from the privileged pod's bash: an exec-keyed pattern
    joins them, an unrelated process does not."""
    (pattern,) = parse(
        """
name: shell_nsenter_shell
description: test
severity: high
maxspan: 1h
join: exec
steps:
  - {name: shell, process: [bash]}
  - {name: nsenter, process: [nsenter]}
  - {name: host_shell, process: ["*/bash"], parent_process: ["*/nsenter"]}
""",
        "test.yaml",
    )
    folder = shared_path / CHAIN_DIR / "01_reaching_the_host_namespace"
    events = [
        convert(raw, "kind")
        for name in ("privileged-pod-bash", "privileged-pod-nsenter", "host-namespace-bash")
        for raw in load_events(folder / f"{name}.json")
    ]
    assert len(run(Engine([pattern]), events)) == 1
    assert run(Engine([pattern]), [events[0], events[2]]) == []


def test_loader_errors_name_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(
        "name: mine\ndescription: x\nseverity: high\nmaxspan: 5m\njoin: pod\n"
        "steps:\n  - {name: a, technique: T1059}\n  - {name: b, technique: T9999, colour: red}\n"
    )
    with pytest.raises(PatternError) as error:
        load_patterns(tmp_path)
    message = str(error.value)
    assert "mine.yaml" in message
    assert "steps.1.technique" in message
    assert "steps.1.colour" in message
    (tmp_path / "mine.yaml").write_text(
        "name: container_breakout\ndescription: x\nseverity: high\n"
        "maxspan: 5m\njoin: pod\nsteps: [{name: a, category: x}, {name: b, category: y}]\n"
    )
    with pytest.raises(PatternError, match="defined twice"):
        load_patterns(tmp_path)
    (tmp_path / "mine.yaml").write_text(
        "name: ok_one\ndescription: x\nseverity: high\nmaxspan: 5m\n"
        "join: pod\nsteps: [{name: a, category: x}, {name: b, category: y}]\n"
    )
    assert [p.name for p in load_patterns(tmp_path)][-1] == "ok_one"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("maxspan", "99999999999d"),  # beyond a timedelta: OverflowError escaped the loader
        ("maxspan", "10000000d"),  # a timedelta, but expires_at (start + maxspan) is past year 9999
        ("maxspan", "31d"),
        ("maxspan", "P31D"),
        ("lateness", "99999999999d"),
        ("lateness", "2678400"),
    ],
)
def test_a_maxspan_or_lateness_beyond_30_days_is_a_pattern_error_naming_it(field: str, value: str) -> None:
    """Before, ``99999999999d`` was a traceback at start, and ``10000000d`` loaded and made
    ``/v1/chains/partial`` an HTTP 500 while a partial chain of the pattern existed."""

    def pattern(durations: dict[str, str]) -> str:
        return (
            "name: mine\ndescription: x\nseverity: high\njoin: pod\n"
            + "".join(f"{key}: {text}\n" for key, text in durations.items())
            + "steps: [{name: a, category: x}, {name: b, category: y}]\n"
        )

    message = rf"^mine\.yaml: mine\.{field}: Value error, {field} must be at most 30 days$"
    with pytest.raises(PatternError, match=message):
        parse(pattern({"maxspan": "1h", field: value}), "mine.yaml")
    (longest,) = parse(pattern({"maxspan": "1h", field: "30d"}), "mine.yaml")  # the bound is allowed
    assert getattr(longest, field) == timedelta(days=30)


def test_pattern_files_that_cannot_be_read_are_named(tmp_path: Path) -> None:
    (tmp_path / "binary.yaml").write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(PatternError, match=r"binary\.yaml: not UTF-8 text \(byte 6\)$"):
        load_patterns(tmp_path, builtins=False)
    (tmp_path / "binary.yaml").unlink()
    (tmp_path / "folder.yaml").mkdir()  # what the glob finds is not always a file
    with pytest.raises(PatternError, match=r"folder\.yaml: cannot read: Is a directory$"):
        load_patterns(tmp_path, builtins=False)


def test_incremental_checkpoints_rebuild_the_state(patterns: list[Any]) -> None:
    """Per-batch checkpoints carry only changed keys; merged like a Redis hash they restore the
    same state as a full snapshot."""
    engine = Engine(patterns)
    meta: dict[str, Any] = {}

    hashes: dict[str, dict[str, Any]] = {"partials": {}, "buffer": {}, "seen": {}}

    def save(checkpoint: dict[str, Any]) -> None:
        for name, store in hashes.items():
            for field, value in checkpoint.pop(name).items():
                if value is None:
                    store.pop(field, None)
                else:
                    store[field] = json.loads(json.dumps(value))
        meta.clear()
        meta.update(json.loads(json.dumps(checkpoint)))

    batches = [
        [event(("T1611",), 0, container="a"), event(("T1611",), 1, container="b")],
        [event(("T1068",), 40, container="a"), event((), 80)],
        [event(("T1059.004",), 120, container="a"), event((), 200)],  # a completes; b expires
    ]
    sizes = []
    for batch in batches:
        engine.feed(batch)
        checkpoint = engine.checkpoint()
        sizes.append(len(checkpoint["partials"]))
        save(checkpoint)
        restarted = Engine(patterns)
        restarted.restore({**meta, **{name: dict(store) for name, store in hashes.items()}})
        assert restarted.partials() == engine.partials()
        assert restarted.snapshot() == engine.snapshot()
    quiet = engine.checkpoint()
    assert quiet["partials"] == quiet["buffer"] == quiet["seen"] == {}  # nothing changed since
    assert sizes[0] == 0  # the first batch is still in the buffer (within lateness)


async def test_a_chain_stays_pending_until_a_batch_that_stored_it_commits(patterns: list[Any]) -> None:
    correlator = Correlator(Engine(patterns))
    correlator.feed(trace("credential_theft", gap=20), [])
    offered = correlator.flush()
    assert [c.category for c in offered] == ["chain.credential_theft"]
    # that batch's transaction fails; a batch of another stream (ingest:samples) commits meanwhile
    correlator.discard()
    await correlator.committed([])
    assert list(correlator.pending) == [offered[0].id]
    # the failed batch is redelivered: the engine skips its events, the chain is offered again
    again = correlator.feed([], [])
    assert again == offered
    await correlator.committed(again)
    assert correlator.pending == {}
