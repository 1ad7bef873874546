"""One behavioural profile: what the containers of one image did while it learned.

A profile is keyed by image digest (:func:`qcdr_analysis.profiles.identity.profile_key`) and
shared by every workload running the image. Time is *event* time throughout, kept as float epoch
seconds (compact in memory and in JSON; the API turns them back into datetimes). An event whose
time falls before ``ready_at`` is learned, whatever order it arrives in; one at or after it is
compared with what was learned.

Every collection is capped (:class:`Limits`): what does not fit is counted in ``overflow`` and
not recorded, so one noisy image cannot grow a worker's memory without bound. Behaviour first seen
after learning is kept apart in ``novel`` (it is *not* added to the baseline): it remembers when it
last raised a finding, for re-alert suppression.

The hot path (``learn_*``, ``touch_*``) is plain attribute and dict work on ``__slots__`` objects;
JSON (``to_json``/``from_json``) is only for Postgres (JSONB), never pickle.

A profile taken from another cluster's shared baseline (:mod:`qcdr_analysis.profiles.shared`)
carries ``shared`` (where it came from); local profiles have none, and their JSON has no such key.
A profile that started from the baseline of the image it replaced in a rollout
(:meth:`Profile.successor`, :mod:`qcdr_analysis.profiles.rollout`) carries ``inherited``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SCHEMA_VERSION = 1
LEARNING = "learning"
READY = "ready"

# event times a profile can hold: what a datetime can be (a day of slack either side), so the API
# and the repository can always turn them back into one
MIN_TIME = datetime(1, 1, 2, tzinfo=UTC).timestamp()
MAX_TIME = datetime(9999, 12, 30, tzinfo=UTC).timestamp()

# what the missing-mass estimate (rarity) is kept for
PROCESSES = "processes"
DESTINATIONS = "destinations"
FILES = "files"


@dataclass(frozen=True, slots=True)
class Limits:
    processes: int = 1024
    parents_per_process: int = 32
    hashes_per_process: int = 8
    destinations: int = 4096
    ports: int = 1024
    files: int = 4096
    workloads: int = 256
    novel: int = 1024


class Seen:
    """How often something was seen, and first/last event time."""

    __slots__ = ("count", "first", "last")

    def __init__(self, t: float, count: int = 1) -> None:
        self.count = count
        self.first = t
        self.last = t

    def see(self, t: float) -> None:
        self.count += 1
        if t > self.last:
            self.last = t
        elif t < self.first:
            self.first = t

    def _dump(self) -> list[Any]:
        return [self.count, self.first, self.last]


class ProcessSeen(Seen):
    """An executable path: execs, the parents it was started by, the hashes it had."""

    __slots__ = ("hashes", "parents")

    def __init__(self, t: float, count: int = 1) -> None:
        super().__init__(t, count)
        self.parents: dict[str, int] = {}
        self.hashes: dict[str, int] = {}


class FileSeen(Seen):
    __slots__ = ("written",)

    def __init__(self, t: float, written: bool) -> None:
        super().__init__(t)
        self.written = written


class Novel:
    """Behaviour first seen after learning: counted, and when it last raised a finding."""

    __slots__ = ("alerted", "category", "count", "first", "last", "value")

    def __init__(self, category: str, value: str, t: float) -> None:
        self.category = category
        self.value = value
        self.count = 0
        self.first = t
        self.last = t
        self.alerted: float | None = None


class Profile:
    __slots__ = (
        "destinations",
        "events",
        "files",
        "first_seen",
        "generation",
        "inherited",
        "key",
        "last_seen",
        "limits",
        "novel",
        "observations",
        "overflow",
        "ports",
        "processes",
        "ready",
        "ready_at",
        "shared",
        "singletons",
        "workloads",
    )

    def __init__(self, key: str, limits: Limits, generation: int = 0) -> None:
        self.key = key
        self.limits = limits
        # 0: not in Postgres yet; otherwise the row's generation this copy was loaded from/wrote
        self.generation = generation
        self.first_seen: float | None = None  # None: learning starts with the next event
        self.ready_at = float("inf")
        self.last_seen: float | None = None
        self.ready = False  # an event at or after ready_at was seen (what the API and gauges show)
        self.events = 0
        self.processes: dict[str, ProcessSeen] = {}
        self.destinations: dict[str, Seen] = {}  # "ip:port", "[v6]:port", "domain:port"
        self.ports: dict[int, Seen] = {}
        self.files: dict[str, FileSeen] = {}
        self.workloads: dict[str, float] = {}  # workload key -> last event time
        self.novel: dict[str, Novel] = {}  # "category\x1fvalue" -> seen after learning
        self.overflow: dict[str, int] = {}
        # rarity: observations and behaviours seen exactly once, per kind (derived, not stored)
        self.observations = {PROCESSES: 0, DESTINATIONS: 0, FILES: 0}
        self.singletons = {PROCESSES: 0, DESTINATIONS: 0, FILES: 0}
        # a baseline shared by another cluster: {"from": cluster, "generation", "ready_at",
        # "imported_at"}; None for what this analysis learned itself
        self.shared: dict[str, Any] | None = None
        # a baseline taken over from the image this one replaced in a workload (a rollout):
        # {"from": profile key, "generation", "workload", "taken_at"}; None otherwise
        self.inherited: dict[str, Any] | None = None

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> str:
        return READY if self.ready else LEARNING

    @property
    def learning_period(self) -> float | None:
        return None if self.first_seen is None else self.ready_at - self.first_seen

    def start(self, t: float, learning_period: float) -> None:
        self.first_seen = t
        self.ready_at = t + learning_period
        self.last_seen = t

    def learning(self, t: float) -> bool:
        return t < self.ready_at

    def missing_mass(self, kind: str) -> float:
        """Good-Turing estimate of how likely the next observation is something never seen:
        behaviours seen once / observations (what overflowed counts as unseen). Near 0 for an
        image that repeats itself, high for one that keeps doing new things."""
        lost = self.overflow.get(kind, 0)
        total = self.observations[kind] + lost
        return (self.singletons[kind] + lost) / total if total else 1.0

    def _overflow(self, what: str) -> None:
        self.overflow[what] = self.overflow.get(what, 0) + 1

    def _counted(self, kind: str, entry: Seen) -> None:
        # call after ``entry.count`` went up by one
        self.observations[kind] += 1
        if entry.count == 1:
            self.singletons[kind] += 1
        elif entry.count == 2:
            self.singletons[kind] -= 1

    # ------------------------------------------------------------------ recording (learning)
    # Each returns True when the baseline gained something (the profile must be saved with the batch).

    def learn_exec(self, path: str, parent: str | None, t: float) -> bool:
        entry = self.processes.get(path)
        changed = False
        if entry is None:
            if len(self.processes) >= self.limits.processes:
                self._overflow(PROCESSES)
                return False
            entry = self.processes[path] = ProcessSeen(t)
            changed = True
        else:
            entry.see(t)
        self._counted(PROCESSES, entry)
        if parent:
            parents = entry.parents
            if parent in parents:
                parents[parent] += 1
            elif len(parents) < self.limits.parents_per_process:
                parents[parent] = 1
                changed = True
            else:
                self._overflow("parents")
        return changed

    def learn_hash(self, path: str, digest: str, t: float) -> bool:
        entry = self.processes.get(path)
        changed = False
        if entry is None:
            if len(self.processes) >= self.limits.processes:
                self._overflow(PROCESSES)
                return False
            # an exec seen through its hash only (an LSM bprm hook): known, with no exec counted
            entry = self.processes[path] = ProcessSeen(t, count=0)
            changed = True
        hashes = entry.hashes
        if digest in hashes:
            hashes[digest] += 1
        elif len(hashes) < self.limits.hashes_per_process:
            hashes[digest] = 1
            changed = True
        else:
            self._overflow("hashes")
        return changed

    def learn_destination(self, keys: Iterable[str], port: int | None, t: float) -> bool:
        changed = False
        for key in keys:
            entry = self.destinations.get(key)
            if entry is not None:
                entry.see(t)
            elif len(self.destinations) < self.limits.destinations:
                entry = self.destinations[key] = Seen(t)
                changed = True
            else:
                self._overflow(DESTINATIONS)
                continue
            self._counted(DESTINATIONS, entry)
        if port is not None:
            seen = self.ports.get(port)
            if seen is not None:
                seen.see(t)
            elif len(self.ports) < self.limits.ports:
                self.ports[port] = Seen(t)
                changed = True
            else:
                self._overflow("ports")
        return changed

    def learn_file(self, path: str, written: bool, t: float) -> bool:
        entry = self.files.get(path)
        if entry is None:
            if len(self.files) >= self.limits.files:
                self._overflow(FILES)
                return False
            entry = self.files[path] = FileSeen(t, written)
            self._counted(FILES, entry)
            return True
        entry.see(t)
        self._counted(FILES, entry)
        if written and not entry.written:
            entry.written = True
            return True
        return False

    def see_workload(self, workload: str, t: float) -> bool:
        last = self.workloads.get(workload)
        if last is not None:
            if t > last:
                self.workloads[workload] = t
            return False
        if len(self.workloads) >= self.limits.workloads:
            self._overflow("workloads")
            return False
        self.workloads[workload] = t
        return True

    # ------------------------------------------------------------------ after learning

    def novel_entry(self, category: str, value: str, t: float) -> Novel:
        """The "seen after learning" record of (category, value), created (and counted) as needed.

        When full, the oldest record is dropped (insertion order): memory stays bounded, and the
        worst that happens is one more finding for behaviour that had gone quiet."""
        key = f"{category}\x1f{value}"
        entry = self.novel.get(key)
        if entry is None:
            if len(self.novel) >= self.limits.novel:
                del self.novel[next(iter(self.novel))]
                self._overflow("novel")
            entry = self.novel[key] = Novel(category, value, t)
        entry.count += 1
        if t > entry.last:
            entry.last = t
        elif t < entry.first:
            entry.first = t
        return entry

    def successor(self, key: str, workload_key: str, taken_at: float) -> Profile:
        """A new profile for ``key`` that starts from this one's baseline (what processes,
        destinations, ports and files the image it replaced was known for), still to learn
        (``first_seen`` None). Per-image facts stay here: executable hashes (a new build has new
        ones), what was seen after learning, the workloads, and the events counted."""
        data = self.to_json()
        data.update(key=key, first_seen=None, ready_at=None, last_seen=None, ready=False, events=0)
        data.update(workloads={}, novel=[])
        data.pop("shared", None)
        data.pop("inherited", None)
        profile = Profile.from_json(data, self.limits, 0)
        for process in profile.processes.values():
            process.hashes = {}
        profile.inherited = {
            "from": self.key,
            "generation": self.generation,
            "workload": workload_key,
            "taken_at": taken_at,
        }
        return profile

    def reset(self) -> None:
        """Back to learning from the next event, behaviour cleared; workloads using it are kept."""
        workloads = self.workloads
        fresh = Profile(self.key, self.limits, self.generation)
        for name in self.__slots__:
            setattr(self, name, getattr(fresh, name))
        self.workloads = workloads

    # ------------------------------------------------------------------ JSON

    def summary(self) -> dict[str, Any]:
        """Counts for lists (stored beside the JSON so a list never reads whole profiles), and
        ``shared_from`` (the source cluster) for a shared baseline."""
        counts: dict[str, Any] = {
            "events": self.events,
            "processes": len(self.processes),
            "destinations": len(self.destinations),
            "ports": len(self.ports),
            "files": len(self.files),
            "workloads": len(self.workloads),
            "novel": len(self.novel),
            "overflow": sum(self.overflow.values()),
        }
        if self.shared is not None:
            counts["shared_from"] = self.shared.get("from")
        if self.inherited is not None:
            counts["inherited_from"] = self.inherited.get("from")
        return counts

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "key": self.key,
            "first_seen": self.first_seen,
            "ready_at": None if self.first_seen is None else self.ready_at,
            "last_seen": self.last_seen,
            "ready": self.ready,
            "events": self.events,
            "processes": {path: [*e._dump(), e.parents, e.hashes] for path, e in self.processes.items()},
            "destinations": {key: e._dump() for key, e in self.destinations.items()},
            "ports": {str(port): e._dump() for port, e in self.ports.items()},
            "files": {path: [*e._dump(), e.written] for path, e in self.files.items()},
            "workloads": self.workloads,
            "novel": [
                [n.category, n.value, n.count, n.first, n.last, n.alerted] for n in self.novel.values()
            ],
            "overflow": self.overflow,
        }
        if self.shared is not None:
            data["shared"] = self.shared
        if self.inherited is not None:
            data["inherited"] = self.inherited
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], limits: Limits, generation: int) -> Profile:
        """The profile ``to_json`` wrote; ValueError for JSON that is not one (wrong version, a
        count that is no non-negative integer, a time that is no epoch time a datetime can hold,
        a part of the wrong shape). A shared baseline comes from another cluster through the hub:
        what is loaded here is checked, so nothing that reads a profile later fails on it."""
        if not isinstance(data, dict):
            raise ValueError(f"profile JSON is a {type(data).__name__}, not an object")
        if data.get("v") != SCHEMA_VERSION:
            raise ValueError(f"profile JSON version {data.get('v')!r} is not {SCHEMA_VERSION}")
        profile = cls(str(data["key"]), limits, generation)
        if data.get("first_seen") is not None:
            profile.first_seen = _time(data["first_seen"], "first_seen")
            profile.ready_at = _time(data["ready_at"], "ready_at")
        profile.last_seen = None if data.get("last_seen") is None else _time(data["last_seen"], "last_seen")
        profile.ready = _bool(data.get("ready", False), "ready")
        profile.events = _count(data.get("events", 0), "events")
        for path, entry in _object(data, "processes").items():
            count, first, last, parents, hashes = _entry(entry, 5, "processes", path)
            process = profile.processes[path] = ProcessSeen(first, count)
            process.last = last
            process.parents = _counts(parents, f"parents of process {path!r}")
            process.hashes = _counts(hashes, f"hashes of process {path!r}")
        for key, entry in _object(data, "destinations").items():
            count, first, last = _entry(entry, 3, "destinations", key)
            seen = profile.destinations[key] = Seen(first, count)
            seen.last = last
        for port, entry in _object(data, "ports").items():
            count, first, last = _entry(entry, 3, "ports", port)
            if not port.isdigit() or int(port) > 65535:
                raise ValueError(f"ports: {port!r:.80} is not a port number")
            seen = profile.ports[int(port)] = Seen(first, count)
            seen.last = last
        for path, entry in _object(data, "files").items():
            count, first, last, written = _entry(entry, 4, "files", path)
            file = profile.files[path] = FileSeen(first, _bool(written, f"files[{path!r:.80}]: written"))
            file.count, file.last = count, last
        profile.workloads = {k: _time(v, f"workloads[{k!r}]") for k, v in _object(data, "workloads").items()}
        novel_entries = data.get("novel", [])
        if not isinstance(novel_entries, list):
            raise ValueError(f"novel is a {type(novel_entries).__name__}, not a list")
        for entry in novel_entries:
            category, value, count, first, last, alerted = _novel(entry)
            novel = profile.novel[f"{category}\x1f{value}"] = Novel(category, value, first)
            novel.count, novel.last, novel.alerted = count, last, alerted
        profile.overflow = _counts(data.get("overflow", {}), "overflow")
        shared = data.get("shared")
        profile.shared = dict(shared) if isinstance(shared, dict) else None
        inherited = data.get("inherited")
        profile.inherited = dict(inherited) if isinstance(inherited, dict) else None
        for kind, entries in (
            (PROCESSES, profile.processes),
            (DESTINATIONS, profile.destinations),
            (FILES, profile.files),
        ):
            counts = [e.count for e in entries.values()]
            profile.observations[kind] = sum(counts)
            profile.singletons[kind] = sum(1 for c in counts if c == 1)
        return profile


# ---------------------------------------------------------------------- checks of from_json


def _count(value: Any, what: str) -> int:
    # bool is an int to Python, never a count here
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what}: count {value!r:.40} is not a non-negative integer")
    return value


def _time(value: Any, what: str) -> float:
    # NaN fails the range check too
    if isinstance(value, bool) or not isinstance(value, int | float) or not MIN_TIME <= value <= MAX_TIME:
        raise ValueError(f"{what}: time {value!r:.40} is not epoch seconds within the datetime range")
    return float(value)


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what}: {value!r:.40} is not true or false")
    return value


def _object(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ValueError(f"{name} is a {type(value).__name__}, not an object")
    return value


def _counts(value: Any, what: str) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} is a {type(value).__name__}, not an object")
    return {str(k): _count(v, f"{what}[{k!r}]") for k, v in value.items()}


def _entry(value: Any, size: int, name: str, key: str) -> list[Any]:
    """``[count, first, last, *rest]`` of ``name[key]``, the three checked."""
    what = f"{name}[{key!r:.80}]"
    if not isinstance(value, list) or len(value) != size:
        raise ValueError(f"{what} is not a list of {size}")
    count, first, last, *rest = value
    return [_count(count, what), _time(first, what), _time(last, what), *rest]


def _novel(value: Any) -> tuple[str, str, int, float, float, float | None]:
    if not isinstance(value, list) or len(value) != 6:
        raise ValueError(f"novel: {value!r:.80} is not a list of 6")
    category, value_, count, first, last, alerted = value
    if not isinstance(category, str) or not isinstance(value_, str):
        raise ValueError(f"novel: category and value {category!r:.40}, {value_!r:.40} are not text")
    what = f"novel[{category!r:.40}, {value_!r:.80}]"
    return (
        category,
        value_,
        _count(count, what),
        _time(first, what),
        _time(last, what),
        None if alerted is None else _time(alerted, what),
    )
