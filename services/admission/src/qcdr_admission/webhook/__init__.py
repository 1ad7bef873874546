"""The validating webhook: ``POST /validate`` for ``admission.k8s.io/v1`` AdmissionReviews.

- :mod:`.review` parses a review into an :class:`~qcdr_admission.engine.Subject` (or decides
  that nothing needs evaluating), raising :class:`.review.ReviewError` (a 400) for a malformed one;
- :mod:`.response` builds the AdmissionReview answer from the engine's results;
- :mod:`.router` is the route: decode, evaluate, encode, count, queue the decision.
"""
