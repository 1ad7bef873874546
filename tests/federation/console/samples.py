"""Backend answers shaped like the real APIs' (finding, chain, action, policy, decision)."""

from __future__ import annotations

from typing import Any

NOW = "2026-12-05T01:00:00+00:00"


def finding(
    n: int, *, severity: str = "high", namespace: str = "shop", cluster: str = "eu-1"
) -> dict[str, Any]:
    return {
        "id": f"f-{n}",
        "kind": "attack_technique",
        "detector": "rules",
        "category": "execution.shell",
        "severity": severity,
        "techniques": ["T1059.004"],
        "title": f"Shell in container {n}",
        "explanation": f"a shell was spawned <b>{n}</b>",
        "event_time": NOW,
        "evidence_event_ids": [f"ev-{n}"],
        "workload": {"cluster": cluster, "namespace": namespace, "pod": f"web-{n}", "image": "nginx:1.27"},
        "process": None,
        "network": None,
        "source": "tetragon",
        "attributes": {},
        "created_at": NOW,
    }


def chain(chain_id: str = "chain-1") -> dict[str, Any]:
    shell = {"id": "T1059.004", "name": "Unix Shell", "tactics": ["execution"]}
    creds = {"id": "T1552.007", "name": "Container API", "tactics": ["credential-access"]}
    return {
        "id": chain_id,
        "pattern": "shell_then_token",
        "title": "Shell then service-account token read",
        "severity": "critical",
        "confidence": 0.87,
        "techniques": [shell, creds],
        "steps": [
            {
                "name": "shell",
                "event_id": "ev-1",
                "event_time": NOW,
                "techniques": [shell],
                "finding_ids": ["f-1"],
                "cluster": "eu-1",
            },
            {
                "name": "token",
                "event_id": "ev-2",
                "event_time": NOW,
                "techniques": [creds],
                "finding_ids": [],
                "cluster": "us-2",
                "workload": {"cluster": "us-2", "namespace": "shop", "pod": "web-7", "container": "app"},
            },
        ],
        "join": {"pod": "web-1"},
        "clusters": ["eu-1", "us-2"],
        "event_time": NOW,
        "created_at": NOW,
        "explanation": "two steps on one pod",
    }


def action(action_id: int, state: str = "pending", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": action_id,
        "run_id": f"api:{action_id}",
        "step": 0,
        "playbook": None,
        "action": "isolate_pod",
        "scope": "pod",
        "state": state,
        "dry_run": False,
        "target": {"namespace": "shop", "pod": f"web-{action_id}"},
        "parameters": {},
        "finding_id": "f-1",
        "reason": "shell in container",
        "requested_by": "playbook",
        "require_approval": True,
        "decided_by": None,
        "decided_at": None,
        "decision_note": None,
        "node": None,
        "containment": True,
        "lease_seconds": 3600,
        "lease_expires_at": None,
        "outcome": None,
        "message": None,
        "details": None,
        "undo": None,
        "created_at": NOW,
        "updated_at": NOW,
        "started_at": None,
        "finished_at": None,
        "released_at": None,
    }
    base.update(extra)
    return base


def policy(policy_id: int, status: str = "proposed") -> dict[str, Any]:
    return {
        "id": policy_id,
        "api_version": "cilium.io/v1alpha1",
        "kind": "TracingPolicyNamespaced",
        "namespace": "shop",
        "name": f"block-shell-{policy_id}",
        "family": "container-escape",
        "status": status,
        "status_reason": None,
        "current_version": 2,
        "applied_version": None,
        "created_at": NOW,
        "updated_at": NOW,
        "federation": None,
    }


def version(policy_id: int, number: int, yaml: str) -> dict[str, Any]:
    return {
        "version": number,
        "content_hash": f"{number:064d}",
        "finding_count": number,
        "filename": f"p{policy_id}-v{number}.yaml",
        "created_at": NOW,
        "policy_id": policy_id,
        "body": {},
        "yaml": yaml,
    }


def decision(
    n: int, check: str = "privileged", namespace: str = "shop", image: str = "evil:latest"
) -> dict[str, Any]:
    return {
        "id": n,
        "time": NOW,
        "uid": f"u-{n}",
        "event_id": f"adm-{n}",
        "operation": "CREATE",
        "kind": "Pod",
        "namespace": namespace,
        "name": f"pod-{n}",
        "user": "alice",
        "allowed": False,
        "evaluated": True,
        "skipped": None,
        "violations": [
            {"source": "pss", "check": check, "message": f"{check} is not allowed", "mode": "enforce"}
        ],
        "images": [image],
    }
