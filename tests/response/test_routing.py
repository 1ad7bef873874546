"""Findings reach the right family; the original's routing mistakes (§14.11) do not recur."""

import pytest
from qcdr_response.policies.family import GENERATORS
from qcdr_response.policies.generate import route

from tests.response.factories import make_event

GENS = list(GENERATORS)


@pytest.mark.parametrize(
    ("category", "techniques", "family"),
    [
        ("Cloud_Credentials_Accessed_By_Network_Utility", ["T1552.005"], "cloud-creds"),
        ("Network_Scanning_Utility", ["T1046"], "network-scan"),
        ("Container_Escape", ["T1611"], "container-escape"),
        ("Crypto_Mining", ["T1496"], "crypto-mining"),
        ("Networking_C2_Communication", ["T1059.004", "T1071.001"], "reverse-shell"),
        ("Networking_C2_Communication", ["T1572", "T1048"], "exfiltration"),
        ("Networking_Suspicious_Communication", ["T1071"], "reverse-shell"),
        ("Credential_Access", ["T1552.001"], "credential-files"),
        ("Persistence", ["T1053.003"], "persistence"),
        ("Defense_Evasion", ["T1562.001"], "defense-evasion"),
        ("Privilege_Escalation", ["T1548.001"], "privesc"),
        ("Lateral_Movement", ["T1021.004"], "lateral-movement"),
        ("Execution", ["T1027.004", "T1059"], "drift"),
        ("Execution", ["T1505.003"], "persistence"),
        ("Impact", ["T1485"], "data-destruction"),
        # Test-fixture style names of the original are routed by keyword.
        ("Data_Exfiltration_Staging", [], "exfiltration"),
        ("Reverse_Shell_Execution", [], "reverse-shell"),
        ("Persistence_Cron_Job", [], "persistence"),
        # Unknown category: the most specific technique decides (T1552.005 is IMDS, not credential files).
        ("Something_New", ["T1552.005"], "cloud-creds"),
        ("Something_New", ["T1552.001"], "credential-files"),
    ],
)
def test_route(category: str, techniques: list[str], family: str) -> None:
    gen = route(make_event(category=category, techniques=techniques), GENS)
    assert gen is not None
    assert gen.name == family


def test_unknown_category_without_techniques_is_unmapped() -> None:
    assert route(make_event(category="Discovery", techniques=[]), GENS) is None


def test_at_least_twelve_families_each_module_registers_one() -> None:
    assert len(GENERATORS) >= 12
    origins = [GENERATORS.origin(name) for name in GENERATORS.names()]
    assert len(set(origins)) == len(origins)
    import pkgutil

    import qcdr_response.policies.families as fam

    modules = {f"{fam.__name__}.{m.name}" for m in pkgutil.iter_modules(fam.__path__)}
    assert modules == set(origins)
