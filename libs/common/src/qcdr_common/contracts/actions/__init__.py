"""Response actions: what to do to which target, and what happened (contract v1)."""
