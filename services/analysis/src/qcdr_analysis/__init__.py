"""qcdr analysis service."""
