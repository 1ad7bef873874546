from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from qcdr_common.contracts.events.v1 import SecurityEvent, Severity
from qcdr_common.contracts.policies.v1 import PolicyDocument


def make_event(**overrides: object) -> SecurityEvent:
    data: dict[str, object] = {
        "id": "e1",
        "source": "qualys",
        "category": "Crypto_Mining",
        "severity": "high",
        "event_time": datetime(2026, 1, 1, tzinfo=UTC),
    }
    data.update(overrides)
    return SecurityEvent.model_validate(data)


def test_techniques_are_validated_and_sorted() -> None:
    assert make_event(techniques=["T1611", "T1059.004", "T1611"]).techniques == ("T1059.004", "T1611")
    with pytest.raises(ValidationError, match="technique"):
        make_event(techniques=["T15"])


def test_event_time_must_be_aware() -> None:
    with pytest.raises(ValidationError):
        make_event(event_time=datetime(2026, 1, 1))


def test_severity_order() -> None:
    assert Severity.CRITICAL.rank > Severity.HIGH.rank > Severity.LOW.rank


def test_policy_document_hash_is_stable_across_key_order() -> None:
    a = PolicyDocument(
        family="f", filename="a.yaml", body={"kind": "X", "metadata": {"name": "n"}, "spec": {}}
    )
    b = PolicyDocument(
        family="f", filename="a.yaml", body={"spec": {}, "metadata": {"name": "n"}, "kind": "X"}
    )
    assert a.content_hash == b.content_hash
    assert a.name == "n"
    assert a.kind == "X"
    assert a.namespace is None
    assert a.to_yaml().startswith("kind: X")
