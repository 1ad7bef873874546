"""Versioned payload contracts shared between services (additive changes only within a version)."""
