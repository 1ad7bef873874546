"""Drift against the image's baseline: new and modified executables, package managers, writes to
binary directories; learning or not, with their evidence and explanations."""

from __future__ import annotations

import pytest
from qcdr_analysis.profiles.drift import package_manager
from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.contracts.findings.v1 import FindingKind

from tests.analysis.conftest import T0
from tests.analysis.profiles_factory import (
    HOURS,
    PROFILE,
    WORKLOAD,
    by_category,
    detector,
    exec_event,
    exec_hash_event,
    file_event,
    learn_api,
    run,
)

READY = T0 + 48 * HOURS
CURL_HASH = "1" * 64
EVIL_HASH = "f" * 64


def test_new_executable_after_learning_names_the_writable_dir() -> None:
    state = detector()
    learn_api(state)
    event = exec_event("/dev/shm/.x/miner", READY, parent="/bin/sh")
    finding = by_category(run(state, event))["drift.new_executable"]
    assert finding.kind == FindingKind.DRIFT
    assert finding.detector == "drift"
    assert finding.severity == Severity.CRITICAL
    assert finding.techniques == ("T1059",)
    assert finding.evidence_event_ids == (event.id,)
    assert finding.attributes["workload_key"] == WORKLOAD
    assert finding.attributes["profile_key"] == PROFILE
    assert finding.attributes["explanation"]["new"]["writable_dir"] == "/dev/shm"
    assert "from the writable directory /dev/shm" in finding.explanation
    assert "executables: /usr/bin/curl (48 execs)" in finding.explanation
    # a known executable is no drift
    assert run(state, exec_event("/usr/bin/curl", READY, parent="/bin/sh")) == []


def test_modified_executable_is_a_known_path_with_a_hash_never_seen() -> None:
    state = detector()
    for h in range(48):
        run(state, exec_hash_event("/usr/bin/curl", CURL_HASH, T0 + h * HOURS))
    learn_api(state)
    assert run(state, exec_hash_event("/usr/bin/curl", CURL_HASH, READY)) == []
    event = exec_hash_event("/usr/bin/curl", EVIL_HASH, READY + HOURS)
    finding = by_category(run(state, event))["drift.modified_executable"]
    assert finding.severity == Severity.CRITICAL
    assert finding.techniques == ("T1036.005",)
    assert finding.attributes["explanation"]["new"] == {
        "kind": "hash",
        "path": "/usr/bin/curl",
        "hash": f"sha256:{EVIL_HASH}",
        "known_hashes": [f"sha256:{CURL_HASH}"],
    }
    assert f"known: sha256:{CURL_HASH} (49 times)" in finding.explanation  # 48 learned, 1 since
    # a path whose hash was never learned (no IMA policy while learning) is not "modified"
    assert run(state, exec_hash_event("/usr/local/bin/python3", EVIL_HASH, READY)) == []
    # an LSM hook naming an unknown binary is a new executable (once, with the exec itself)
    both = run(
        state,
        exec_hash_event("/tmp/dropper", EVIL_HASH, READY + 2 * HOURS),
        exec_event("/tmp/dropper", READY + 2 * HOURS, parent="/bin/sh"),
    )
    assert [f.category for f in both].count("drift.new_executable") == 1


def test_package_manager_fires_while_learning_once_per_binary_and_window() -> None:
    state = detector()
    event = exec_event("/usr/bin/apt-get", T0 + HOURS, parent="/bin/sh", arguments="install -y nmap")
    finding = by_category(run(state, exec_event("/bin/sh", T0), event))["drift.package_manager"]
    assert finding.severity == Severity.HIGH
    assert finding.techniques == ("T1105",)
    assert finding.attributes["profile_state"] == "learning"
    assert finding.attributes["explanation"]["new"]["command"] == "/usr/bin/apt-get install -y nmap"
    assert "is learning" in finding.explanation
    # the same binary again within the window: suppressed; another manager: raised
    assert run(state, exec_event("/usr/bin/apt-get", T0 + 2 * HOURS, arguments="install curl")) == []
    pip = run(state, exec_event("/usr/local/bin/pip3.11", T0 + 2 * HOURS, arguments="install requests"))
    assert [f.category for f in pip] == ["drift.package_manager"]
    # read-only queries are not drift
    assert run(state, exec_event("/usr/bin/dpkg", T0 + 3 * HOURS, arguments="-l")) == []


@pytest.mark.parametrize(
    ("path", "arguments", "expected"),
    [
        ("/usr/bin/apt-get", "install -y curl", "apt-get"),
        ("/usr/bin/apt", "update", "apt"),
        ("/usr/bin/apt", "list --installed", None),
        ("/usr/bin/dpkg", "-i evil.deb", "dpkg"),
        ("/usr/bin/dpkg", "--print-architecture", None),
        ("/usr/bin/rpm", "-Uvh x.rpm", "rpm"),
        ("/usr/bin/rpm", "-qa", None),
        ("/sbin/apk", "add --no-cache socat", "apk"),
        ("/sbin/apk", "info -e musl", None),
        ("/usr/bin/microdnf", "install -y procps", "microdnf"),
        ("/usr/bin/yum", "-q list installed", None),
        ("/usr/bin/zypper", "--non-interactive in nmap", "zypper"),
        ("/usr/local/bin/pip", "install --user requests", "pip"),
        ("/usr/local/bin/pip3.12", "freeze", None),
        ("/usr/local/bin/python3.11", "-m pip install pyinstaller", "pip"),
        ("/usr/local/bin/python3", "-m http.server", None),
        ("/usr/local/bin/npm", "i -g ngrok", "npm"),
        ("/usr/local/bin/npm", "start", None),
        ("/usr/local/bin/yarn", "add left-pad", "yarn"),
        ("/usr/bin/gem", "install bundler", "gem"),
        ("/usr/local/go/bin/go", "install example.com/x@latest", "go"),
        ("/usr/local/go/bin/go", "version", None),
        ("/usr/bin/python3", "app.py", None),
    ],
)
def test_package_manager_classification(path: str, arguments: str, expected: str | None) -> None:
    assert package_manager(path, arguments) == expected


def test_binary_dir_write_fires_while_learning_once_per_writer_and_directory() -> None:
    state = detector()
    first = file_event("/usr/bin/curl", "/usr/local/bin/kubectl", T0, write=True)
    findings = by_category(run(state, first))
    finding = findings["drift.binary_dir_write"]
    assert finding.severity == Severity.HIGH
    assert finding.techniques == ("T1036.005",)
    assert finding.attributes["explanation"]["new"]["directory"] == "/usr/local/bin"
    assert run(state, file_event("/usr/bin/curl", "/usr/local/bin/helm", T0, write=True)) == []
    library = by_category(run(state, file_event("/bin/cp", "/usr/lib/libssl.so.3", T0, write=True)))
    assert library["drift.binary_dir_write"].techniques == ("T1574",)
    # reads are not writes
    assert run(state, file_event("/bin/cat", "/usr/bin/env", T0)) == []


def test_drift_can_be_switched_off() -> None:
    state = detector(drift=False)
    learn_api(state)
    findings = run(
        state,
        exec_event("/usr/bin/apt-get", READY, arguments="install nmap"),
        file_event("/bin/cp", "/usr/bin/ls", READY, write=True),
    )
    assert {f.detector for f in findings} == {"behaviour_profile"}
