"""ScopeGenerator memoizes a family per (category, techniques); the category of a Falco or Qualys
finding is its rule name, which whoever writes rules or holds an ingest token chooses, so the memo
is bounded (an LRU) and still answers as routing does."""

from __future__ import annotations

from datetime import UTC, datetime

from qcdr_common.contracts.findings.v1 import Finding
from qcdr_response.lifecycle.generation import ROUTES_REMEMBERED, ScopeGenerator, finding_to_event
from qcdr_response.policies.config import GenerationConfig


def _source_finding(n: int, category: str | None = None) -> Finding:
    return Finding.model_validate(
        {
            "id": f"source:{n}",
            "kind": "source",
            "detector": "source",
            "category": category or f"Custom rule {n:06d}",
            "severity": "high",
            "event_time": datetime(2026, 3, 1, 12, tzinfo=UTC),
            "workload": {"namespace": "shop", "pod": f"api-{n}"},
            "techniques": [f"T{1000 + n % 9000}"],
        }
    )


def test_the_route_memo_is_bounded_and_still_routes() -> None:
    gen = ScopeGenerator(GenerationConfig())
    shell = finding_to_event(_source_finding(0, "Reverse_Shell"))
    family = gen.family_of(shell)
    for i in range(1, 2 * ROUTES_REMEMBERED):
        gen.scope_of(finding_to_event(_source_finding(i)))
    assert len(gen._routes) == ROUTES_REMEMBERED
    assert gen.family_of(shell) == family  # routed again after it left the memo
    assert family is not None
