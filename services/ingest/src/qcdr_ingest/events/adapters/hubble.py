"""Hubble DNS flows (``l7.dns``), as ``hubble observe -o json`` prints them (see
:mod:`qcdr_ingest.dns.queries`)."""

from __future__ import annotations

from qcdr_ingest.dns.queries import convert_hubble
from qcdr_ingest.events.registry import register

register(
    "hubble", "Hubble DNS flows (l7.dns, as hubble observe -o json prints them)", convert_hubble, __name__
)
