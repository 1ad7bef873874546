"""Streams of the federation service (names without the configurable key prefix)."""

POLICIES = "federation:policies"
PRODUCES = (POLICIES,)
CONSUMES: tuple[str, ...] = ()
