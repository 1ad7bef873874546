"""Qualys CDR findings: client, normalizer, and a local API double.

* :mod:`.client` - ``QualysCdrClient.fetch_findings`` (paging, window splitting, retries, re-login)
* :mod:`.normalize` - ``normalize_all`` / ``normalize_finding`` -> ``SecurityEvent``
* :mod:`.config` - ``QualysSettings`` (original ``QUALYS_*`` names accepted)
* :mod:`.platforms` - platform table and ``resolve_gateway``
* :mod:`.double` - the CDR API double (``serve_double``, ``python -m qcdr_ingest.qualys.double``)
* :mod:`.catalog`, :mod:`.demo_data` - the QCR001-QCR040 catalog and deterministic demo findings

Nothing is re-exported here so that importing the client never pulls in the double's server.
"""
