"""The checker the dispatcher runs on every generated document: semantic validation for the
target versions, then the blast-radius lint (Tetragon policies only)."""

from __future__ import annotations

from typing import Any

from qcdr_response.policies.config import GenerationConfig
from qcdr_response.policies.generate import Checker, CheckResult
from qcdr_response.policies.lint import LintConfig, lint_policy
from qcdr_response.policies.targets import CiliumTarget, TetragonTarget
from qcdr_response.policies.validator_cilium import validate_cilium_policy
from qcdr_response.policies.validator_tetragon import validate_tracing_policy

TRACING_KINDS = frozenset({"TracingPolicy", "TracingPolicyNamespaced"})


def default_checker(config: GenerationConfig, lint: LintConfig | None = None) -> Checker:
    tetragon = TetragonTarget(version=config.tetragon_version, kernel=config.kernel_version)
    cilium = CiliumTarget(version=config.cilium_version)
    lint_config = lint or LintConfig()

    def check(body: dict[str, Any]) -> CheckResult:
        if body.get("kind") in TRACING_KINDS:
            issues = validate_tracing_policy(body, tetragon)
            lint_issues = [f"{i.code} {i.path}: {i.reason}" for i in lint_policy(body, lint_config)]
        else:
            issues = validate_cilium_policy(body, cilium)
            lint_issues = []
        errors = [f"{i.code} {i.path}: {i.message}" for i in issues if i.severity == "error"]
        return CheckResult(errors=errors, lint=lint_issues)

    return check
