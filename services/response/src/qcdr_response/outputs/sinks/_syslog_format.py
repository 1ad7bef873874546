"""Syslog message formatting: RFC 5424 with a ``qcdr`` structured-data element, optionally with a
CEF:0 record as MSG; RFC 6587 octet-counting framing for TCP and TLS (RFC 5425)."""

from __future__ import annotations

import re
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


def header_field(value: str | None, max_len: int) -> str:
    """HOSTNAME / APP-NAME / PROCID / MSGID: printable US-ASCII, no spaces, bounded; "-" if empty."""
    cleaned = _PRINTUSASCII.sub("_", value or "")[:max_len]
    return cleaned or "-"


def sd_value(value: str) -> str:
    # RFC 5424 6.3.3: '"', '\' and ']' MUST be escaped in PARAM-VALUE
    return _SD_ESCAPE.sub(r"\\\1", value)


def timestamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


def cef_msg(message: OutputMessage, vendor: str, product: str, version: str) -> str:
    f, w = message.finding, message.finding.workload

    def ms(when: datetime) -> str:
        return str(int(when.timestamp() * 1000))

    ext: list[tuple[str, str | None]] = [
        ("rt", ms(message.last_seen)),
        ("start", ms(message.first_seen)),
        ("end", ms(message.last_seen)),
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
    extension = " ".join(
        f"{key}={_cef_ext(value)}" for key, value in ext if value and key not in labels_without_value
    )
    fields = (vendor, product, version, f.category, message.title, str(CEF_SEVERITY[message.severity]))
    return "CEF:0|" + "|".join(_cef_header(v) for v in fields) + "|" + extension


def rfc5424(
    message: OutputMessage,
    *,
    facility: str,
    hostname: str,
    app_name: str,
    sd_id: str,
    msg: str,
    max_bytes: int,
) -> bytes:
    """One RFC 5424 message; MSG is cut (on a character boundary) so the whole fits ``max_bytes``."""
    pri = FACILITY_CODES[facility] * 8 + SYSLOG_SEVERITY[message.severity]
    head = (
        f"<{pri}>1 {timestamp(message.last_seen)} {header_field(hostname, 255)} {header_field(app_name, 48)} "
        f"- {header_field(message.kind.value, 32)} {structured_data(sd_id, message)}"
    ).encode()
    if not msg:
        return head
    room = max_bytes - len(head) - 1
    if room <= 0:  # header and structured data alone fill it: send them whole, without MSG
        return head
    encoded = msg.encode()
    if len(encoded) > room:
        encoded = encoded[:room].decode("utf-8", errors="ignore").encode()
    return head + b" " + encoded


def octet_counted(frame: bytes) -> bytes:
    """RFC 6587 3.4.1: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d %s" % (len(frame), frame)
