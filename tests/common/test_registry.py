import pytest
from qcdr_common.registry import DuplicateRegistrationError, Registry


def test_registry_keeps_order_and_rejects_duplicates() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1, "mod_a")
    reg.add("b", 2, "mod_b")
    assert reg.names() == ["a", "b"]
    assert reg.get("b") == 2
    with pytest.raises(DuplicateRegistrationError, match="mod_a and mod_c"):
        reg.add("a", 3, "mod_c")
    with pytest.raises(KeyError, match="known: a, b"):
        reg.get("zzz")
