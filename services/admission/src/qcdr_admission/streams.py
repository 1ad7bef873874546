"""Streams of the admission service (names without the configurable key prefix)."""

DECISIONS = "admission:decisions"
PRODUCES = (DECISIONS,)
CONSUMES = ("analysis:findings",)
