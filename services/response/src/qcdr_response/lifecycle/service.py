"""The rules of the policy lifecycle: a batch of finding envelopes in, versions and links out.

Everything here runs inside the caller's transaction and only flushes; the stream handler commits
once per micro-batch and acks after the commit, so a crash at any point either leaves no trace of
the batch (it is redelivered and handled again) or all of it (the redelivery finds the envelope
ids in ``response_received`` and skips them). That is what makes the effects exactly-once:

1. record the envelope ids (``ON CONFLICT DO NOTHING``) and keep only the new ones;
2. store the findings (a finding id already stored is kept as it is);
3. per affected (family, namespace) scope, under an advisory lock, regenerate the documents from
   every finding of the scope; a document whose content hash differs from its policy's current
   version becomes a new version (the first one creates the policy);
4. link each new finding to the version of its scope's policy (unique on the finding id);
5. enqueue ``response.policy_changed`` / ``response.policy_status_changed`` in the outbox.

The CDR IOC blocklists are one more scope (``network-iocs``, clusterwide): when the batch brings a
verdict naming a destination address or port, they are regenerated from every such finding, as
once mode makes them. A finding no family answers but the blocklist covers is linked to it.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.contracts.policies.v1 import PolicyDocument, dump_yaml
from qcdr_common.streams.envelope import Envelope, new_envelope
from qcdr_common.streams.outbox import enqueue
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_response import streams
from qcdr_response.db.models import outbox
from qcdr_response.lifecycle import repository as repo
from qcdr_response.lifecycle.generation import (
    IOC_SCOPE,
    Scope,
    ScopeGenerator,
    ScopeResult,
    finding_to_event,
)
from qcdr_response.lifecycle.iocs import carries_ioc
from qcdr_response.lifecycle.models import (
    FEDERATED_FAMILY,
    LinkOutcome,
    PolicyRow,
    PolicyStatus,
    PolicyVersionRow,
)
from qcdr_response.policies.families.behaviour_anomaly import no_policy_reason

SOURCE = "response"
FINDING_VERSION = 1


class EventCache:
    """Decoded findings by id, so regenerating a large scope does not re-read and re-validate
    every stored finding each batch. Findings never change once stored, so entries never go stale;
    the oldest are dropped past ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._events: OrderedDict[str, SecurityEvent] = OrderedDict()

    def get(self, finding_id: str) -> SecurityEvent | None:
        return self._events.get(finding_id)

    def update(self, events: Iterable[SecurityEvent]) -> None:
        if self.size <= 0:
            return
        for event in events:
            self._events[event.id] = event
        while len(self._events) > self.size:
            self._events.popitem(last=False)

    def __len__(self) -> int:
        return len(self._events)


@dataclass
class Lifecycle:
    """What the rules need besides the session: the generator, the cache and the mode."""

    generator: ScopeGenerator
    cluster_id: str
    auto_apply: bool = False
    cache: EventCache = field(default_factory=lambda: EventCache(0))
    ioc_blocklist: bool = True  # regenerate the CDR IOC blocklists (once mode's network documents)
    # AbuseIPDB scores below this (ingest's answers) keep an address out of them; 0: never
    ioc_reputation_threshold: int = 50

    def new_status(self) -> PolicyStatus:
        # auto_apply approves every new version; the applier then puts it in the cluster
        return PolicyStatus.APPROVED if self.auto_apply else PolicyStatus.PROPOSED


@dataclass
class BatchOutcome:
    received: int = 0
    duplicates: int = 0  # envelope ids handled before (redeliveries)
    new_findings: int = 0
    links: int = 0
    versions: list[tuple[int, int]] = field(default_factory=list)  # (policy id, version)
    new_events: list[SecurityEvent] = field(default_factory=list)
    outbox_rows: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.versions)


Parsed = list[tuple[Envelope, Finding | None]]


