"""Forwarding this cluster's events (``ingest:events``) and findings (``analysis:findings``) to the
hub, in batches of up to ``forward_batch``, at least once: the hub keeps each item once by its id.

Both run as consumers of group ``federation``. The consumer dead-letters a message after
``stream_max_deliveries`` failed attempts, so a hub that is away must not count as a failure: the
handler waits and retries (with back-off) until the hub takes the batch or the agent stops. Only a
4xx saying that the batch itself is bad fails it (the consumer then retries its messages one by
one, so one bad item does not sink the others). Items the hub refuses one by one come back in the
ack: they are logged and counted, never retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.contracts.federation.v1 import ForwardBatch, ForwardKind
from qcdr_common.logging import get_logger
from qcdr_common.streams.consumer import Delivery, StreamConsumer

from qcdr_federation.backoff import Backoff, StoppedError, sleep_unless_stopped, unless_stopped
from qcdr_federation.settings import FederationSettings
from qcdr_federation.spoke.client import HubClient, HubError, HubErrorKind
from qcdr_federation.spoke.metrics import FORWARD_REJECTED, FORWARDED
from qcdr_federation.spoke.registration import Registrar
from qcdr_federation.spoke.runtime import AgentState

log = get_logger(__name__)

GROUP = "federation"
STREAMS = {ForwardKind.EVENTS: "ingest:events", ForwardKind.FINDINGS: "analysis:findings"}
TYPES = {ForwardKind.EVENTS: "ingest.event_observed", ForwardKind.FINDINGS: "analysis.finding_raised"}
# statuses with which the hub says the batch itself is wrong (not the hub, not the credential)
BAD_BATCH = frozenset({400, 413, 422})
_LOGGED_REJECTIONS = 5


class StopForwarding(BaseException):
    """The agent stops while the hub is away. A BaseException on purpose: the consumer counts any
    Exception from a handler as a failed delivery (and dead-letters after a few), whereas this
    must leave the batch pending, unacknowledged, for the next start."""


class BatchRefusedError(Exception):
    """The hub refused the batch as a whole (400/413/422)."""


class Forwarder:
    def __init__(
        self,
        kind: ForwardKind,
        settings: FederationSettings,
        client: HubClient,
        registrar: Registrar,
        state: AgentState,
        stop: asyncio.Event,
    ) -> None:
        self.kind = kind
        self.settings = settings
        self.client = client
        self.registrar = registrar
        self.state = state
        self.stop = stop
        self.type = TYPES[kind]
        self.min_rank = settings.forward_min_severity.rank

    def _wanted(self, delivery: Delivery) -> bool:
        envelope = delivery.envelope
        if envelope.type != self.type:
            return False
        if self.kind is ForwardKind.EVENTS and self.min_rank > 0:
            try:
                rank = Severity(str(envelope.payload.get("severity"))).rank
            except ValueError:
                return True  # not ours to judge: the hub validates and refuses it with a reason
            if rank < self.min_rank:
                self.state.counts["events_filtered"] += 1
                return False
        return True

    async def handle(self, deliveries: list[Delivery]) -> None:
        items: list[dict[str, Any]] = [d.envelope.payload for d in deliveries if self._wanted(d)]
        size = self.settings.forward_batch
        for start in range(0, len(items), size):
            await self.send(items[start : start + size])

    async def send(self, items: Sequence[dict[str, Any]]) -> None:
        """Forward one batch, waiting out a hub that is away; raises :class:`BatchRefusedError` when
        the hub refuses the batch itself, :class:`StopForwarding` when the agent stops first."""
        batch = ForwardBatch(kind=self.kind, items=list(items))
        backoff = Backoff(self.settings.retry_max_s)
        while True:
            if not await self.registrar.wait_ready(self.stop):
                raise StopForwarding
            try:
                ack = await unless_stopped(self.client.forward(batch), self.stop)
            except StoppedError:
                raise StopForwarding from None
            except HubError as exc:
                self.registrar.failed(exc)
                if exc.kind is HubErrorKind.CLIENT and exc.status in BAD_BATCH:
                    log.warning(
                        "federation_forward_refused",
                        kind=self.kind.value,
                        items=len(items),
                        error=exc.describe(),
                    )
                    raise BatchRefusedError(exc.describe()) from None
                log.warning(
                    "federation_forward_waiting", kind=self.kind.value, items=len(items), error=exc.describe()
                )
                if await sleep_unless_stopped(self.stop, backoff.next_delay()):
                    raise StopForwarding from None
                continue
            self.state.contact_ok()
            self._book(ack.accepted, ack.duplicates, [(r.index, r.reason) for r in ack.rejected], items)
            return

    def _book(
        self, accepted: int, duplicates: int, rejected: list[tuple[int, str]], items: Sequence[dict[str, Any]]
    ) -> None:
        kind = self.kind.value
        taken = accepted + duplicates
        FORWARDED.labels(kind=kind).inc(taken)
        self.state.counts[f"{kind}_forwarded"] += taken
        if rejected:
            FORWARD_REJECTED.labels(kind=kind).inc(len(rejected))
            self.state.counts[f"{kind}_rejected"] += len(rejected)
            for index, reason in rejected[:_LOGGED_REJECTIONS]:
                item = items[index] if 0 <= index < len(items) else {}
                log.warning(
                    "federation_forward_item_rejected",
                    kind=kind,
                    index=index,
                    item_id=item.get("id"),
                    reason=reason,
                )
            if len(rejected) > _LOGGED_REJECTIONS:
                log.warning(
                    "federation_forward_items_rejected", kind=kind, more=len(rejected) - _LOGGED_REJECTIONS
                )

    def consumer(self, redis: Any) -> StreamConsumer:
        return StreamConsumer.from_settings(
            redis, self.settings, stream=STREAMS[self.kind], group=GROUP, handler=self.handle
        )

    async def run(self, redis: Any) -> None:
        try:
            await self.consumer(redis).run(self.stop)
        except StopForwarding:
            log.info("federation_forwarder_stopped_waiting", kind=self.kind.value)
