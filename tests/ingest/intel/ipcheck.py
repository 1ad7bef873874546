"""Independent reference computations for the intel tests, written plainly with ``ipaddress``.

They take seconds for hundreds of thousands of addresses, which is why the production code does
not use them; here they are the yardstick.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable

from qcdr_ingest.intel.netsets import NeverBlock

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def not_blockable(ip: Address) -> bool:
    """The response side's IOC notion (``qcdr_response.policies.iocs.non_blockable_reason``),
    which reads an IPv4-mapped IPv6 address as the IPv4 address it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return not_blockable(ip.ipv4_mapped)
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_private
    )


def never_block_networks(never: NeverBlock) -> list[Network]:
    out: list[Network] = []
    for ranges, cls in ((never.v4, ipaddress.IPv4Address), (never.v6, ipaddress.IPv6Address)):
        for s, e in ranges:
            out.extend(ipaddress.summarize_address_range(cls(s), cls(e)))
    return out


def expected_blocklist(listed: Iterable[Network], never: Iterable[Network]) -> list[str]:
    """Collapse, cut out the never-block networks, collapse again: v4 then v6, as text."""
    never = list(never)
    out: list[str] = []
    for version in (4, 6):
        pieces = list(ipaddress.collapse_addresses(n for n in listed if n.version == version))
        for hole in (n for n in never if n.version == version):
            cut: list[Network] = []
            for piece in pieces:
                if piece.subnet_of(hole):
                    continue
                if hole.subnet_of(piece):
                    cut.extend(piece.address_exclude(hole))
                else:
                    cut.append(piece)
            pieces = cut
        out.extend(str(n) for n in ipaddress.collapse_addresses(pieces))
    return out


def assert_canonical_minimal(cidrs: list[str]) -> None:
    """No host bits, v4 before v6, sorted, disjoint, and no two siblings that could merge.

    For an exact, disjoint cover the last condition is what makes it the unique minimal one.
    """
    nets = [ipaddress.ip_network(c) for c in cidrs]  # strict: host bits raise
    assert [n.version for n in nets] == sorted(n.version for n in nets)
    plain = [
        (n.version, n.max_prefixlen, n.prefixlen, int(n.network_address), int(n.broadcast_address))
        for n in nets
    ]
    for (v1, bits, p1, first1, last1), (v2, _, p2, first2, _) in itertools.pairwise(plain):
        if v1 != v2:
            continue
        assert first2 > last1, f"{cidrs} overlap or are unsorted at {first2}"
        if p1 == p2 and p1 > 0:
            shift = bits - p1 + 1
            assert first1 >> shift != first2 >> shift, f"siblings at {first1}/{p1} should have been merged"
