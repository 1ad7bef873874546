"""Syslog message formatting: RFC 5424 with a ``qcdr`` structured-data element, optionally with a
CEF:0 record as MSG; RFC 6587 octet-counting framing for TCP and TLS (RFC 5425)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal, get_args

from qcdr_response.outputs.message import OutputMessage

Facility = Literal[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
    "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7",
]  # fmt: skip
FACILITY_CODES: dict[str, int] = {name: code for code, name in enumerate(get_args(Facility))}

# syslog severities (RFC 5424 table 2): 2 critical, 3 error, 4 warning, 5 notice, 6 informational
SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}
# CEF severity 0-10 (the original system's mapping, plus info)
CEF_SEVERITY = {"critical": 10, "high": 7, "medium": 5, "low": 3, "info": 1}

_PRINTUSASCII = re.compile(r"[^!-~]")
_SD_ESCAPE = re.compile(r'(["\\\]])')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# CEF header field lengths (ArcSight CEF spec): vendor, product, version, signature id, name
CEF_HEADER_MAX = (63, 63, 31, 1023, 512)
# extension values shortened first when a record is over the limit; the rest keep the record useful
_CEF_SHORTEN_FIRST = ("msg", "filePath", "request", "sproc", "dhost", "cs6", "cs1")
# then, if still over, whole entries are dropped from the end, all but these
_CEF_KEEP = frozenset({"rt", "cnt", "cat", "externalId"})


def header_field(value: str | None, max_len: int) -> str:
    """HOSTNAME / APP-NAME / PROCID / MSGID: printable US-ASCII, no spaces, bounded; "-" if empty."""
    cleaned = _PRINTUSASCII.sub("_", value or "")[:max_len]
    return cleaned or "-"


def sd_value(value: str) -> str:
    # RFC 5424 6.3.3: '"', '\' and ']' MUST be escaped in PARAM-VALUE
    return _SD_ESCAPE.sub(r"\\\1", value)


def timestamp(when: datetime) -> str:
    when = when.astimezone(UTC)  # FULL-DATE is 4DIGIT; %Y does not pad years below 1000
    return f"{when.year:04d}" + when.strftime("-%m-%dT%H:%M:%S.%fZ")


def structured_data(sd_id: str, message: OutputMessage) -> str:
    f, w = message.finding, message.finding.workload
    params = {
        "deliveryId": message.id,
        "groupKey": message.group_key,
        "count": str(message.count),
        "findingId": f.id,
        "severity": message.severity,
        "category": f.category,
        "cluster": w.cluster or message.cluster_id,
        "namespace": w.namespace,
        "pod": w.pod,
    }
    body = "".join(f' {name}="{sd_value(value)}"' for name, value in params.items() if value)
    return f"[{sd_id}{body}]"


def text_msg(message: OutputMessage) -> str:
    line = message.summary()
    if message.link:
        line += f" {message.link}"
    return _CONTROL.sub(" ", line)


def _cef_header(value: str) -> str:
    return _CONTROL.sub(" ", value.replace("\\", "\\\\").replace("|", "\\|"))


def _cef_ext(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n")
    return _CONTROL.sub(" ", escaped)


def _clip_escaped(value: str, escape: Callable[[str], str], limit: int) -> str:
    """``value`` escaped, cut (between characters, never inside an escape) to ``limit`` UTF-8 bytes."""
    escaped = escape(value)
    if len(escaped.encode()) <= limit:
        return escaped
    room, used, out = limit - len("…".encode()), 0, []
    for char in value:
        piece = escape(char)
        used += len(piece.encode())
        if used > room:
            break
        out.append(piece)
    return "".join(out) + "…" if room >= 0 else ""


def _epoch_ms(when: datetime) -> str | None:
    """CEF times are milliseconds since the epoch; a time before it (a zero-time placeholder) has none."""
    value = int(when.timestamp() * 1000)
    return str(value) if value >= 0 else None


def cef_msg(
    message: OutputMessage, vendor: str, product: str, version: str, max_bytes: int | None = None
) -> str:
    """A CEF:0 record with header fields bounded to the spec's lengths. Over ``max_bytes`` (UTF-8), the
    extension values are shortened (``msg`` first), then optional ones dropped from the end, then the
    Name shortened: the record is never cut at its tail, which would lose Severity and the extension."""
    f, w = message.finding, message.finding.workload

    ext: list[tuple[str, str | None]] = [
        ("rt", _epoch_ms(message.last_seen)),
        ("start", _epoch_ms(message.first_seen)),
        ("end", _epoch_ms(message.last_seen)),
        ("cnt", str(message.count)),
        ("cat", f.category),
        ("externalId", message.id),
        ("msg", f.explanation or message.summary()),
        ("cs1Label", "groupKey"),
        ("cs1", message.group_key),
        ("cs2Label", "findingId"),
        ("cs2", f.id),
        ("cs3Label", "namespace"),
        ("cs3", w.namespace),
        ("cs4Label", "pod"),
        ("cs4", w.pod),
        ("cs5Label", "cluster"),
        ("cs5", w.cluster or message.cluster_id),
        ("cs6Label", "techniques"),
        ("cs6", ",".join(f.techniques)),
        ("dvchost", w.cluster or message.cluster_id),
        ("sproc", f.process.name if f.process else None),
        ("filePath", f.process.path if f.process else None),
        ("dst", str(f.network.ip) if f.network and f.network.ip else None),
        ("dpt", str(f.network.port) if f.network and f.network.port is not None else None),
        ("dhost", f.network.domain if f.network else None),
        ("request", message.link),
    ]
    labels_without_value = {f"{key}Label" for key, value in ext if key.startswith("cs") and not value}
    values = {key: value for key, value in ext if value and key not in labels_without_value}
    escaped = {key: _cef_ext(value) for key, value in values.items()}
    header = [
        _clip_escaped(value, _cef_header, limit)
        for value, limit in zip(
            (vendor, product, version, f.category, message.title), CEF_HEADER_MAX, strict=True
        )
    ]
    severity = str(CEF_SEVERITY[message.severity])

    def record() -> str:
        extension = " ".join(f"{key}={value}" for key, value in escaped.items())
        return "CEF:0|" + "|".join(header) + f"|{severity}|" + extension

    if max_bytes is None:
        return record()
    for key in _CEF_SHORTEN_FIRST:
        excess = len(record().encode()) - max_bytes
        if excess <= 0:
            break
        if key in escaped:
            escaped[key] = _clip_escaped(values[key], _cef_ext, max(len(escaped[key].encode()) - excess, 0))
    for key in [key for key in reversed(escaped) if key not in _CEF_KEEP and not key.endswith("Label")]:
        if len(record().encode()) <= max_bytes:
            break
        del escaped[key]
        escaped.pop(f"{key}Label", None)
    excess = len(record().encode()) - max_bytes
    if excess > 0:  # the header alone is too big for the room: shorten the Name (at least one character)
        header[4] = _clip_escaped(message.title, _cef_header, max(len(header[4].encode()) - excess, 4))
    return record()


def rfc5424(
    message: OutputMessage,
    *,
    facility: str,
    hostname: str,
    app_name: str,
    sd_id: str,
    msg: str | Callable[[int], str],
    max_bytes: int,
) -> bytes:
    """One RFC 5424 message; MSG is cut (on a character boundary) so the whole fits ``max_bytes``.
    ``msg`` may be a function of the bytes left for it, to shorten a structured MSG itself (CEF)."""
    pri = FACILITY_CODES[facility] * 8 + SYSLOG_SEVERITY[message.severity]
    head = (
        f"<{pri}>1 {timestamp(message.last_seen)} {header_field(hostname, 255)} {header_field(app_name, 48)} "
        f"- {header_field(message.kind.value, 32)} {structured_data(sd_id, message)}"
    ).encode()
    room = max_bytes - len(head) - 1
    if callable(msg):
        msg = msg(room) if room > 0 else ""
    if not msg:
        return head
    if room <= 0:  # header and structured data alone fill it: send them whole, without MSG
        return head
    encoded = msg.encode()
    if len(encoded) > room:
        encoded = encoded[:room].decode("utf-8", errors="ignore").encode()
    return head + b" " + encoded


def octet_counted(frame: bytes) -> bytes:
    """RFC 6587 3.4.1: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d %s" % (len(frame), frame)
