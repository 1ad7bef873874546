"""The web console under ``/ui``: server-rendered pages over the suite's own APIs, signed in with an
API token exchanged for a session cookie (see :mod:`qcdr_federation.console.install`)."""
