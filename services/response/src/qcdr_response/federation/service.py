"""The rules for placed and removed federated policies: one message in, one policy's state out.

Everything runs in the caller's transaction and only flushes (the handler commits once per
message). Order of work for ``federation.policy_placed``:

1. record the envelope id (a redelivery stops here);
2. validate the manifest (``validation``); refused → ``response.policy_rejected`` (validation),
   nothing stored;
3. under an advisory lock on the identity (kind, namespace, name), find its policy: one that did
   not come from the hub, or that another federated policy still holds, is left alone (Karmada's
   default conflict resolution, Abort) → rejected (conflict);
4. an older generation than the one stored is ignored, the same one with the same hash changes
   nothing; otherwise the policy is created, or gets a new version when the content hash changed,
   and its origin (hub policy id, generation, content hash) is stored with it;
5. enforced → approved, and applied at once when a cluster is configured (a refusal leaves it
   approved → rejected (apply); the local API's apply, or the next placement, retries it); not
   enforced → proposed, for a local operator to approve.

``federation.policy_removed`` revokes the policy (and deletes it from the cluster when applied).
Events go to the outbox in the order they happen, before a cluster call adds its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from qcdr_common.contracts.federation.v1 import PolicyPlaced, PolicyRemoved
from qcdr_common.contracts.policies.v1 import PolicyDocument, dump_yaml
from qcdr_common.logging import get_logger
from qcdr_common.streams.envelope import Envelope
from qcdr_common.streams.outbox import enqueue
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_response import streams
from qcdr_response.db.models import outbox
from qcdr_response.federation import events
from qcdr_response.federation import repository as fed_repo
from qcdr_response.federation.validation import Identity, has_nul, validate
from qcdr_response.lifecycle import repository as repo
from qcdr_response.lifecycle import transitions
from qcdr_response.lifecycle.cluster import ClusterGateway
from qcdr_response.lifecycle.models import FEDERATED_FAMILY, PolicyRow, PolicyStatus, PolicyVersionRow
from qcdr_response.lifecycle.service import status_envelope
from qcdr_response.policies.generate import Checker

log = get_logger(__name__)

P = PolicyStatus


@dataclass
class Federation:
    """What the rules need besides the session."""

    checker: Checker
    cluster_id: str
    cluster: ClusterGateway | None = None


class Result(StrEnum):
    CREATED = "created"
    UPDATED = "updated"  # a new version, or the same content under a new placement
    UNCHANGED = "unchanged"  # the generation and content already held
    STALE = "stale"  # an older generation than the one held
    REVOKED = "revoked"
    IGNORED = "ignored"  # removal of a policy not held here, or another message type
    REJECTED = "rejected"
    DUPLICATE = "duplicate"  # the envelope was handled before


@dataclass
class Handled:
    result: Result
    policy_id: int | None = None
    rejected: events.Stage | None = None  # set when a rejection was announced (also after CREATED)
    reason: str | None = None
    outbox_rows: int = 0

    @property
    def changed(self) -> bool:
        """Whether a policy's content or status may have changed (files to rewrite)."""
        return self.result in (Result.CREATED, Result.UPDATED, Result.REVOKED, Result.UNCHANGED)


class _Context:
    """One message's cause, identity and the events it produced so far."""

    def __init__(self, session: AsyncSession, fed: Federation, cause: Envelope, identity: Identity) -> None:
        self.session = session
        self.fed = fed
        self.cause = cause
        self.identity = identity
        self.outbox_rows = 0

    async def emit(self, *envelopes: Envelope) -> None:
        await enqueue(self.session, outbox, streams.EVENTS, list(envelopes))
        self.outbox_rows += len(envelopes)

    async def reject(
        self, origin: streams.FederationOrigin, stage: events.Stage, reason: str, result: Result, **kw: Any
    ) -> Handled:
        log.warning(
            "federated policy rejected",
            stage=stage,
            identity=str(self.identity),
            federated_policy=origin.policy_id,
            generation=origin.generation,
            reason=reason,
        )
        await self.emit(
            events.rejected_envelope(
                self.identity, origin, reason, stage, cluster_id=self.fed.cluster_id, cause=self.cause
            )
        )
        return Handled(result, rejected=stage, reason=reason, outbox_rows=self.outbox_rows, **kw)