def parse_findings(envelopes: Sequence[Envelope]) -> tuple[Parsed, list[tuple[Envelope, str]]]:
    """Validate every payload before touching the database: (usable, malformed with the error).

    Envelopes of other types are usable with None (only recorded as received).
    """
    ok: Parsed = []
    bad: list[tuple[Envelope, str]] = []
    for envelope in envelopes:
        if envelope.type != streams.FINDING_RAISED:
            ok.append((envelope, None))
        elif envelope.version != FINDING_VERSION:
            bad.append((envelope, f"{envelope.type} version {envelope.version} is not supported (only 1)"))
        else:
            try:
                finding = Finding.model_validate(envelope.payload)
            except ValidationError as exc:
                bad.append((envelope, str(exc)))
                continue
            if _has_nul(envelope.payload):
                # valid JSON, but PostgreSQL text and jsonb cannot hold NUL: it would fail the
                # whole batch at INSERT time instead of only this message
                bad.append(
                    (envelope, "the finding contains a NUL character (\\u0000), which cannot be stored")
                )
                continue
            ok.append((envelope, finding))
    return ok, bad


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def _finding_row(envelope: Envelope, finding: Finding, scope: Scope | None) -> dict[str, Any]:
    return {
        "id": finding.id,
        "kind": finding.kind.value,
        "category": finding.category,
        "severity": finding.severity.value,
        "event_time": finding.event_time,
        "family": scope.family if scope else None,
        "namespace": scope.namespace if scope else (finding.workload.namespace or ""),
        "envelope_id": envelope.id,
        "payload": finding.model_dump(mode="json"),
        "ioc": carries_ioc(finding),
    }


async def handle_findings(session: AsyncSession, parsed: Parsed, lc: Lifecycle) -> BatchOutcome:
    """Steps 1-5 of the module docstring for envelopes that passed :func:`parse_findings`."""
    outcome = BatchOutcome(received=len(parsed))
    fresh = await repo.mark_received(session, [e.id for e, _ in parsed])
    outcome.duplicates = len({e.id for e, _ in parsed} - fresh)

    rows: dict[str, dict[str, Any]] = {}
    events: dict[str, SecurityEvent] = {}
    scopes: dict[str, Scope | None] = {}
    causes: dict[str, Envelope] = {}
    for envelope, finding in parsed:
        if finding is None or envelope.id not in fresh or finding.id in rows:
            continue
        event = finding_to_event(finding)
        scope = lc.generator.scope_of(event)
        rows[finding.id] = _finding_row(envelope, finding, scope)
        events[finding.id], scopes[finding.id], causes[finding.id] = event, scope, envelope
    inserted = await repo.insert_findings(session, list(rows.values())) if rows else set()
    outcome.new_findings = len(inserted)
    outcome.new_events = [events[i] for i in sorted(inserted)]

    by_scope: dict[Scope, list[str]] = defaultdict(list)
    links: list[dict[str, Any]] = []
    ioc_new = [i for i in sorted(inserted) if rows[i]["ioc"]] if lc.ioc_blocklist else []
    unmapped_iocs: list[str] = []  # linked to the blocklist once it is generated
    for finding_id in sorted(inserted):
        scope = scopes[finding_id]
        if scope is None and rows[finding_id]["ioc"] and lc.ioc_blocklist:
            unmapped_iocs.append(finding_id)
        elif scope is None:
            links.append(_link(finding_id, None, LinkOutcome.UNMAPPED, _unmapped_reason(events[finding_id])))
        else:
            by_scope[scope].append(finding_id)

    pending: list[Envelope] = []
    await repo.lock_scopes(session, [*by_scope, *([IOC_SCOPE] if ioc_new else [])])
    for scope in sorted(by_scope):
        cause = causes[by_scope[scope][0]]
        scope_events = await _scope_events(session, scope, events, lc.cache)
        result = lc.generator.generate(scope, scope_events)
        covering, why_none = await _record_result(session, result, lc, cause, outcome, pending)
        for finding_id in by_scope[scope]:
            if covering is not None:
                links.append(_link(finding_id, covering.id, LinkOutcome.LINKED, None))
            else:
                links.append(_link(finding_id, None, LinkOutcome.DROPPED, why_none))
    if ioc_new:
        result, covering, why_none = await _regenerate_iocs(
            session, lc, events, causes[ioc_new[0]], outcome, pending
        )
        for finding_id in unmapped_iocs:
            if covering is not None:
                links.append(_link(finding_id, covering.id, LinkOutcome.LINKED, None))
            elif result.refusals:
                links.append(_link(finding_id, None, LinkOutcome.DROPPED, why_none))
            else:
                # an excluded indicator (a private address, a port not on the list) blocks nothing
                reason = f"{_unmapped_reason(events[finding_id])}; its indicators are not blockable"
                links.append(_link(finding_id, None, LinkOutcome.UNMAPPED, reason))
    outcome.links = await repo.link_findings(session, links) if links else 0
    await enqueue(session, outbox, streams.EVENTS, pending)
    outcome.outbox_rows = len(pending)
    return outcome


