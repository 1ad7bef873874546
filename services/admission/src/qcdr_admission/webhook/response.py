"""Building the AdmissionReview answer from the engine's results.

- enforce-mode results deny: ``status`` {code 403, reason Forbidden, message naming every violated
  check}, like PSA's ``violates PodSecurity "restricted:latest": ...``;
- warn-mode results become ``warnings`` (the API server relays them to the client, e.g. kubectl):
  one per result, each cut to :data:`MAX_WARNING` characters and at most :data:`MAX_WARNINGS` of
  them, since the API server truncates long or many warnings anyway (4 KiB in total);
- audit-mode results become ``auditAnnotations`` (the API server prefixes each key with the
  webhook's name and writes them into the audit log), one key per source.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from qcdr_admission.engine import Mode, Result
from qcdr_admission.webhook.review import API_VERSION, KIND

MAX_WARNING = 256  # characters per warning (Kubernetes: "longer warnings may be truncated")
MAX_WARNINGS = 12  # 12 x 256 < 4 KiB, the API server's total for one response
MAX_MESSAGE = 4000  # status.message
MAX_ANNOTATION_VALUE = 1024
_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _source_label(source: str) -> str:
    if source == "pss":
        return "PodSecurity"
    if source.startswith("policy:"):
        return f'policy "{source[7:]}"'
    return source


def deny_message(results: Sequence[Result]) -> str:
    """``violates PodSecurity: privileged (...), hostNamespaces (...); violates policy "x": ...``:
    every enforce-mode check, grouped by source in the order the engine returned them."""
    groups: dict[str, list[str]] = {}
    for r in results:
        if r.mode is Mode.ENFORCE:
            groups.setdefault(r.source, []).append(f"{r.check} ({r.message})")
    text = "; ".join(f"violates {_source_label(src)}: {', '.join(items)}" for src, items in groups.items())
    if len(text) > MAX_MESSAGE:
        # keep every check's name even when the messages do not fit
        enforced = [r for r in results if r.mode is Mode.ENFORCE]
        names = "; ".join(
            f"violates {_source_label(src)}: {', '.join(r.check for r in enforced if r.source == src)}"
            for src in groups
        )
        text = _cut(names, MAX_MESSAGE)
    return text


def warnings_of(results: Sequence[Result]) -> list[str]:
    out = [
        _cut(f"would violate {_source_label(r.source)}: {r.check}: {r.message}", MAX_WARNING)
        for r in results
        if r.mode is Mode.WARN
    ]
    if len(out) > MAX_WARNINGS:
        rest = len(out) - (MAX_WARNINGS - 1)
        out = [*out[: MAX_WARNINGS - 1], f"... and {rest} more warnings (see the decision log)"]
    return out


def _annotation_key(source: str) -> str:
    key = _KEY_CHARS.sub("-", source.replace(":", ".")).strip("-._") or "audit"
    return key[:63].rstrip("-._")


def audit_annotations(results: Sequence[Result]) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    for r in results:
        if r.mode is Mode.AUDIT:
            out.setdefault(_annotation_key(r.source), []).append(f"{r.check}: {r.message}")
    return {k: _cut("; ".join(v), MAX_ANNOTATION_VALUE) for k, v in out.items()}


def review_response(uid: str, results: Sequence[Result]) -> tuple[bool, bytes]:
    """``(allowed, body)`` of the AdmissionReview answering ``uid``."""
    allowed = True
    has_warn = has_audit = False
    for r in results:
        if r.mode is Mode.ENFORCE:
            allowed = False
        elif r.mode is Mode.WARN:
            has_warn = True
        else:
            has_audit = True
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": deny_message(results)}
    if has_warn:
        response["warnings"] = warnings_of(results)
    if has_audit:
        response["auditAnnotations"] = audit_annotations(results)
    return allowed, orjson.dumps({"apiVersion": API_VERSION, "kind": KIND, "response": response})


def allowed_response(uid: str) -> bytes:
    return orjson.dumps({"apiVersion": API_VERSION, "kind": KIND, "response": {"uid": uid, "allowed": True}})
