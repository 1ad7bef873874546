"""qcdr admission service."""
