"""What is new in one event, how it scores, and the finding it raises (see
:mod:`qcdr_analysis.profiles.profiler` for the scoring table). Only built when an event may hold
something new: the common case (known behaviour) never gets here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.contracts.findings.v1 import Finding

from qcdr_analysis.profiles.explain import Context, Score, baseline, build
from qcdr_analysis.profiles.features import Features
from qcdr_analysis.profiles.paths import DEFAULT_SENSITIVE, WRITABLE_DIRS, SensitiveMatcher, under
from qcdr_analysis.profiles.profile import DESTINATIONS, FILES, PROCESSES, Limits, Profile

UNKNOWN_PROCESS = "anomaly.unknown_process"
UNUSUAL_PARENT = "anomaly.unusual_parent"
UNKNOWN_DESTINATION = "anomaly.unknown_destination"
SENSITIVE_FILE = "anomaly.sensitive_file"
UNKNOWN_FILE = "anomaly.unknown_file"

SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "busybox"})
WEB_SERVERS = frozenset(
    {
        "nginx",
        "httpd",
        "apache2",
        "lighttpd",
        "caddy",
        "php-fpm",
        "uwsgi",
        "gunicorn",
        "unicorn",
        "puma",
        "tomcat",
        "catalina.sh",
        "jetty",
        "envoy",
        "haproxy",
        "traefik",
    }
)


@dataclass(frozen=True, slots=True)
class ProfilerSettings:
    """What the profiler runs with (plain values: built once from the detector's Config)."""

    learning_period: float = 48 * 3600.0
    # a profile that starts from the baseline of the image it replaced learns this long
    rollout_learning_period: float = 3600.0
    emit_threshold: int = 70
    realert_after: float = 24 * 3600.0
    limits: Limits = field(default_factory=Limits)
    drift: bool = True
    sensitive: SensitiveMatcher = field(default_factory=lambda: SensitiveMatcher(DEFAULT_SENSITIVE))
    top_n: int = 5
    # how far before a profile's first event a late event may move its learning window back (node
    # clocks and buffers); an event older than that (a backfill, a node flushing days of buffer)
    # neither moves the window nor, once the profile is ready, teaches the baseline
    learning_lateness: float = 3600.0


@dataclass(slots=True)
class _Note:
    """Behaviour seen after learning (or drift), and its finding when one is raised now."""

    category: str
    value: str
    finding: Finding | None


def name_of(path: str) -> str:
    return path.rpartition("/")[2]


def _parent_kind(parent: str | None) -> str | None:
    if not parent:
        return None
    name = name_of(parent)
    if name in SHELLS:
        return "shell"
    if name in WEB_SERVERS or name.startswith("php-fpm"):
        return "web server"
    return None


class Decisions:
    """One event's decisions: what is new, whether a finding is due, the findings built."""

    def __init__(self, ctx: Context, t: float, settings: ProfilerSettings) -> None:
        self.ctx = ctx
        self.t = t
        self.settings = settings
        self.notes: dict[tuple[str, str], _Note] = {}

    def due(self, category: str, value: str) -> bool:
        if (category, value) in self.notes:
            return False
        entry = self.ctx.profile.novel.get(f"{category}\x1f{value}")
        if entry is None or entry.alerted is None:
            return True
        return self.t - entry.alerted >= self.settings.realert_after

    def note(self, category: str, value: str, finding: Finding | None) -> None:
        self.notes.setdefault((category, value), _Note(category, value, finding))

    def rarity(self, score: Score, kind: str, noun: str, weight: int) -> None:
        rate = self.ctx.profile.missing_mass(kind)
        score.adjust(f"novelty rate of {noun} while learning {rate:.1%}", -round(weight * rate))

    # ------------------------------------------------------------------ after learning

    def process(self, features: Features, path: str) -> None:
        profile, parent = self.ctx.profile, features.parent
        entry = profile.processes.get(path)
        if entry is None:
            if not self.due(UNKNOWN_PROCESS, path):
                return self.note(UNKNOWN_PROCESS, path, None)
            score = Score(85)
            writable = under(path, WRITABLE_DIRS)
            if writable:
                score.adjust(f"runs from the writable directory {writable}", 10)
            kind = _parent_kind(parent)
            techniques = ["T1059"]
            if kind == "web server":
                score.adjust(f"started by a web server ({parent})", 5)
                techniques.append("T1505.003")  # server software component: web shell
            self.rarity(score, PROCESSES, "processes", 20)
            self.anomaly(
                UNKNOWN_PROCESS,
                path,
                score,
                Severity.CRITICAL if writable else Severity.HIGH,
                techniques,
                title=f"New process {path} in {self.ctx.workload_key}",
                new={"kind": "process", "path": path, "parent": parent, "arguments": features.arguments},
                compared=baseline("processes", profile.processes, self.settings.top_n, "execs"),
                why=f"{path} was executed (parent {parent or 'unknown'}) and never was while the "
                "image's profile learned",
            )
            return None
        if not parent or parent in entry.parents or entry.count == 0:
            return None  # known parent, or a path whose parents were never learned (hash only)
        if len(entry.parents) >= self.settings.limits.parents_per_process:
            return None  # parents overflowed while learning: nothing to compare with
        value = f"{parent} > {path}"
        if not self.due(UNUSUAL_PARENT, value):
            return self.note(UNUSUAL_PARENT, value, None)
        score = Score(60)
        kind = _parent_kind(parent)
        techniques = []
        if kind is not None:
            score.adjust(f"the parent is a {kind}", 15)
            techniques.append("T1059.004" if kind == "shell" else "T1505.003")
        once = sum(1 for count in entry.parents.values() if count == 1)
        total = sum(entry.parents.values())
        rate = once / total if total else 1.0
        score.adjust(f"novelty rate of {path}'s parents while learning {rate:.1%}", -round(20 * rate))
        self.anomaly(
            UNUSUAL_PARENT,
            value,
            score,
            Severity.MEDIUM,
            techniques,
            title=f"{path} started by unusual parent {parent}",
            new={"kind": "parent", "path": path, "parent": parent},
            compared=baseline(f"parents of {path}", _Counts(entry.parents), self.settings.top_n, "times"),
            why=f"{path} is known, but was never started by {parent} while the profile learned",
        )
        return None

    def destination(self, features: Features, keys: list[str]) -> None:
        profile = self.ctx.profile
        if any(key in profile.destinations for key in keys):
            return None
        value = keys[0]
        if not self.due(UNKNOWN_DESTINATION, value):
            return self.note(UNKNOWN_DESTINATION, value, None)
        port = features.dest_port
        known_port = port is not None and port in profile.ports
        # a new peer on a port the image already uses is still new: exfiltration and C2 ride 443
        score = Score(75 if known_port else 80)
        self.rarity(score, DESTINATIONS, "destinations", 20)
        ports = ", ".join(str(p) for p, _ in top_ports(profile, self.settings.top_n)) or "none"
        compared = baseline("destinations", profile.destinations, self.settings.top_n, "connections")
        compared[0]["ports"] = sorted(profile.ports)[:100]
        compared = (compared[0], f"{compared[1]}; known ports: {ports}")
        self.anomaly(
            UNKNOWN_DESTINATION,
            value,
            score,
            Severity.MEDIUM if known_port else Severity.HIGH,
            [] if known_port else ["T1571"],  # non-standard port (for this image)
            title=f"New destination {' / '.join(keys)} from {self.ctx.workload_key}",
            new={
                "kind": "destination",
                "destinations": keys,
                "port": port,
                "port_known": known_port,
                "process": features.binary,
            },
            compared=compared,
            why=f"{features.binary or 'a process'} connected to {' / '.join(keys)}, never contacted "
            f"while the profile learned; port {port} is {'known' if known_port else 'new too'}",
        )
        return None

    def file(self, features: Features, path: str) -> None:
        profile = self.ctx.profile
        entry = profile.files.get(path)
        write = features.write
        if entry is not None and (entry.written or not write):
            return None
        access = "written" if write else "read"
        sensitive = self.settings.sensitive.match(path)
        category = SENSITIVE_FILE if sensitive is not None else UNKNOWN_FILE
        value = f"write {path}" if write else path
        if not self.due(category, value):
            return self.note(category, value, None)
        if sensitive is not None:
            score = Score(95)
            if write:
                score.adjust("written, not only read", 5)
            self.rarity(score, FILES, "files", 10)
            severity, techniques = Severity.CRITICAL, [sensitive.technique]
            why = f"the sensitive path {path} (pattern {sensitive.pattern}) was {access}"
        else:
            score = Score(40)
            if write:
                score.adjust("written, not only read", 10)
            self.rarity(score, FILES, "files", 20)
            severity, techniques = Severity.LOW, []
            why = f"{path} was {access}"
        if entry is not None:
            why += ", and was only ever read while the profile learned"
        else:
            why += ", never accessed while the profile learned"
        self.anomaly(
            category,
            value,
            score,
            severity,
            techniques,
            title=f"{'Sensitive file' if sensitive else 'New file'} {path} {access} by "
            f"{features.binary or 'a process'}",
            new={
                "kind": "file",
                "path": path,
                "write": write,
                "process": features.binary,
                "pattern": sensitive.pattern if sensitive else None,
            },
            compared=baseline("files", profile.files, self.settings.top_n, "accesses"),
            why=why[0].upper() + why[1:],
        )
        return None

    def anomaly(
        self,
        category: str,
        value: str,
        score: Score,
        severity: Severity,
        techniques: list[str],
        *,
        title: str,
        new: dict[str, Any],
        compared: tuple[dict[str, Any], str],
        why: str,
    ) -> None:
        finding = None
        if score.value >= self.settings.emit_threshold:
            finding = build(
                self.ctx,
                drift=False,
                category=category,
                value=value,
                severity=severity,
                techniques=techniques,
                score=score,
                title=title,
                new=new,
                compared=compared,
                why=why,
            )
        self.note(category, value, finding)

    # ------------------------------------------------------------------ drift


class _Counts(dict[str, "_Count"]):
    """A {value: count} dict seen through the ``.count`` interface :func:`baseline` ranks by."""

    def __init__(self, counts: dict[str, int]) -> None:
        super().__init__((key, _Count(value)) for key, value in counts.items())


@dataclass(frozen=True, slots=True)
class _Count:
    count: int


def top_ports(profile: Profile, n: int) -> list[tuple[int, int]]:
    ranked = sorted(profile.ports.items(), key=lambda item: (-item[1].count, item[0]))
    return [(port, seen.count) for port, seen in ranked[:n]]