async def handle(
    session: AsyncSession, envelope: Envelope, message: PolicyPlaced | PolicyRemoved | None, fed: Federation
) -> Handled:
    """One message of ``federation:policies`` (``None``: a type this service does not handle)."""
    if not await repo.mark_received(session, [envelope.id]):
        return Handled(Result.DUPLICATE)
    if isinstance(message, PolicyPlaced):
        return await _placed(session, envelope, message, fed)
    if isinstance(message, PolicyRemoved):
        return await _removed(session, envelope, message, fed)
    return Handled(Result.IGNORED)


def _origin(placed: PolicyPlaced) -> dict[str, Any]:
    """What ``response_policies.federation`` keeps: the three keys events carry, and what the
    rules need later (whether the hub enforces it, whether it removed it)."""
    return {
        "policy_id": placed.policy_id,
        "name": placed.name,
        "generation": placed.generation,
        "content_hash": placed.content_hash,
        "enforce": placed.enforce,
        "removed": False,
        "sequence": placed.sequence,
    }


def _wire(placed: PolicyPlaced) -> streams.FederationOrigin:
    return streams.FederationOrigin(
        policy_id=placed.policy_id, generation=placed.generation, content_hash=placed.content_hash
    )


def filename(identity: Identity) -> str:
    """One file per object name, beside the generated ones (objects sharing a name share it)."""
    return f"cdr-federated-{identity.name}.yaml"


async def _placed(
    session: AsyncSession, envelope: Envelope, placed: PolicyPlaced, fed: Federation
) -> Handled:
    identity = Identity.of(placed.manifest)
    ctx = _Context(session, fed, envelope, identity)
    origin = _wire(placed)
    problems = validate(placed.manifest, fed.checker)
    if not problems and has_nul(placed.model_dump(mode="json")):
        problems = ["the placement contains a NUL character (\\u0000), which cannot be stored"]
    if problems:
        return await ctx.reject(origin, "validation", "; ".join(problems), Result.REJECTED)

    await fed_repo.lock_identity(session, identity)
    policy = await repo.policy_for_update(session, identity.kind, identity.namespace_key, identity.name)
    if placed.sequence is not None:
        # a message the spoke sent after this one was handled first (another replica, a dead
        # replica's entry claimed late): this placement is history
        held = (policy.federation or {}) if policy is not None else {}
        newer = (
            int(held["sequence"]) if held.get("policy_id") == placed.policy_id and held.get("sequence") else 0
        )
        removal = await fed_repo.removed_after(session, identity, placed.policy_id) or 0
        if max(newer, removal) > placed.sequence:
            log.info(
                "federated placement older than a message already handled ignored",
                identity=str(identity),
                sequence=placed.sequence,
                handled=max(newer, removal),
            )
            return Handled(Result.STALE, policy.id if policy is not None else None)
    if policy is not None:
        conflict = _conflict(policy, placed, identity)
        if conflict is not None:
            return await ctx.reject(origin, "conflict", conflict, Result.REJECTED, policy_id=policy.id)
        held = policy.federation or {}
        if held.get("policy_id") == placed.policy_id:
            if placed.generation < int(held["generation"]):
                log.info(
                    "older federated placement ignored",
                    identity=str(identity),
                    generation=placed.generation,
                    held=held["generation"],
                )
                return Handled(Result.STALE, policy.id)
            same = placed.generation == held["generation"] and placed.content_hash == held["content_hash"]
            if same and not held.get("removed"):
                # nothing new; an enforced policy the cluster refused before is tried again
                return await _enforce(ctx, policy, placed, Result.UNCHANGED)

    doc = PolicyDocument(family=FEDERATED_FAMILY, filename=filename(identity), body=dict(placed.manifest))
    if policy is None:
        policy = await _create(ctx, placed, doc)
        return await _enforce(ctx, policy, placed, Result.CREATED)
    await _update(ctx, policy, placed, doc)
    return await _enforce(ctx, policy, placed, Result.UPDATED)


