"""DNS queries in qcdr's own JSON shape (documented in :mod:`qcdr_ingest.dns.queries`)."""

from __future__ import annotations

from qcdr_ingest.dns.queries import convert_dns
from qcdr_ingest.events.registry import register

register(
    "dns", "DNS queries: {time, query, type, rcode, answers, workload} (docs/DNS.md)", convert_dns, __name__
)
