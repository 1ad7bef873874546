"""Threat-intel blocklists the response service keeps from ingest's indicator set."""
