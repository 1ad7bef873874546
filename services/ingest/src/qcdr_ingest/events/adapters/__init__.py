"""One module per event source; each registers exactly one adapter (see ``events/registry.py``)."""
