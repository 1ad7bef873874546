"""qcdr response service."""
