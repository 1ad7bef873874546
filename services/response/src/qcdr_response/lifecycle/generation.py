"""Pure policy generation per scope: a finding becomes the event the generator families read,
is routed to one family, and a (family, namespace) scope is regenerated from all its findings.

Regenerating a scope from *all* its findings (not just the new ones) keeps the service's output
equal to what once mode makes from the same findings. The generation date is the date of the
newest finding in the scope (event time, not wall time), so the same findings always give the
same content hash and a redelivered batch never makes a new version.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC

from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.contracts.policies.v1 import PolicyDocument

from qcdr_response.policies import network
from qcdr_response.policies.config import GenerationConfig
from qcdr_response.policies.generate import Checker, PolicyGenerator, Refusal, route
from qcdr_response.policies.iocs import extract_iocs
from qcdr_response.policies.metadata import PREFIX

# SecurityEvent's field limits (a Finding allows longer detector names)
_SOURCE_MAX = 40
_ACTION_LABEL = f"{PREFIX}/action"


@dataclass(frozen=True, order=True)
class Scope:
    """The findings one family's policy covers in one namespace ('' = clusterwide)."""

    family: str
    namespace: str

    def __str__(self) -> str:
        return f"{self.family}/{self.namespace or '-'}"


# The CDR IOC blocklists (qualys-cdr-blocklist, cdr-dynamic-blocklist) are one clusterwide scope
# of their own, regenerated from every finding that carries a network indicator.
IOC_SCOPE = Scope(network.FAMILY, "")


def _is_technique(value: str) -> bool:
    # the SecurityEvent validator's rule: T1234 or T1234.001
    if len(value) not in (5, 9) or value[0] != "T" or not value[1:5].isdigit():
        return False
    return len(value) == 5 or (value[5] == "." and value[6:].isdigit())


def finding_to_event(finding: Finding) -> SecurityEvent:
    """The minimal SecurityEvent the generator families read (the finding's id, no ``raw``).

    A Finding's techniques are free text in its contract; what is not an ATT&CK id is left out
    here rather than rejecting the finding.
    """
    source = (finding.source or finding.detector)[:_SOURCE_MAX]
    return SecurityEvent(
        id=finding.id,
        source=source,
        category=finding.category,
        severity=finding.severity,
        event_time=finding.event_time,
        message=finding.title or None,
        workload=finding.workload,
        process=finding.process,
        network=finding.network,
        techniques=tuple(t for t in finding.techniques if _is_technique(t)),
    )


@dataclass
class ScopeResult:
    scope: Scope
    documents: list[PolicyDocument] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)

    @property
    def main(self) -> PolicyDocument | None:
        """The document that covers the scope's findings (not the ``-override`` companion)."""
        for doc in self.documents:
            labels = doc.body.get("metadata", {}).get("labels", {})
            if labels.get(_ACTION_LABEL) != "override":
                return doc
        return self.documents[0] if self.documents else None

    def why_none(self) -> str:
        reasons = [r for refusal in self.refusals for r in refusal.reasons if refusal.outcome == "dropped"]
        detail = "; ".join(reasons)[:1000] or "the generator produced no document"
        return f"the {self.scope} policy failed validation: {detail}"


ROUTES_REMEMBERED = 4096


class ScopeGenerator:
    """Routes events to families and regenerates one scope's documents."""

    def __init__(self, config: GenerationConfig, checker: Checker | None = None) -> None:
        self.config = config
        self.checker = checker
        self._generators = PolicyGenerator(config, checker).generators
        # routing memoized per (category, techniques): a few dozen pairs in practice, but the
        # category of a Falco or Qualys finding is its rule name, so the memo is an LRU
        self._routes: OrderedDict[tuple[str, tuple[str, ...]], str | None] = OrderedDict()

    def family_of(self, event: SecurityEvent) -> str | None:
        """The family that answers the event, or None (unmapped)."""
        key = (event.category, event.techniques)
        if key in self._routes:
            self._routes.move_to_end(key)
            return self._routes[key]
        gen = route(event, self._generators)
        family = self._routes[key] = gen.name if gen is not None else None
        if len(self._routes) > ROUTES_REMEMBERED:
            self._routes.popitem(last=False)
        return family

    def scope_of(self, event: SecurityEvent) -> Scope | None:
        family = self.family_of(event)
        return None if family is None else Scope(family, event.workload.namespace or "")

    def generate_iocs(self, events: Sequence[SecurityEvent], unblocked: Collection[str] = ()) -> ScopeResult:
        """Once mode's IOC blocklists from every finding that carries a network indicator: the
        same documents ``qcdr run --once`` writes for the same findings. ``unblocked``: addresses
        AbuseIPDB scores below the threshold (and no feed lists), left out as once mode's
        ``--reputation-threshold`` leaves them out."""
        result = ScopeResult(IOC_SCOPE)
        if not events:
            return result
        newest = max(e.event_time for e in events)
        config = self.config.model_copy(update={"run_date": newest.astimezone(UTC).date()})
        generator = PolicyGenerator(config, self.checker)
        iocs = extract_iocs(events, config)
        for ip in unblocked:
            if iocs.ips.pop(ip, None) is not None:
                iocs.excluded["ip:reputation-below-threshold"] += 1
        result.documents = generator.network_documents(iocs, result.refusals)
        return result

    def generate(self, scope: Scope, events: Sequence[SecurityEvent]) -> ScopeResult:
        """The scope's documents from all its events (which must all belong to the scope)."""
        result = ScopeResult(scope)
        if not events:
            return result
        newest = max(e.event_time for e in events)
        config = self.config.model_copy(update={"run_date": newest.astimezone(UTC).date()})
        generated = PolicyGenerator(config, self.checker).generate(events, network=False)
        result.refusals = [r for r in generated.refusals if r.family == scope.family]
        family = generated.families.get(scope.family)
        if family is not None:
            result.documents = [d for d in family.documents if (d.namespace or "") == scope.namespace]
        return result
