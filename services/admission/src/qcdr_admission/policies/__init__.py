"""Admission policies: the model (:mod:`.model`), one module per check (:mod:`.checks`), scoping,
the compiled engine (:mod:`.evaluate`), the built-ins (:mod:`.defaults`), storage and the
``/v1/admission/policies`` API, live reload (:mod:`.reload`) and the image-status cache. See
``docs/ADMISSION-POLICIES.md``."""
