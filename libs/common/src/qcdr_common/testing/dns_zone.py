"""A DNS server on 127.0.0.1 (dnslib) answering from a zone the test holds and may change.

Records are ``name. -> [(type, data, ttl)]`` with types A, AAAA and CNAME; CNAMEs inside the zone
are followed as a recursive resolver would, every other name is NXDOMAIN. ``queries`` lists what
was asked (``"A pool.bad.example."``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dnslib import AAAA, CNAME, QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSServer

Records = dict[str, list[tuple[str, str, int]]]
NXDOMAIN = 3
_CNAME_HOPS = 5


class Zone(BaseResolver):  # type: ignore[misc]  # dnslib is untyped
    def __init__(self, records: Records) -> None:
        self.records = records
        self.queries: list[str] = []

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).lower()
        qtype = QTYPE[request.q.qtype]
        self.queries.append(f"{qtype} {qname}")
        if qname not in self.records:
            reply.header.rcode = NXDOMAIN
            return reply
        name = qname
        for _ in range(_CNAME_HOPS):
            cname = next((r for r in self.records.get(name, []) if r[0] == "CNAME"), None)
            if cname is None:
                break
            reply.add_answer(RR(name, QTYPE.CNAME, rdata=CNAME(cname[1]), ttl=cname[2]))
            name = cname[1]
        for rtype, data, ttl in self.records.get(name, []):
            if rtype == qtype:
                rdata = A(data) if rtype == "A" else AAAA(data)
                reply.add_answer(RR(name, getattr(QTYPE, rtype), rdata=rdata, ttl=ttl))
        return reply


class _Quiet:
    """dnslib's logger, silenced."""

    def __getattr__(self, name: str) -> object:
        return lambda *args, **kwargs: None


@contextmanager
def serve_zone(records: Records) -> Iterator[tuple[int, Zone]]:
    """(UDP port on 127.0.0.1, the zone) until the block ends."""
    zone = Zone(records)
    server = DNSServer(zone, address="127.0.0.1", port=0, logger=_Quiet())
    server.start_thread()
    try:
        yield server.server.server_address[1], zone
    finally:
        server.stop()
        server.server.server_close()
