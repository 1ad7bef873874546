"""Feed bodies to integer entries: plain IP/CIDR lists, IPsum, FireHOL, Spamhaus, DShield, DataPlane,
and domain lists and hosts files (their names go to ``ParsedFeed.domains``).

Never fatal: a line that is not understood is counted as garbage (a few are kept, with line
numbers, for the operator) and parsing goes on. Plain IPv4 lines go through ``inet_pton`` and
``int.from_bytes`` instead of ``ipaddress`` objects, which keeps IPsum's 120k lines at about
0.15 s on a small 2-core machine (``ipaddress.ip_network`` per line alone takes ~0.7 s).
``inet_pton`` is as strict as ``ipaddress`` for IPv4 (no leading zeros, no short forms like
``10.1``), so nothing ambiguous slips through the fast path.

Decisions:

* A CIDR with host bits set (``10.0.0.1/8``) is normalised to its network and counted in
  ``normalized_host_bits``. ``ipset``, ``iptables`` and FireHOL's ``iprange`` all read it that way,
  so that is what the publisher's other consumers block; rejecting it would silently lose the
  entry, and keeping only the host would under-block. The count lets the CLI warn.
* ``/32`` and ``/128`` entries, and ``a-a`` ranges, are single IPs (one indicator, whatever the
  spelling).
* IPv4-mapped IPv6 (``::ffff:1.2.3.4``) is rewritten to IPv4 and counted in ``mapped_v4``.
* Only prefix lengths are accepted after ``/`` (no ``/255.255.255.0`` netmasks; no feed uses them).
* Duplicates keep the highest score.
* Domain lists (``domains``, e.g. Maltrail's trails): one name per line, first column. Maltrail
  mixes ``IP:port`` and ``http://IP`` entries into its domain trails; the address goes to the IP
  set (the port and scheme are dropped: blocking the host is what the list's users do with it).
* Hosts files (``hosts``, ``0.0.0.0 name [name ...]``): the address is the sink the publisher
  points names at, never an indicator; the names after it are. Local names (``localhost``,
  ``broadcasthost``, ``ip6-*``, ...) are skipped and counted in ``local_names``.
* Names are canonical (:func:`qcdr_ingest.dns.names.normalize`: lowercase, no trailing dot, IDNA).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from socket import AF_INET, AF_INET6, inet_pton

from qcdr_ingest.dns.names import try_normalize
from qcdr_ingest.intel.model import FeedFormat
from qcdr_ingest.intel.netsets import (
    MAPPED_V4_BASE,
    V4_BITS,
    V4_MAX,
    V6_BITS,
    Range,
    address_count,
    merge,
)

MAX_GARBAGE_EXAMPLES = 5
MAX_SCORE = 1_000_000

# (version, start, end, host_bits_were_set)
Token = tuple[int, int, int, bool]


@dataclass(eq=False)
class ParsedFeed:
    """One feed body, deduplicated. Single addresses map to their score, ranges ``(start, end)``
    to theirs; the score is the feed's own weight for the entry (IPsum: how many blocklists list
    the IP), 1 when the feed has none."""

    ips4: dict[int, int] = field(default_factory=dict)
    nets4: dict[Range, int] = field(default_factory=dict)
    ips6: dict[int, int] = field(default_factory=dict)
    nets6: dict[Range, int] = field(default_factory=dict)
    lines: int = 0
    comments: int = 0
    blank: int = 0
    garbage: int = 0
    garbage_examples: list[tuple[int, str]] = field(default_factory=list)
    duplicates: int = 0
    normalized_host_bits: int = 0
    mapped_v4: int = 0
    domains: dict[str, int] = field(default_factory=dict)  # canonical name -> score (always 1)
    local_names: int = 0

    @property
    def ips(self) -> int:
        return len(self.ips4) + len(self.ips6)

    @property
    def cidrs(self) -> int:
        """Distinct network entries (CIDRs and the odd non-aligned range)."""
        return len(self.nets4) + len(self.nets6)

    @property
    def ipv6(self) -> int:
        return len(self.ips6) + len(self.nets6)

    @property
    def entries(self) -> int:
        return self.ips + self.cidrs

    def ranges(self, version: int) -> list[Range]:
        """The canonical range list of every address the feed covers in one family."""
        ips, nets = (self.ips4, self.nets4) if version == 4 else (self.ips6, self.nets6)
        return merge([*((n, n) for n in ips), *nets])

    @cached_property
    def addresses(self) -> int:
        """Distinct addresses covered (overlaps counted once; may be astronomically large for v6)."""
        return address_count(self.ranges(4)) + address_count(self.ranges(6))

    def _add(self, tok: Token, score: int) -> None:
        version, s, e, host_bits = tok
        if host_bits:
            self.normalized_host_bits += 1
        if version == 6 and s >= MAPPED_V4_BASE and e <= MAPPED_V4_BASE | V4_MAX:
            version, s, e = 4, s - MAPPED_V4_BASE, e - MAPPED_V4_BASE
            self.mapped_v4 += 1
        if s == e:
            ips = self.ips4 if version == 4 else self.ips6
            old = ips.get(s)
            if old is not None:
                self.duplicates += 1
                score = max(old, score)
            ips[s] = score
            return
        nets = self.nets4 if version == 4 else self.nets6
        old = nets.get((s, e))
        if old is not None:
            self.duplicates += 1
            score = max(old, score)
        nets[(s, e)] = score

    def _add_domain(self, name: str) -> None:
        if name in self.domains:
            self.duplicates += 1
        self.domains[name] = 1

    def _bad(self, lineno: int, line: str) -> None:
        self.garbage += 1
        if len(self.garbage_examples) < MAX_GARBAGE_EXAMPLES:
            self.garbage_examples.append((lineno, line[:120]))


LineParser = Callable[[ParsedFeed, int, str], None]


def _address(text: str) -> tuple[int, int] | None:
    """``(version, int)`` for one address, or None."""
    try:
        return 4, int.from_bytes(inet_pton(AF_INET, text), "big")
    except OSError:
        pass
    try:
        return 6, int.from_bytes(inet_pton(AF_INET6, text), "big")
    except OSError:
        return None


def parse_token(text: str) -> Token | None:
    """One ``address``, ``address/prefixlen`` or ``first-last`` token, or None."""
    if "/" in text:
        addr_text, _, plen_text = text.partition("/")
        addr = _address(addr_text)
        if addr is None or not (plen_text.isascii() and plen_text.isdigit()) or len(plen_text) > 3:
            return None
        version, n = addr
        bits = V4_BITS if version == 4 else V6_BITS
        plen = int(plen_text)
        if plen > bits:
            return None
        host = (1 << (bits - plen)) - 1
        return version, n & ~host, (n & ~host) | host, bool(n & host)
    if "-" in text:
        first, _, last = text.partition("-")
        a, b = _address(first), _address(last)
        if a is None or b is None or a[0] != b[0] or a[1] > b[1]:
            return None
        return a[0], a[1], b[1], False
    addr = _address(text)
    return None if addr is None else (addr[0], addr[1], addr[1], False)


def _score(text: str) -> int | None:
    if text.isascii() and text.isdigit() and len(text) <= 7:
        return min(max(int(text), 1), MAX_SCORE)
    return None


def _decode(data: bytes) -> list[str]:
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    # Feeds are ASCII in practice; a stray Latin-1 byte in a comment must not fail the feed.
    return data.decode("utf-8", errors="replace").splitlines()


def parse_feed(data: bytes, fmt: FeedFormat = FeedFormat.AUTO) -> ParsedFeed:
    """Parse one feed body.

    ``FIRST_COLUMN`` takes, per line, the first column (whitespace, ``,`` or ``;`` separated) as an
    address, CIDR or ``first-last`` range; a second column that is another address makes a range
    (DShield), a whole number becomes the score (IPsum). ``AUTO`` does the same and also reads
    ``{...}`` lines as Spamhaus JSON. ``IP``/``CIDR`` accept one value per line and nothing else.
    ``#`` and ``;`` start comments, also after a value.
    """
    feed = ParsedFeed()
    line_parser = _LINE_PARSERS[fmt]
    ips4 = feed.ips4
    lineno = 0
    for lineno, raw in enumerate(_decode(data), 1):
        line = raw.strip()
        if not line:
            feed.blank += 1
            continue
        if line[0] in "#;":
            feed.comments += 1
            continue
        if fmt is FeedFormat.AUTO or fmt is FeedFormat.FIRST_COLUMN:
            # Fast path for the bulk of every feed: "a.b.c.d" or "a.b.c.d<TAB>score".
            head, _, rest = line.partition("\t")
            if "/" not in head and ":" not in head and " " not in head and "#" not in head:
                try:
                    n = int.from_bytes(inet_pton(AF_INET, head), "big")
                except OSError:
                    pass
                else:
                    score = _score(rest.strip()) if rest else 1
                    if score is not None:
                        if n in ips4:
                            feed.duplicates += 1
                            score = max(score, ips4[n])
                        ips4[n] = score
                        continue
        line_parser(feed, lineno, line)
    feed.lines = lineno
    return feed


def _columns(line: str) -> list[str]:
    for mark in "#;":
        cut = line.find(mark)
        if cut >= 0:
            line = line[:cut]
    if "," in line:
        line = line.replace(",", " ")
    return line.split()


def _auto(feed: ParsedFeed, lineno: int, line: str) -> None:
    if line[0] == "{":
        _spamhaus_json(feed, lineno, line)
    else:
        _first_column(feed, lineno, line)


def _first_column(feed: ParsedFeed, lineno: int, line: str) -> None:
    cols = _columns(line)
    tok = parse_token(cols[0]) if cols else None
    if tok is None:
        feed._bad(lineno, line)
        return
    score = 1
    if len(cols) > 1:
        # "IP<TAB>IP..." is a range (DShield): reading only the first column would block one
        # address of each /24. Otherwise a whole number is the entry's score (IPsum).
        end = _address(cols[1])
        if end is not None and tok[1] == tok[2]:
            if end[0] != tok[0] or end[1] < tok[1]:
                feed._bad(lineno, line)
                return
            tok = (tok[0], tok[1], end[1], False)
        else:
            score = _score(cols[1]) or 1
    feed._add(tok, score)


def _single_column(single_only: bool) -> LineParser:
    def parse(feed: ParsedFeed, lineno: int, line: str) -> None:
        cols = _columns(line)
        tok = parse_token(cols[0]) if len(cols) == 1 and "-" not in cols[0] else None
        if tok is None or (single_only and tok[1] != tok[2]):
            feed._bad(lineno, line)
            return
        feed._add(tok, 1)

    return parse


def _spamhaus(feed: ParsedFeed, lineno: int, line: str) -> None:
    if line[0] == "{":
        _spamhaus_json(feed, lineno, line)
        return
    tok = parse_token(line.partition(";")[0].strip())
    if tok is None:
        feed._bad(lineno, line)
        return
    feed._add(tok, 1)


def _spamhaus_json(feed: ParsedFeed, lineno: int, line: str) -> None:
    # drop_v4.json / drop_v6.json: one object per line, the last one {"type": "metadata", ...}.
    try:
        obj = json.loads(line)
    except ValueError:
        feed._bad(lineno, line)
        return
    if isinstance(obj, dict) and "cidr" not in obj and obj.get("type") == "metadata":
        feed.comments += 1
        return
    cidr = obj.get("cidr") if isinstance(obj, dict) else None
    tok = parse_token(cidr) if isinstance(cidr, str) else None
    if tok is None:
        feed._bad(lineno, line)
        return
    feed._add(tok, 1)


def _dshield(feed: ParsedFeed, lineno: int, line: str) -> None:
    # "start<TAB>end<TAB>prefixlen<TAB>attacks<TAB>name<TAB>country<TAB>email", header "Start End ...".
    cols = line.split("\t")
    if cols[0].strip().lower() == "start":
        feed.comments += 1
        return
    first = _address(cols[0].strip())
    last = _address(cols[1].strip()) if len(cols) > 1 else None
    if first is None or last is None or first[0] != last[0] or first[1] > last[1]:
        feed._bad(lineno, line)
        return
    feed._add((first[0], first[1], last[1], False), 1)


def _dataplane(feed: ParsedFeed, lineno: int, line: str) -> None:
    # "ASN | ASname | ipaddr | utc | category"; the same IP repeats for multi-origin prefixes.
    cols = line.split("|")
    addr = _address(cols[2].strip()) if len(cols) >= 5 else None
    if addr is None:
        feed._bad(lineno, line)
        return
    feed._add((addr[0], addr[1], addr[1], False), 1)


_SCHEME = ("http://", "https://")
_LOCAL_NAMES = frozenset(
    {"localhost", "localhost.localdomain", "local", "broadcasthost", "localdomain", "0.0.0.0"}  # noqa: S104 - a name, not a bind
)


def _domain_list(feed: ParsedFeed, lineno: int, line: str) -> None:
    cols = _columns(line)
    if len(cols) != 1:
        feed._bad(lineno, line)
        return
    value = cols[0]
    for scheme in _SCHEME:
        if value.lower().startswith(scheme):
            value = value[len(scheme) :].partition("/")[0]
            break
    host, colon, number = value.rpartition(":")
    if colon and number.isascii() and number.isdigit() and host.count(":") == 0:
        value = host  # "name:port" / "IPv4:port"; IPv6 has more colons and no port here
    tok = parse_token(value)
    if tok is not None:
        feed._add(tok, 1)
        return
    name = try_normalize(value)
    if name is None:
        feed._bad(lineno, line)
        return
    feed._add_domain(name)


def _hosts(feed: ParsedFeed, lineno: int, line: str) -> None:
    cols = _columns(line)
    if len(cols) < 2 or _address(cols[0]) is None:
        feed._bad(lineno, line)
        return
    for value in cols[1:]:
        lowered = value.lower()
        if lowered in _LOCAL_NAMES or lowered.startswith("ip6-"):
            feed.local_names += 1
            continue
        name = try_normalize(value)
        if name is None:
            feed._bad(lineno, line)
            continue
        feed._add_domain(name)


_LINE_PARSERS: dict[FeedFormat, LineParser] = {
    FeedFormat.AUTO: _auto,
    FeedFormat.IP: _single_column(single_only=True),
    FeedFormat.CIDR: _single_column(single_only=False),
    FeedFormat.FIRST_COLUMN: _first_column,
    FeedFormat.SPAMHAUS: _spamhaus,
    FeedFormat.DSHIELD: _dshield,
    FeedFormat.DATAPLANE: _dataplane,
    FeedFormat.DOMAINS: _domain_list,
    FeedFormat.HOSTS: _hosts,
}