def _conflict(policy: PolicyRow, placed: PolicyPlaced, identity: Identity) -> str | None:
    if policy.family != FEDERATED_FAMILY:
        return (
            f"{identity} already exists here as policy {policy.id} of family {policy.family!r} "
            f"({policy.status}), which did not come from the hub; it is left as it is "
            "(give the object another name in the federated policy)"
        )
    holder = (policy.federation or {}).get("policy_id")
    if holder != placed.policy_id and policy.status != P.REVOKED:
        return (
            f"{identity} is already held by federated policy {holder} (policy {policy.id} here, "
            f"{policy.status}); two federated policies cannot place the same object"
        )
    return None


def _version_row(policy_id: int, number: int, doc: PolicyDocument) -> PolicyVersionRow:
    return PolicyVersionRow(
        policy_id=policy_id,
        version=number,
        content_hash=doc.content_hash,
        body=doc.body,
        yaml=dump_yaml(doc.body),
        filename=doc.filename,
        finding_count=0,
    )


def _status_for(placed: PolicyPlaced) -> tuple[PolicyStatus, str]:
    where = f"federated policy {placed.policy_id} ({placed.name}), generation {placed.generation}"
    if placed.enforce:
        return P.APPROVED, f"approved: enforced by the federation hub ({where})"
    return P.PROPOSED, f"proposed by the federation hub ({where}); approve it here to apply it"


async def _create(ctx: _Context, placed: PolicyPlaced, doc: PolicyDocument) -> PolicyRow:
    status, reason = _status_for(placed)
    identity = ctx.identity
    policy = await repo.add_policy(
        ctx.session,
        PolicyRow(
            api_version=identity.api_version,
            kind=identity.kind,
            namespace=identity.namespace_key,
            name=identity.name,
            family=FEDERATED_FAMILY,
            status=status.value,
            status_reason=reason,
            current_version=1,
            federation=_origin(placed),
        ),
    )
    version = await repo.add_version(ctx.session, _version_row(policy.id, 1, doc))
    cluster_id = ctx.fed.cluster_id
    await ctx.emit(
        events.changed_envelope(policy, version, cluster_id=cluster_id, cause=ctx.cause),
        status_envelope(policy, None, reason, cluster_id=cluster_id, cause=ctx.cause),
    )
    return policy


async def _update(ctx: _Context, policy: PolicyRow, placed: PolicyPlaced, doc: PolicyDocument) -> None:
    """A new placement of a held policy: new content → a new version; the origin always moves."""
    held = policy.federation or {}
    before = PolicyStatus(policy.status)
    # placed again after the hub removed it (or by another federated policy after a removal):
    # a new decision of the hub, not something a person here revoked
    taken_over = held.get("policy_id") != placed.policy_id
    reopened = before is P.REVOKED and (bool(held.get("removed")) or taken_over)
    current = await repo.version(ctx.session, policy.id, policy.current_version)
    new_content = current is None or current.content_hash != doc.content_hash
    target, reason = _status_for(placed)
    if new_content or reopened:
        # as for generated policies: a policy a person revoked here waits for a person again
        status = P.PROPOSED if before is P.REVOKED and not reopened else target
        if status is not target:
            reason = (
                f"version from federated policy {placed.policy_id}, generation {placed.generation}; "
                "it was revoked here, so it waits for approval"
            )
    else:
        status = P.APPROVED if placed.enforce and before is P.PROPOSED else before
    values: dict[str, Any] = {"federation": _origin(placed)}
    version = current
    if new_content:
        number = policy.current_version + 1
        version = await repo.add_version(ctx.session, _version_row(policy.id, number, doc))
        values["current_version"] = number
    if new_content or status is not before:
        values.update(status=status.value, status_reason=reason)
    await repo.touch(ctx.session, policy, **values)
    assert version is not None  # new_content when there was no current version
    cluster_id = ctx.fed.cluster_id
    out = [events.changed_envelope(policy, version, cluster_id=cluster_id, cause=ctx.cause)]
    if status is not before:
        out.append(status_envelope(policy, before.value, reason, cluster_id=cluster_id, cause=ctx.cause))
    await ctx.emit(*out)


