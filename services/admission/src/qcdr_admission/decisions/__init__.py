"""Admission decisions: stored in micro-batches off the request path (:mod:`.writer`), listed
through ``GET /v1/admission/decisions`` (:mod:`.router`), and published as
``admission.decision_made`` events through the outbox (:mod:`.event`)."""
