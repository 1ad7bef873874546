"""Findings: detection over consumed events, storage, publication and the read API."""