async def _enforce(ctx: _Context, policy: PolicyRow, placed: PolicyPlaced, result: Result) -> Handled:
    """Apply an enforced, approved policy whose current version is not in the cluster yet."""
    fed = ctx.fed
    due = (
        placed.enforce
        and fed.cluster is not None
        and policy.status == P.APPROVED
        and policy.applied_version != policy.current_version
    )
    if due:
        try:
            await transitions.apply(
                ctx.session,
                policy.id,
                fed.cluster,
                cluster_id=fed.cluster_id,
                reason="applied: enforced by the federation hub",
            )
        except (transitions.ClusterFailedError, transitions.TransitionError) as exc:
            return await ctx.reject(_wire(placed), "apply", exc.reason, result, policy_id=policy.id)
        ctx.outbox_rows += 1  # the transition's own status event
    return Handled(result, policy.id, outbox_rows=ctx.outbox_rows)


async def _removed(
    session: AsyncSession, envelope: Envelope, removed: PolicyRemoved, fed: Federation
) -> Handled:
    identity = Identity(removed.api_version, removed.kind, removed.namespace, removed.manifest_name)
    if has_nul(removed.model_dump(mode="json")):
        return Handled(Result.IGNORED)  # no such policy can have been stored
    await fed_repo.lock_identity(session, identity)
    policy = await repo.policy_for_update(session, identity.kind, identity.namespace_key, identity.name)
    held = (policy.federation if policy is not None else None) or {}
    if policy is None or policy.family != FEDERATED_FAMILY or held.get("policy_id") != removed.policy_id:
        if removed.sequence is not None:
            # its placement may still come (handled late by another replica): remembered, so
            # that placement is known to be stale and the removed policy is never applied
            await fed_repo.remember_removal(session, identity, removed.policy_id, removed.sequence)
        log.info("removal of a federated policy not held here ignored", identity=str(identity))
        return Handled(Result.IGNORED, policy.id if policy is not None else None)
    if removed.sequence is not None and held.get("sequence") and int(held["sequence"]) > removed.sequence:
        # the spoke placed it again after this removal, and that placement was handled first
        log.info("federated removal older than the placement held ignored", identity=str(identity))
        return Handled(Result.STALE, policy.id)
    origin = {**held, "removed": True}
    if removed.sequence is not None:
        origin["sequence"] = removed.sequence
    if policy.status == P.REVOKED:
        await repo.touch(session, policy, federation=origin)
        return Handled(Result.IGNORED, policy.id)
    ctx = _Context(session, fed, envelope, identity)
    reason = (
        f"revoked: the federation hub removed federated policy {removed.policy_id} ({removed.name}) "
        "from this cluster"
    )
    try:
        await transitions.revoke(session, policy.id, fed.cluster, cluster_id=fed.cluster_id, reason=reason)
    except (transitions.ClusterFailedError, transitions.TransitionError) as exc:
        wire = streams.FederationOrigin.from_stored(held)
        assert wire is not None
        return await ctx.reject(
            wire, "apply", f"could not remove it: {exc.reason}", Result.REJECTED, policy_id=policy.id
        )
    await repo.touch(session, policy, federation=origin)
    return Handled(Result.REVOKED, policy.id, outbox_rows=1)  # the transition's status event
