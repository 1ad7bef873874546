"""The stream entry point of ``federation:policies``: one transaction per message.

Unlike findings, placements are not micro-batched into one transaction: each may call the
cluster (server-side apply, delete) while holding its policy's row lock, and there are few of
them. A message's effects and its envelope id commit together, so a redelivery is skipped; the
consumer acknowledges the batch only after every message in it committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pydantic import ValidationError
from qcdr_common.contracts.federation.v1 import PolicyPlaced, PolicyRemoved
from qcdr_common.logging import get_logger
from qcdr_common.streams.consumer import Delivery, delivery_context
from qcdr_common.streams.envelope import Envelope
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_response import streams
from qcdr_response.federation.metrics import MESSAGES, REJECTIONS
from qcdr_response.federation.service import Federation, Handled, Result, handle

log = get_logger(__name__)

MESSAGE_VERSION = 1
_MODELS: dict[str, type[PolicyPlaced] | type[PolicyRemoved]] = {
    streams.FEDERATION_POLICY_PLACED: PolicyPlaced,
    streams.FEDERATION_POLICY_REMOVED: PolicyRemoved,
}


class MalformedPolicyMessageError(ValueError):
    """A message that can never be handled (it ends in the dead-letter stream)."""


def parse(envelope: Envelope) -> PolicyPlaced | PolicyRemoved | None:
    """The message's payload; ``None`` for other types (recorded as received, nothing else)."""
    model = _MODELS.get(envelope.type)
    if model is None:
        return None
    if envelope.version != MESSAGE_VERSION:
        raise MalformedPolicyMessageError(
            f"{envelope.type} version {envelope.version} is not supported (only {MESSAGE_VERSION})"
        )
    try:
        return model.model_validate(envelope.payload)
    except ValidationError as exc:
        raise MalformedPolicyMessageError(f"{envelope.type}: {exc}") from None


@dataclass
class BatchResult:
    handled: list[Handled] = field(default_factory=list)

    @property
    def outbox_rows(self) -> int:
        return sum(h.outbox_rows for h in self.handled)

    @property
    def changed(self) -> bool:
        return any(h.changed for h in self.handled)


AfterCommit = Callable[[BatchResult], Awaitable[None]]


class FederatedPoliciesHandler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        federation: Federation,
        *,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self.sessions = sessions
        self.federation = federation
        self.after_commit = after_commit

    async def __call__(self, deliveries: list[Delivery]) -> None:
        batch = BatchResult()
        malformed: list[tuple[Envelope, str]] = []
        try:
            for delivery in deliveries:
                with delivery_context(delivery):
                    try:
                        message = parse(delivery.envelope)
                    except MalformedPolicyMessageError as exc:
                        malformed.append((delivery.envelope, str(exc)))
                        continue
                    async with self.sessions.begin() as session:
                        handled = await handle(session, delivery.envelope, message, self.federation)
                    batch.handled.append(handled)
                    _count(delivery.envelope, handled)
        finally:
            # what committed before a failure still needs its files and its relay wake-up
            await self._after(batch)
        if malformed:
            envelope, error = malformed[0]
            more = f" (and {len(malformed) - 1} more)" if len(malformed) > 1 else ""
            raise MalformedPolicyMessageError(f"envelope {envelope.id}{more}: {error}")

    async def _after(self, batch: BatchResult) -> None:
        if self.after_commit is None or not batch.handled:
            return
        try:
            await self.after_commit(batch)
        except Exception:  # committed already: a redelivery would only be skipped
            log.exception("after-commit step failed (it runs again with the next batch and at start-up)")


def _count(envelope: Envelope, handled: Handled) -> None:
    message = envelope.type.rsplit("_", 1)[-1] if envelope.type in _MODELS else "other"
    MESSAGES.labels(message=message, result=handled.result.value).inc()
    if handled.rejected is not None:
        REJECTIONS.labels(stage=handled.rejected).inc()
    if handled.result is not Result.DUPLICATE:
        log.info(
            "federated policy message handled",
            result=handled.result.value,
            policy_id=handled.policy_id,
            rejected=handled.rejected,
        )
