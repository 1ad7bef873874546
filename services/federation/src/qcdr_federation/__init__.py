"""qcdr federation service."""
