"""The rules of sample intake, without HTTP: decode the body, chunk what was accepted, queue it.

Samples are **published, not stored**: analysis only needs them live (they feed its rolling
windows), so there is no samples table and nothing to replay; a Redis wipe costs one window of
resource data. The envelopes still go through the transactional outbox: a 202 means they are
committed for publication, and a crash between that commit and the relay's XADD loses nothing.

Accepted samples are grouped by cluster (an envelope's ``cluster_id`` is its samples' cluster),
ordered by time and cut into ``ingest.samples_received`` envelopes of at most
``MAX_SAMPLES_PER_ENVELOPE`` samples. An envelope id is derived from its payload and its newest
sample's time, so a client that re-sends the same batch (a retry after a timeout) queues the same
ids again, which the outbox skips and consumers deduplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from qcdr_common.contracts.samples.v1 import MAX_SAMPLES_PER_ENVELOPE, WorkloadSample, WorkloadSamples
from qcdr_common.streams import Envelope, enqueue, new_envelope
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_ingest.db.outbox import OUTBOX
from qcdr_ingest.events.service import envelope_id, millis
from qcdr_ingest.streams import SAMPLES, SAMPLES_RECEIVED

ENVELOPE_VERSION = 1


class BodyError(ValueError):
    """The body is not JSON at all; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(f"body is not valid JSON: {str(exc).split(':', 1)[0][:120]}") from None


def chunks(
    samples: Iterable[WorkloadSample], size: int = MAX_SAMPLES_PER_ENVELOPE
) -> list[list[WorkloadSample]]:
    """Per cluster (in order of first appearance), oldest first, at most ``size`` per chunk."""
    by_cluster: dict[str, list[WorkloadSample]] = {}
    for sample in samples:
        by_cluster.setdefault(sample.workload.cluster or "", []).append(sample)
    out: list[list[WorkloadSample]] = []
    for group in by_cluster.values():
        group.sort(key=lambda s: s.time)
        out.extend(group[start : start + size] for start in range(0, len(group), size))
    return out


def envelopes(
    source: str, samples: Iterable[WorkloadSample], *, service: str, default_cluster: str
) -> list[Envelope]:
    out: list[Envelope] = []
    for chunk in chunks(samples):
        payload = WorkloadSamples(source=source, samples=tuple(chunk))
        newest = chunk[-1].time
        key = hashlib.blake2b(payload.model_dump_json().encode(), digest_size=16).hexdigest()
        out.append(
            new_envelope(
                SAMPLES_RECEIVED,
                payload,
                source=service,
                cluster_id=chunk[0].workload.cluster or default_cluster,
                occurred_at=newest,
                version=ENVELOPE_VERSION,
                id=envelope_id(key, millis(newest)),
            )
        )
    return out


async def queue(session: AsyncSession, queued: Sequence[Envelope]) -> None:
    """Write the envelopes to the outbox (flush only: the caller commits)."""
    await enqueue(session, OUTBOX, SAMPLES, queued)