async def _regenerate_iocs(
    session: AsyncSession,
    lc: Lifecycle,
    batch: dict[str, SecurityEvent],
    cause: Envelope | None,
    outcome: BatchOutcome,
    pending: list[Envelope],
) -> tuple[ScopeResult, PolicyVersionRow | None, str]:
    """The IOC blocklists from every stored indicator finding, AbuseIPDB's low scores left out
    (the caller holds the IOC scope's lock)."""
    ioc_events = await _load_events(session, await repo.ioc_finding_ids(session), batch, lc.cache)
    unblocked: set[str] = set()
    if lc.ioc_reputation_threshold:
        addresses = {str(e.network.ip) for e in ioc_events if e.network and e.network.ip}
        unblocked = await repo.reputation_unblocked(session, addresses, lc.ioc_reputation_threshold)
    result = lc.generator.generate_iocs(ioc_events, unblocked)
    covering, why_none = await _record_result(session, result, lc, cause, outcome, pending)
    return result, covering, why_none


async def refresh_iocs(session: AsyncSession, lc: Lifecycle) -> tuple[BatchOutcome, ScopeResult]:
    """Regenerate the IOC blocklists outside a batch of findings: AbuseIPDB's answers and the feeds'
    listings change on their own, and a clean answer should lift a block without waiting for the
    next verdict. Same lock and documents as a batch; unchanged content makes no version."""
    outcome = BatchOutcome()
    pending: list[Envelope] = []
    await repo.lock_scopes(session, [IOC_SCOPE])
    result, _, _ = await _regenerate_iocs(session, lc, {}, None, outcome, pending)
    await enqueue(session, outbox, streams.EVENTS, pending)
    outcome.outbox_rows = len(pending)
    return outcome, result


def _link(
    finding_id: str, version_id: int | None, outcome: LinkOutcome, reason: str | None
) -> dict[str, Any]:
    # every row carries every key: a multi-row INSERT needs the same columns in each row
    return {
        "finding_id": finding_id,
        "policy_version_id": version_id,
        "outcome": outcome.value,
        "reason": reason,
    }


def _unmapped_reason(event: SecurityEvent) -> str:
    techniques = ", ".join(event.techniques) or "none"
    return no_policy_reason(event.category) or (
        f"no generator answers category {event.category!r} (techniques: {techniques})"
    )


async def _record_result(
    session: AsyncSession,
    result: ScopeResult,
    lc: Lifecycle,
    cause: Envelope | None,
    outcome: BatchOutcome,
    pending: list[Envelope],
) -> tuple[PolicyVersionRow | None, str]:
    """Record a scope's documents; returns the version covering its findings (or why none)."""
    covering: PolicyVersionRow | None = None
    why_none = result.why_none()
    for doc in result.documents:
        version, changes = await _record_document(session, doc, lc, cause)
        pending.extend(changes)
        if version is not None and changes:  # only a new version has changes to announce
            outcome.versions.append((version.policy_id, version.version))
        if doc is result.main:
            covering = version
            if version is None:
                where = f"{doc.namespace}/" if doc.namespace else ""
                why_none = f"{doc.kind}/{where}{doc.name} is a federated policy (placed by the hub)"
    return covering, why_none


async def _scope_events(
    session: AsyncSession, scope: Scope, batch: dict[str, SecurityEvent], cache: EventCache
) -> list[SecurityEvent]:
    return await _load_events(session, await repo.scope_finding_ids(session, scope), batch, cache)


async def _load_events(
    session: AsyncSession, ids: Sequence[str], batch: dict[str, SecurityEvent], cache: EventCache
) -> list[SecurityEvent]:
    """The findings ``ids`` as events: from this batch, the cache, or the table (then cached)."""
    found: list[SecurityEvent] = []
    missing: list[str] = []
    for finding_id in ids:
        event = batch.get(finding_id) or cache.get(finding_id)
        if event is None:
            missing.append(finding_id)
        else:
            found.append(event)
    if missing:
        loaded = [
            finding_to_event(Finding.model_validate(p))
            for p in (await repo.finding_payloads(session, missing)).values()
        ]
        cache.update(loaded)
        found.extend(loaded)
    return found


