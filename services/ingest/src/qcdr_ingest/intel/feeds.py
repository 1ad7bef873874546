"""The feed list: ``--feeds FILE`` (a YAML list of :class:`FeedSpec`) and the built-in defaults.

Every mistake in the file fails loudly with one line naming the entry: unknown keys, duplicate
names, URLs other than http(s):// or file://, unreadable durations. ``min_interval`` takes a Go-style
duration (``15m``, ``1h``, ``1h30m``) or a number of seconds (``3600``). A relative ``file:`` URL
(``file:feeds/tor.txt``) is resolved against the directory of the feeds file.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from pydantic import ValidationError
from qcdr_common.config_files import ConfigFileError, load_yaml_file

from qcdr_ingest.intel.model import FeedFormat, FeedSpec

URL_SCHEMES = ("http", "https", "file")

# Sources that firewall clients who download too often: a config asking for more is refused.
HOST_MIN_INTERVALS: dict[str, timedelta] = {"spamhaus.org": timedelta(hours=1)}

DEFAULT_FEEDS: tuple[FeedSpec, ...] = (
    FeedSpec(
        name="feodo-c2",
        url="https://feodotracker.abuse.ch/downloads/ipblocklist.txt",
        category="c2",
        # Feodo legitimately drops to zero after takedowns: empty is not a failure.
        may_be_empty=True,
    ),
    FeedSpec(name="tor-exit", url="https://check.torproject.org/torbulkexitlist", category="tor"),
    FeedSpec(
        name="emerging-threats",
        url="https://rules.emergingthreats.net/blockrules/compromised-ips.txt",
        category="compromised",
    ),
    FeedSpec(name="blocklist-de", url="https://lists.blocklist.de/lists/all.txt", category="attacker"),
    FeedSpec(name="cinsscore", url="https://cinsscore.com/list/ci-badguys.txt", category="scanner"),
    FeedSpec(
        name="spamhaus-drop",
        url="https://www.spamhaus.org/drop/drop.txt",
        category="hijacked",
        format=FeedFormat.SPAMHAUS,
        min_interval=timedelta(hours=1),  # Spamhaus DROP FAQ: at most once an hour
    ),
)


class FeedConfigError(ValueError):
    """A feeds file that cannot be used; the message is one line naming the file and entry."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


MAX_DURATION_S = 100 * 365 * 86400


def parse_duration(value: str | float | timedelta) -> timedelta:
    """``15m``, ``1h30m``, ``3600`` (seconds, also as a number) or a timedelta; never negative."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    elif isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            seconds, pos = 0.0, 0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
                pos = match.end()
            if not text or pos != len(text):
                raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 15m, 1h, 1h30m or seconds)")
    if seconds < 0:
        raise ValueError(f"duration must not be negative: {value!r}")
    # not a number, or beyond what a date plus the duration can hold (timedelta and datetime
    # overflow): no schedule or TTL needs more than a century
    if not seconds <= MAX_DURATION_S:
        raise ValueError(f"duration is not a number of at most 100 years: {value!r}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """``1h``, ``15m``, ``2d3h``, ``45s``: the short form used in messages."""
    total = int(value.total_seconds())
    if total <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts[:2])


def check_url(url: str, *, base_dir: Path | None = None) -> str:
    """The URL to use (relative ``file:`` paths made absolute); ValueError for anything else."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        shown = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ValueError(f"URL has {shown}; use http://, https:// or file://")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URL names a host ({parts.netloc!r}); use file:///absolute/path")
        if not parts.path:
            raise ValueError("file URL has no path")
        path = Path(url2pathname(parts.path))
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        return path.resolve().as_uri()
    if not parts.hostname:
        raise ValueError("URL has no host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"URL has a bad port: {exc}") from None
    return url


def _min_interval_floor(url: str) -> timedelta:
    host = (urlsplit(url).hostname or "").lower()
    floors = [
        floor for suffix, floor in HOST_MIN_INTERVALS.items() if host == suffix or host.endswith("." + suffix)
    ]
    return max(floors, default=timedelta(0))


def _one_line(error: ValidationError) -> str:
    details = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        details.append(f"{where}: {message}" if where else message)
    return "; ".join(details)


def _entry_label(index: int, raw: object) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"entry {index}" + (f" ({name})" if isinstance(name, str) and name else "")


def parse_feeds(data: object, *, source: str = "feeds", base_dir: Path | None = None) -> list[FeedSpec]:
    """FeedSpecs from already-loaded YAML/JSON data (a list of mappings)."""
    if not isinstance(data, list):
        got = "nothing" if data is None else type(data).__name__
        raise FeedConfigError(f"{source}: expected a list of feeds, got {got}")
    specs: list[FeedSpec] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(data, start=1):
        label = f"{source}: {_entry_label(index, raw)}"
        if not isinstance(raw, dict):
            raise FeedConfigError(f"{label}: expected a mapping, got {type(raw).__name__}")
        values: dict[str, Any] = dict(raw)
        try:
            if "min_interval" in values:
                values["min_interval"] = parse_duration(values["min_interval"])
        except (ValueError, TypeError) as exc:
            raise FeedConfigError(f"{label}: min_interval: {exc}") from None
        try:
            if isinstance(values.get("url"), str):
                values["url"] = check_url(values["url"], base_dir=base_dir)
        except (ValueError, TypeError) as exc:
            raise FeedConfigError(f"{label}: {exc}") from None
        try:
            spec = FeedSpec.model_validate(values)
        except ValidationError as exc:
            raise FeedConfigError(f"{label}: {_one_line(exc)}") from None
        if spec.name in seen:
            raise FeedConfigError(f"{label}: duplicate name {spec.name!r} (also entry {seen[spec.name]})")
        floor = _min_interval_floor(spec.url)
        if spec.min_interval < floor:
            raise FeedConfigError(
                f"{label}: min_interval {format_duration(spec.min_interval)} is below this source's "
                f"limit of {format_duration(floor)} (it blocks clients that download more often)"
            )
        seen[spec.name] = index
        specs.append(spec)
    return specs


def load_feeds(path: Path) -> list[FeedSpec]:
    """Read ``--feeds FILE``; :class:`FeedConfigError` (one line) for any problem."""
    try:
        data = load_yaml_file(path)
    except ConfigFileError as exc:
        raise FeedConfigError(str(exc)) from None
    return parse_feeds(data, source=str(path), base_dir=path.resolve().parent)
