"""Agreement with the Kyverno pod-security policies' own CLI tests (``../shared``).

Each Kyverno policy maps to the PSS check it implements and that check's level; every resource
its ``kyverno-test.yaml`` lists must pass or fail our check the same way (Pods, and through the
pod template Deployments and CronJobs). ``disallow-host-ports-range`` is not a Pod Security
Standard (PSS forbids every host port) and is left out.

Two Kyverno shapes need a word:
- ``disallow-capabilities-strict`` splits ``capabilities_restricted`` into two rules (only
  ``NET_BIND_SERVICE`` added; ``drop: [ALL]``). Each rule's resources are judged with the other
  half satisfied (every container drops ALL for the "add" rule; adds removed for the "drop" rule),
  so only the half the rule tests decides.
- The ``podSecurity`` subrule policies judge a whole level; their ``exclude`` entries drop the
  checks of the named control when it is pod-wide or every container's image matches.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from qcdr_admission.pss import evaluate, pod_spec_of
from qcdr_common.testing.plugin import shared_dir

pytestmark = pytest.mark.shared

CORPUS = Path("corpora/admission/kyverno-policies/pod-security")
# Kyverno policy -> (level, PSS check id)
POLICIES = {
    "disallow-capabilities": ("baseline", "capabilities_baseline"),
    "disallow-host-namespaces": ("baseline", "hostNamespaces"),
    "disallow-host-path": ("baseline", "hostPathVolumes"),
    "disallow-host-ports": ("baseline", "hostPorts"),
    "disallow-host-process": ("baseline", "windowsHostProcess"),
    "disallow-privileged-containers": ("baseline", "privileged"),
    "disallow-proc-mount": ("baseline", "procMount"),
    "disallow-selinux": ("baseline", "seLinuxOptions"),
    "restrict-apparmor-profiles": ("baseline", "appArmorProfile"),
    "restrict-seccomp": ("baseline", "seccompProfile_baseline"),
    "restrict-sysctls": ("baseline", "sysctls"),
    "disallow-capabilities-strict": ("restricted", "capabilities_restricted"),
    "disallow-privilege-escalation": ("restricted", "allowPrivilegeEscalation"),
    "require-run-as-non-root-user": ("restricted", "runAsUser"),
    "require-run-as-nonroot": ("restricted", "runAsNonRoot"),
    "restrict-seccomp-strict": ("restricted", "seccompProfile_restricted"),
    "restrict-volume-types": ("restricted", "restrictedVolumes"),
}
NOT_PSS = {"disallow-host-ports-range"}
# Kyverno podSecurity control names -> our check ids
CONTROLS = {
    "Capabilities": {"capabilities_baseline", "capabilities_restricted"},
    "Seccomp": {"seccompProfile_baseline", "seccompProfile_restricted"},
}
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def kyverno_tests(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(root.rglob(".kyverno-test/kyverno-test.yaml")):
        yield path, yaml.safe_load(path.read_text())


def resources(test_file: Path, test: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for name in test["resources"]:
        for doc in yaml.safe_load_all((test_file.parent / name).read_text()):
            if doc:
                found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def policy_of(test_file: Path, test: dict[str, Any]) -> dict[str, Any]:
    [policy] = test["policies"]
    document: dict[str, Any] = yaml.safe_load((test_file.parent / policy).read_text())
    return document


def cases() -> list[Any]:
    shared = shared_dir()
    if shared is None or not (shared / CORPUS).is_dir():
        return []
    found = []
    for test_file, test in kyverno_tests(shared / CORPUS):
        policy = policy_of(test_file, test)
        docs = resources(test_file, test)
        for result in test["results"]:
            if result["policy"] in NOT_PSS:
                continue
            for name in result["resources"]:
                found.append(
                    pytest.param(
                        policy,
                        result["rule"],
                        docs[(result["kind"], name)],
                        result["result"],
                        id=f"{result['policy']}/{result['rule']}/{result['kind']}/{name}",
                    )
                )
    return found


CASES = cases()


def test_corpus_present_and_every_policy_mapped(shared_path: Path) -> None:
    names = {test["results"][0]["policy"] for _, test in kyverno_tests(shared_path / CORPUS)}
    subrules = {name for name in names if name.startswith("podsecurity-subrule")}
    assert names - subrules - NOT_PSS == set(POLICIES), "a Kyverno pod-security policy is not mapped"
    assert len(subrules) == 4
    assert len(CASES) > 800


def neutralise(doc: dict[str, Any], rule: str) -> dict[str, Any]:
    """``doc`` with the half of capabilities_restricted that ``rule`` does not test satisfied."""
    doc = copy.deepcopy(doc)
    parts = pod_spec_of(doc)
    assert parts is not None
    for list_name in CONTAINER_LISTS:
        for container in parts[1].get(list_name) or []:
            caps = container.setdefault("securityContext", {}).setdefault("capabilities", {})
            if rule == "adding-capabilities-strict":
                caps["drop"] = ["ALL"]
            else:
                caps.pop("add", None)
    return doc


def images(spec: Any) -> list[str]:
    return [c.get("image", "") for name in CONTAINER_LISTS for c in spec.get(name) or []]


def subrule_verdict(policy: dict[str, Any], doc: dict[str, Any]) -> str:
    [rule] = policy["spec"]["rules"]
    settings = rule["validate"]["podSecurity"]
    parts = pod_spec_of(doc)
    assert parts is not None
    found = {v.check for v in evaluate(*parts, settings["level"], settings["version"])}
    for exclusion in settings.get("exclude", []):
        patterns = exclusion.get("images")
        if patterns is None or all(
            any(fnmatch.fnmatchcase(image, p) for p in patterns) for image in images(parts[1])
        ):
            found -= CONTROLS[exclusion["controlName"]]
    return "fail" if found else "pass"


@pytest.mark.parametrize(("policy", "rule", "doc", "expected"), CASES)
def test_kyverno_resource(policy: dict[str, Any], rule: str, doc: dict[str, Any], expected: str) -> None:
    name = policy["metadata"]["name"]
    if name.startswith("podsecurity-subrule"):
        assert subrule_verdict(policy, doc) == expected
        return
    level, check = POLICIES[name]
    if name == "disallow-capabilities-strict":
        doc = neutralise(doc, rule)
    parts = pod_spec_of(doc)
    assert parts is not None, f"{doc['kind']} carries no pod"
    violations = [v for v in evaluate(*parts, level, "latest") if v.check == check]
    verdict = "fail" if violations else "pass"
    assert verdict == expected, f"{check} at {level}: {violations}"
