"""Which findings feed the CDR IOC blocklists (``qualys-cdr-blocklist``, ``cdr-dynamic-blocklist``)."""

from __future__ import annotations

from qcdr_common.contracts.findings.v1 import Finding, FindingKind

# Verdicts: what a source, threat intel, an ATT&CK rule or a chain says is an attack. Anomalies,
# drift and DGA scores are not, so their destinations never land in the blocklist unreviewed.
IOC_KINDS = frozenset(
    {FindingKind.SOURCE, FindingKind.INTEL_MATCH, FindingKind.ATTACK_TECHNIQUE, FindingKind.CHAIN}
)


def carries_ioc(finding: Finding) -> bool:
    """A verdict naming a destination address or port (migration 0007 backfills by the same rule)."""
    net = finding.network
    return finding.kind in IOC_KINDS and net is not None and (net.ip is not None or net.port is not None)
