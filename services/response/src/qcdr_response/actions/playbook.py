"""Playbooks: YAML that maps findings to ordered actions.

A file holds ``playbooks:``, a list of::

    - name: contain-cryptominer          # DNS-1123 label; unique across all files
      description: ...
      match:                             # every key given must match (AND); lists are any-of
        kinds: [chain, attack_technique]
        categories: [chain.cryptominer]  # exact, or a prefix ending in '*'
        min_severity: high
        techniques: [T1496]              # a sub-technique matches its parent (T1059.004 ~ T1059)
        chain_patterns: [cryptominer]
        namespaces: [payments, "team-*"]
        exclude_namespaces: [sandbox]
        labels: {app: api}               # the finding's pod labels (attributes.labels), all must match
      cooldown: 15m                      # at most one run per workload in this long
      max_age: 1h                        # no run for a finding whose event time is older
      actions:                           # run in order; a step starts when the one before finished
        - action: capture_forensics
          params: {paths: [/tmp]}
        - action: isolate_pod
          require_approval: true         # stays 'pending' until approved through the API
          lease: 2h                      # containment: undone automatically when the lease ends
        - action: kill_process
          continue_on_error: true        # later steps run even if this one fails
          dry_run: true                  # this step only checks, even when the service enforces

Every finding is matched against every playbook; each match is one run.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from qcdr_common.config_files import ConfigFileError, load_yaml_file
from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.contracts.findings.v1 import Finding, FindingKind

from qcdr_response.actions.base import InvalidRequestError
from qcdr_response.actions.registry import load_actions

BUILTIN_DIR = Path(__file__).parent / "playbooks"
_SEVERITY_ORDER = {s: i for i, s in enumerate(("info", "low", "medium", "high", "critical"))}
_DURATION = re.compile(r"^([0-9]+)([smhd]?)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class PlaybookError(ValueError):
    """A playbook file that cannot be used; the message names the file and the problem."""


def parse_duration(value: str | int) -> int:
    """``90``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"`` -> seconds."""
    if isinstance(value, int):
        seconds = value
    else:
        m = _DURATION.fullmatch(value.strip())
        if m is None:
            raise ValueError(f"{value!r} is not a duration (e.g. 90s, 15m, 2h, 1d)")
        seconds = int(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def _duration_text(value: object) -> object:
    """Text (90s, 15m, 2h, 1d) becomes seconds; a number is left to the int validation."""
    if isinstance(value, bool):  # the int validation would take true for 1 s
        raise ValueError("a duration is seconds or 90s / 15m / 2h / 1d, not true or false")
    return parse_duration(value) if isinstance(value, str) else value


# Seconds, given as a number or as text; positive however it was given (a JSON -60 or a YAML -60.0
# skipped the check that only text went through).
Duration = Annotated[int, BeforeValidator(_duration_text), AfterValidator(parse_duration)]


class Match(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: tuple[FindingKind, ...] = ()
    categories: tuple[str, ...] = ()
    detectors: tuple[str, ...] = ()
    min_severity: Severity | None = None
    techniques: tuple[str, ...] = ()
    chain_patterns: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = ()
    labels: dict[str, str] = Field(default_factory=dict)

    def matches(self, f: Finding) -> bool:
        if self.kinds and f.kind not in self.kinds:
            return False
        if self.categories and not any(_text_match(p, f.category) for p in self.categories):
            return False
        if self.detectors and f.detector not in self.detectors:
            return False
        if self.min_severity is not None and _SEVERITY_ORDER.get(f.severity.value, 0) < _SEVERITY_ORDER.get(
            self.min_severity.value, 0
        ):
            return False
        if self.techniques and not _techniques_match(self.techniques, f.techniques):
            return False
        if self.chain_patterns and (
            f.kind != FindingKind.CHAIN or f.attributes.get("pattern") not in self.chain_patterns
        ):
            return False
        ns = f.workload.namespace or ""
        if self.namespaces and not any(fnmatch.fnmatchcase(ns, p) for p in self.namespaces):
            return False
        if any(fnmatch.fnmatchcase(ns, p) for p in self.exclude_namespaces):
            return False
        if self.labels:
            labels = f.attributes.get("labels")
            if not isinstance(labels, dict) or any(labels.get(k) != v for k, v in self.labels.items()):
                return False
        return True


def _text_match(pattern: str, value: str) -> bool:
    return value.startswith(pattern[:-1]) if pattern.endswith("*") else value == pattern


def _techniques_match(wanted: Iterable[str], have: Iterable[str]) -> bool:
    have_set = set(have) | {t.split(".")[0] for t in have}
    return any(w in have_set for w in wanted)


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: str = Field(pattern=r"^[a-z][a-z0-9_]{1,48}$")
    params: dict[str, Any] = Field(default_factory=dict)
    require_approval: bool = False
    lease: Duration | None = Field(default=None, description="Seconds (or 90s/15m/2h/1d) for containment.")
    continue_on_error: bool = False
    dry_run: bool = False


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    description: str = ""
    enabled: bool = True
    match: Match
    actions: tuple[Step, ...] = Field(min_length=1, max_length=20)
    cooldown: Duration | None = Field(
        default=None,
        description="At most one run per workload in this long (seconds or 90s/15m/2h/1d): a burst "
        "of findings about one workload starts one run, not hundreds.",
    )
    max_age: Duration | None = Field(
        default=None,
        description="Start no run for a finding whose event time is older than this (seconds or "
        "90s/15m/2h/1d): a backfill (a spoke back after a day, the Qualys poller's first look-back) "
        "is history, and containing a pod now for what it did yesterday is not what was asked.",
    )


class PlaybookFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    playbooks: list[Playbook]


def load_file(path: Path) -> list[Playbook]:
    try:
        return PlaybookFile.model_validate(load_yaml_file(path)).playbooks
    except ConfigFileError as exc:
        raise PlaybookError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PlaybookError(f"{path}: {where}: {first['msg']}") from None


def load_playbooks(
    user_dir: Path | None, *, builtin: bool = True, known_actions: Iterable[str] = ()
) -> list[Playbook]:
    """The shipped playbooks (unless ``builtin`` is off) and ``*.yaml`` from ``user_dir``; a user
    playbook with a shipped one's name replaces it. Unknown action names and parameters the action
    refuses fail here, at start-up, not when a finding arrives (a parameter the action row cannot
    store failed every findings batch the playbook matched)."""
    found: dict[str, tuple[Path, Playbook]] = {}
    dirs = ([BUILTIN_DIR] if builtin else []) + ([user_dir] if user_dir is not None else [])
    for d in dirs:
        if not d.is_dir():
            raise PlaybookError(f"{d}: not a directory")
        seen_here: set[str] = set()
        for path in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
            for pb in load_file(path):
                if pb.name in seen_here:
                    raise PlaybookError(f"{path}: playbook {pb.name!r} is defined twice in {d}")
                seen_here.add(pb.name)
                found[pb.name] = (path, pb)
    known = set(known_actions)
    if known:
        actions = load_actions()
        for path, pb in found.values():
            for i, step in enumerate(pb.actions, 1):
                if step.action not in known:
                    raise PlaybookError(
                        f"{path}: playbook {pb.name!r} step {i}: unknown action {step.action!r} "
                        f"(known: {', '.join(sorted(known))})"
                    )
                if step.action in actions:
                    try:
                        actions.get(step.action).parse_params(step.params)
                    except InvalidRequestError as exc:
                        raise PlaybookError(f"{path}: playbook {pb.name!r} step {i}: {exc.reason}") from None
    return [pb for _, pb in found.values() if pb.enabled]


def matching(playbooks: Iterable[Playbook], finding: Finding) -> list[Playbook]:
    return [pb for pb in playbooks if pb.match.matches(finding)]
