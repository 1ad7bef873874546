"""qcdr ingest service."""
