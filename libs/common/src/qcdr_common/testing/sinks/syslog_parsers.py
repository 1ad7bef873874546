"""Test oracles for syslog: a strict RFC 5424 parser written from the RFC's ABNF (section 6) and a
CEF parser, independent of the sink's own formatting code.

    parsed = parse_rfc5424(line)          # raises ValueError on anything the ABNF does not allow
    parsed.structured_data["qcdr@32473"]["deliveryId"]
    cef = parse_cef(parsed.msg)           # header fields and extensions, unescaped
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_SD_NAME = r'(?:(?![=\]"])[!-~]){1,32}'
_HEADER = re.compile(
    r"<(?P<pri>\d{1,3})>(?P<version>[1-9]\d{0,2}) "
    r"(?P<timestamp>-|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})) "
    r"(?P<hostname>[!-~]{1,255}) (?P<app_name>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) (?P<msgid>[!-~]{1,32}) "
)
_ELEMENT = re.compile(rf'\[(?P<id>{_SD_NAME})(?P<params>(?: {_SD_NAME}="(?:[^"\\\]]|\\.)*")*)\]')
_PARAM = re.compile(rf'(?P<name>{_SD_NAME})="(?P<value>(?:[^"\\\]]|\\.)*)"')
_SD_UNESCAPE = re.compile(r'\\(["\\\]])')


@dataclass(frozen=True)
class Rfc5424Message:
    facility: int
    severity: int
    version: int
    timestamp: datetime | None
    hostname: str | None
    app_name: str | None
    procid: str | None
    msgid: str | None
    structured_data: dict[str, dict[str, str]]
    msg: str


def parse_rfc5424(line: str) -> Rfc5424Message:
    """Parse one syslog message strictly per RFC 5424 section 6 (raises ``ValueError`` otherwise)."""
    header = _HEADER.match(line)
    if header is None:
        raise ValueError(f"not an RFC 5424 header: {line[:120]!r}")
    pri = int(header["pri"])
    if pri > 191 or (len(header["pri"]) > 1 and header["pri"].startswith("0")):
        raise ValueError(f"PRI out of range: {header['pri']}")
    timestamp = None if header["timestamp"] == "-" else datetime.fromisoformat(header["timestamp"])
    rest = line[header.end() :]
    sd: dict[str, dict[str, str]] = {}
    if rest.startswith("-"):
        rest = rest[1:]
    else:
        while rest.startswith("["):
            element = _ELEMENT.match(rest)
            if element is None:
                raise ValueError(f"malformed SD-ELEMENT: {rest[:120]!r}")
            if element["id"] in sd:
                raise ValueError(f"SD-ID {element['id']} repeated")
            sd[element["id"]] = {
                p["name"]: _SD_UNESCAPE.sub(r"\1", p["value"]) for p in _PARAM.finditer(element["params"])
            }
            rest = rest[element.end() :]
        if not sd:
            raise ValueError(f"STRUCTURED-DATA missing: {rest[:120]!r}")
    if rest and not rest.startswith(" "):
        raise ValueError(f"no SP between STRUCTURED-DATA and MSG: {rest[:120]!r}")
    msg = rest[1:].removeprefix("\ufeff")

    def nil(value: str) -> str | None:
        return None if value == "-" else value

    return Rfc5424Message(
        facility=pri // 8,
        severity=pri % 8,
        version=int(header["version"]),
        timestamp=timestamp,
        hostname=nil(header["hostname"]),
        app_name=nil(header["app_name"]),
        procid=nil(header["procid"]),
        msgid=nil(header["msgid"]),
        structured_data=sd,
        msg=msg,
    )


@dataclass(frozen=True)
class CefRecord:
    version: int
    vendor: str
    product: str
    device_version: str
    signature_id: str
    name: str
    severity: str
    extensions: dict[str, str]


_EXT_KEY = re.compile(r"(?:^|(?<= ))([A-Za-z0-9_.\[\]-]+)=")
_EXT_UNESCAPE = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}


def parse_cef(text: str) -> CefRecord:
    """Parse a ``CEF:0|...`` record: header fields split on unescaped ``|`` (``\\|`` and ``\\\\``
    unescaped), then ``key=value`` extensions (``\\=``, ``\\\\``, ``\\n``, ``\\r`` unescaped)."""
    if not text.startswith("CEF:"):
        raise ValueError(f"not CEF: {text[:60]!r}")
    fields: list[str] = []
    current: list[str] = []
    i = 4
    while len(fields) < 7:
        if i >= len(text):
            raise ValueError(f"CEF header has {len(fields)} of 7 fields")
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in "|\\":
            current.append(text[i + 1])
            i += 2
            continue
        if char == "|":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    extension = text[i:]
    # a key starts after a space (or at the start) and ends at an '=' with no backslash before it
    starts = [m for m in _EXT_KEY.finditer(extension) if not _escaped(extension, m.end() - 1)]
    extensions: dict[str, str] = {}
    for n, m in enumerate(starts):
        end = starts[n + 1].start() if n + 1 < len(starts) else len(extension)
        raw = extension[m.end() : end].rstrip(" ") if n + 1 < len(starts) else extension[m.end() : end]
        if re.search(r"(?<!\\)(?:\\\\)*=", raw):
            raise ValueError(f"unescaped '=' in the value of {m[1]}: {raw!r}")
        extensions[m[1]] = re.sub(r"\\(.)", lambda e: _EXT_UNESCAPE.get(e[1], "\\" + e[1]), raw)
    version, vendor, product, device_version, signature_id, name, severity = fields
    return CefRecord(int(version), vendor, product, device_version, signature_id, name, severity, extensions)


def _escaped(text: str, index: int) -> bool:
    backslashes = 0
    while index - backslashes - 1 >= 0 and text[index - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1
