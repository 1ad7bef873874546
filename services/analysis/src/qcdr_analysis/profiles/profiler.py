"""Observe one event against its image's profile: learn it, or score what is new in it.

Before ``ready_at`` (event time) an event is learned. From then on, behaviour the profile does
not know is scored 0-100 by sensitivity (what kind of novelty it is) and rarity (how often the
image did new things while it learned) and raised as a finding at or above the threshold:

=========================== ==== ===================================================== ========
category                    base adjustments                                           severity
=========================== ==== ===================================================== ========
anomaly.unknown_process       85 +10 in a writable dir; +5 web-server parent;           high
                                 −20×novelty rate of execs                             (critical
                                                                                       in /tmp…)
anomaly.unusual_parent        60 +15 parent is a shell or a web server;                 medium
                                 −20×novelty rate of this process's parents
anomaly.unknown_destination   80 (75 when the port is known); −20×novelty rate          high /
                                                                                       medium
anomaly.sensitive_file        95 +5 written; −10×novelty rate of files                  critical
anomaly.unknown_file          40 +10 written; −20×novelty rate of files                 low
=========================== ==== ===================================================== ========

So by default an unusual parent is raised only when the parent is a shell or a web server, a new
destination on a known port is raised as medium, other new files are recorded but not raised.
The novelty rate is the Good-Turing missing mass (:meth:`Profile.missing_mass`): an image that
kept doing new things while learning makes its next new thing less surprising.

New behaviour is *not* added to the baseline; it is kept as "seen after learning", and the same
behaviour raises at most one finding per ``realert_after`` of event time. Drift
(:mod:`qcdr_analysis.profiles.drift`) is checked here too, learning or not.

:func:`observe` decides and builds every finding before it changes the profile, so an exception
leaves the profile as it was.
"""

from __future__ import annotations

from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding

from qcdr_analysis.profiles import drift
from qcdr_analysis.profiles.decisions import Decisions, ProfilerSettings
from qcdr_analysis.profiles.explain import Context
from qcdr_analysis.profiles.features import Features
from qcdr_analysis.profiles.paths import binary_dir_write
from qcdr_analysis.profiles.profile import Profile

__all__ = ["ProfilerSettings", "observe"]


def _suspects(
    profile: Profile, features: Features, keys: list[str], learning: bool, settings: ProfilerSettings
) -> bool:
    """Whether anything in the event may be new to the profile, or drift (cheap checks only)."""
    path = features.exec_path
    if settings.drift:
        if path and drift.package_manager(path, features.arguments) is not None:
            return True
        if features.write and any(binary_dir_write(f) for f in features.files):
            return True
    if learning:
        return False
    if path:
        process = profile.processes.get(path)
        parent = features.parent
        if process is None or (parent and process.count and parent not in process.parents):
            return True
    if features.digest and features.hashed_path:
        process = profile.processes.get(features.hashed_path)
        if process is None or (process.hashes and features.digest not in process.hashes):
            return True
    if keys and not any(key in profile.destinations for key in keys):
        return True
    files = profile.files
    for file in features.files:
        seen = files.get(file)
        if seen is None or (features.write and not seen.written):
            return True
    return False


def observe(
    profile: Profile,
    workload_key: str,
    event: SecurityEvent,
    features: Features,
    t: float,
    settings: ProfilerSettings,
    watched: float | None = None,
) -> tuple[list[Finding], bool]:
    """The findings this event raises, and whether the profile changed in a way that must be
    saved with the batch (the baseline grew, a finding was raised, the state changed). Count
    and last-seen updates alone return False: they are saved lazily. ``watched``: the newest
    event time the profiler has seen (of any image), which tells a backfill from the present."""
    learning = profile.first_seen is None or (
        profile.learning(t)
        # once ready, the baseline is frozen against events from before the profile was watched
        and (not profile.ready or t >= profile.first_seen - settings.learning_lateness)
    )
    keys = features.destination_keys() if features.dest_ip or features.domain else []
    # Most events are known behaviour: the checks below are dict lookups, and the decision
    # object is only built when something may be new.
    suspects = _suspects(profile, features, keys, learning, settings)
    decided = None
    if suspects:
        decided = Decisions(
            Context(event, profile, workload_key, settings.emit_threshold, settings.top_n), t, settings
        )
        if not learning:
            if features.exec_path:
                decided.process(features, features.exec_path)
            if keys:
                decided.destination(features, keys)
            for path in features.files:
                decided.file(features, path)
        if settings.drift:
            drift.check(decided, features, learning)
    # every finding is built: from here on nothing raises, the profile changes in one go
    changed = _apply(profile, workload_key, features, keys, t, learning, settings, watched)
    findings: list[Finding] = []
    if decided is None:
        return findings, changed
    for note in decided.notes.values():
        entry = profile.novel_entry(note.category, note.value, t)
        if entry.count == 1:
            changed = True
        if note.finding is not None:
            entry.alerted = t
            changed = True
            findings.append(note.finding)
    if len(findings) > 1:  # one event, several findings (a new binary is drift and an anomaly)
        ids = [f.id for f in findings]
        for finding in findings:
            finding.attributes["related_findings"] = [i for i in ids if i != finding.id]
    return findings, changed


def _apply(
    profile: Profile,
    workload_key: str,
    features: Features,
    keys: list[str],
    t: float,
    learning: bool,
    settings: ProfilerSettings,
    watched: float | None,
) -> bool:
    changed = False
    lateness = settings.learning_lateness
    if profile.first_seen is None or (
        not profile.ready and t < profile.first_seen and profile.first_seen - t <= lateness
    ):
        # the first event, or an earlier one arriving a little late while learning: the window
        # starts there. One much older (a backfill, a node flushing days of buffer) does not move
        # it: that would end learning at once. Nor does a new image's first event when it is
        # that old: its window starts at what the profiler watches now.
        start = t
        if profile.first_seen is None and watched is not None and t < watched - lateness:
            start = watched
        last_seen = profile.last_seen
        inherited = profile.inherited is not None
        profile.start(start, settings.rollout_learning_period if inherited else settings.learning_period)
        profile.last_seen = t if last_seen is None else max(t, last_seen)
        changed = True
    elif profile.last_seen is None or t > profile.last_seen:
        profile.last_seen = t
    profile.events += 1
    if profile.see_workload(workload_key, t):
        changed = True
    path, parent = features.exec_path, features.parent
    if learning:
        if path:
            changed |= profile.learn_exec(path, parent, t)
        if features.hashed_path and features.digest:
            changed |= profile.learn_hash(features.hashed_path, features.digest, t)
        if keys:
            changed |= profile.learn_destination(keys, features.dest_port, t)
        for file in features.files:
            changed |= profile.learn_file(file, features.write, t)
        return changed
    if not profile.ready:
        profile.ready = True
        changed = True
    # after learning, only what is known is counted (new behaviour went to ``novel``)
    if path:
        process = profile.processes.get(path)
        if process is not None:
            profile.learn_exec(path, parent if parent in process.parents else None, t)
    if features.hashed_path and features.digest:
        process = profile.processes.get(features.hashed_path)
        if process is not None and features.digest in process.hashes:
            profile.learn_hash(features.hashed_path, features.digest, t)
    if keys:
        known = [key for key in keys if key in profile.destinations]
        port = features.dest_port
        if known:
            profile.learn_destination(known, port if port in profile.ports else None, t)
    for file in features.files:
        seen = profile.files.get(file)
        if seen is not None:
            profile.learn_file(file, features.write and seen.written, t)
    return changed