def policy_ref(policy: PolicyRow) -> dict[str, Any]:
    """The fields of :class:`streams.PolicyRef` every policy event starts with."""
    return {
        "policy_id": policy.id,
        "api_version": policy.api_version,
        "kind": policy.kind,
        "namespace": policy.namespace or None,
        "name": policy.name,
        "family": policy.family,
        "federation": streams.FederationOrigin.from_stored(policy.federation),
    }


def status_envelope(
    policy: PolicyRow,
    from_status: str | None,
    reason: str | None,
    *,
    cluster_id: str,
    cause: Envelope | None = None,
) -> Envelope:
    payload = streams.PolicyStatusChanged(
        **policy_ref(policy),
        version=policy.current_version,
        from_status=from_status,
        to_status=policy.status,
        reason=reason,
    )
    return new_envelope(
        streams.POLICY_STATUS_CHANGED,
        payload,
        source=SOURCE,
        cluster_id=cluster_id,
        occurred_at=datetime.now(UTC),
        correlation_id=cause.correlation_id if cause else None,
        causation_id=cause.id if cause else None,
    )


def _changed_envelope(
    policy: PolicyRow, version: PolicyVersionRow, lc: Lifecycle, cause: Envelope | None
) -> Envelope:
    payload = streams.PolicyChanged(
        **policy_ref(policy),
        version=version.version,
        content_hash=version.content_hash,
        status=policy.status,
        finding_count=version.finding_count,
    )
    return new_envelope(
        streams.POLICY_CHANGED,
        payload,
        source=SOURCE,
        cluster_id=lc.cluster_id,
        occurred_at=datetime.now(UTC),
        correlation_id=cause.correlation_id if cause else None,
        causation_id=cause.id if cause else None,
    )


def _version_row(policy_id: int, number: int, doc: PolicyDocument) -> PolicyVersionRow:
    return PolicyVersionRow(
        policy_id=policy_id,
        version=number,
        content_hash=doc.content_hash,
        body=doc.body,
        yaml=dump_yaml(doc.body),
        filename=doc.filename,
        finding_count=doc.finding_count,
    )


async def _record_document(
    session: AsyncSession, doc: PolicyDocument, lc: Lifecycle, cause: Envelope | None
) -> tuple[PolicyVersionRow | None, list[Envelope]]:
    """The document's version: the current one when the content hash is unchanged (no events),
    else a new version (and the policy reopened for approval when it had moved on); None when a
    federated policy holds the document's identity."""
    namespace = doc.namespace or ""
    policy = await repo.policy_for_update(session, doc.kind, namespace, doc.name)
    if policy is not None and policy.family == FEDERATED_FAMILY:
        # the identity belongs to a policy a federation hub placed: its manifest is not overwritten
        return None, []
    if policy is None:
        status = lc.new_status()
        policy = await repo.add_policy(
            session,
            PolicyRow(
                api_version=str(doc.body.get("apiVersion", "")),
                kind=doc.kind,
                namespace=namespace,
                name=doc.name,
                family=doc.family,
                status=status.value,
                status_reason="auto_apply" if lc.auto_apply else None,
                current_version=1,
            ),
        )
        version = await repo.add_version(session, _version_row(policy.id, 1, doc))
        return version, [
            _changed_envelope(policy, version, lc, cause),
            status_envelope(policy, None, policy.status_reason, cluster_id=lc.cluster_id, cause=cause),
        ]
    current = await repo.version(session, policy.id, policy.current_version)
    if current is not None and current.content_hash == doc.content_hash:
        return current, []
    number = policy.current_version + 1
    version = await repo.add_version(session, _version_row(policy.id, number, doc))
    before = policy.status
    # an approval or a revocation was for earlier content: the new version needs a decision
    # again; auto_apply decides by itself, except for a policy a person revoked
    status = PolicyStatus.PROPOSED if before == PolicyStatus.REVOKED else lc.new_status()
    reason = f"version {number} ({doc.finding_count} findings)"
    await repo.touch(session, policy, current_version=number, status=status.value, status_reason=reason)
    changes = [_changed_envelope(policy, version, lc, cause)]
    if status.value != before:
        changes.append(status_envelope(policy, before, reason, cluster_id=lc.cluster_id, cause=cause))
    return version, changes
