"""Streams of the analysis service (names without the configurable key prefix)."""

FINDINGS = "analysis:findings"
PRODUCES = (FINDINGS,)
CONSUMES = ("ingest:events", "ingest:intel")
