"""Redis Streams plumbing: envelope, outbox + relay, producer, consumer loop, DLQ, metrics."""

from qcdr_common.streams.consumer import BatchHandler, Delivery, StreamConsumer, delivery_context
from qcdr_common.streams.dlq import DeadLetter, read_dead_letters, requeue
from qcdr_common.streams.envelope import Envelope, caused_by, new_envelope, uuid7
from qcdr_common.streams.metrics import LagExporter, group_info
from qcdr_common.streams.names import dlq_key, stream_key
from qcdr_common.streams.outbox import (
    OutboxRelay,
    enqueue,
    mark_for_replay,
    outbox_backlog,
    outbox_table,
    purge_published,
)
from qcdr_common.streams.producer import publish, publish_fields
from qcdr_common.streams.runner import install_signal_handlers, run_until_stopped

__all__ = [
    "BatchHandler",
    "DeadLetter",
    "Delivery",
    "Envelope",
    "LagExporter",
    "OutboxRelay",
    "StreamConsumer",
    "caused_by",
    "delivery_context",
    "dlq_key",
    "enqueue",
    "group_info",
    "install_signal_handlers",
    "mark_for_replay",
    "new_envelope",
    "outbox_backlog",
    "outbox_table",
    "publish",
    "publish_fields",
    "purge_published",
    "read_dead_letters",
    "requeue",
    "run_until_stopped",
    "stream_key",
    "uuid7",
]
