"""Streams of the response service (names without the configurable key prefix)."""

EVENTS = "response:events"
PRODUCES = (EVENTS,)
CONSUMES = ("analysis:findings", "federation:policies")
