"""``ingest_outbox``: the envelopes ingest publishes, written with the state they announce.

The table shape is the common one (:func:`qcdr_common.streams.outbox_table`); the relay
(:class:`qcdr_common.streams.OutboxRelay`) publishes its rows to ``ingest:events`` and
``ingest:intel``.
"""

from __future__ import annotations

from qcdr_common.streams import outbox_table

from qcdr_ingest.db.base import IngestBase

OUTBOX = outbox_table(IngestBase.metadata, "ingest")
