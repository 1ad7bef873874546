"""Workload resource samples: ``POST /v1/metrics/{source}`` -> ``ingest:samples``.

Samples are published, not stored: analysis only needs them live (they feed its rolling
windows), so there is no table to replay them from and a Redis wipe costs one window of resource
data. They still go through the outbox, so a crash between the commit and the XADD loses nothing
that was acknowledged with a 202.
"""
