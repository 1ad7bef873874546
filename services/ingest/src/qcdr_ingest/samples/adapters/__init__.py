"""One module per sample source; each registers exactly one adapter (see ``samples/registry.py``)."""
