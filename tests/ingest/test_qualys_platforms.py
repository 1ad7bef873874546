import pytest
from qcdr_ingest.qualys.platforms import (
    ALIASES,
    DEFAULT_PLATFORM,
    PLATFORMS,
    get_platform,
    parse_gateway,
    resolve_gateway,
)

EXPECTED_GATEWAYS = {
    "US1": "gateway.qg1.apps.qualys.com",
    "US2": "gateway.qg2.apps.qualys.com",
    "US3": "gateway.qg3.apps.qualys.com",
    "US4": "gateway.qg4.apps.qualys.com",
    "EU1": "gateway.qg1.apps.qualys.eu",
    "EU2": "gateway.qg2.apps.qualys.eu",
    "EU3": "gateway.qg3.apps.qualys.it",
    "CA1": "gateway.qg1.apps.qualys.ca",
    "IN1": "gateway.qg1.apps.qualys.in",
    "AE1": "gateway.qg1.apps.qualys.ae",
    "UK1": "gateway.qg1.apps.qualys.co.uk",
    "AU1": "gateway.qg1.apps.qualys.com.au",
    "KSA1": "gateway.qg1.apps.qualysksa.com",
}


def test_every_platform_has_its_own_gateway() -> None:
    assert {name: p.gateway_host for name, p in PLATFORMS.items()} == EXPECTED_GATEWAYS


def test_api_and_portal_hosts_follow_the_platform_table() -> None:
    assert PLATFORMS["US1"].api_host == "qualysapi.qualys.com"
    assert PLATFORMS["EU1"].portal_host == "qualysguard.qualys.eu"
    assert PLATFORMS["UK1"].api_host == "qualysapi.qg1.apps.qualys.co.uk"
    assert PLATFORMS["KSA1"].portal_host == "qualysguard.qg1.apps.qualysksa.com"


@pytest.mark.parametrize(
    ("alias", "platform"),
    [
        ("us", "US1"),
        ("US01", "US1"),
        ("us2", "US2"),
        ("us04", "US4"),
        ("eu", "EU1"),
        ("Eu02", "EU2"),
        ("eu3", "EU3"),
        ("canada", "CA1"),
        ("CA", "CA1"),
        ("india", "IN1"),
        ("uae", "AE1"),
        ("uk", "UK1"),
        ("Australia", "AU1"),
        ("saudi", "KSA1"),
        ("KSA1", "KSA1"),
        (" us3 ", "US3"),
    ],
)
def test_aliases_are_case_insensitive(alias: str, platform: str) -> None:
    assert get_platform(alias).name == platform


def test_every_canonical_name_is_an_alias() -> None:
    assert all(ALIASES[name.lower()] == name for name in PLATFORMS)


def test_non_us_pods_never_resolve_to_a_us_gateway() -> None:
    # The original built every gateway under .qualys.com, sending CA/EU/IN/AE/UK tenants to the US.
    assert resolve_gateway("ca1", None) == "https://gateway.qg1.apps.qualys.ca"
    assert resolve_gateway("eu1", None) == "https://gateway.qg1.apps.qualys.eu"
    assert resolve_gateway("uk1", None) == "https://gateway.qg1.apps.qualys.co.uk"


def test_default_is_us2() -> None:
    assert DEFAULT_PLATFORM == "US2"
    assert resolve_gateway(None, None) == "https://gateway.qg2.apps.qualys.com"
    assert resolve_gateway("  ", "") == "https://gateway.qg2.apps.qualys.com"


def test_unknown_platform_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown Qualys platform 'mars1'") as info:
        resolve_gateway("mars1", None)
    assert all(name in str(info.value) for name in PLATFORMS)


def test_gateway_beats_platform() -> None:
    assert resolve_gateway("eu1", "gateway.example.net") == "https://gateway.example.net"


@pytest.mark.parametrize(
    ("gateway", "url"),
    [
        ("gateway.qg2.apps.qualys.com", "https://gateway.qg2.apps.qualys.com"),
        ("gateway.qg2.apps.qualys.com/", "https://gateway.qg2.apps.qualys.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("127.0.0.1:8443", "https://127.0.0.1:8443"),
        ("https://proxy.corp.example/qualys/", "https://proxy.corp.example/qualys"),
        ("  HTTPS://gw.example  ", "https://gw.example"),
        ("http://[::1]:9000/p", "http://[::1]:9000/p"),
    ],
)
def test_gateway_parsing(gateway: str, url: str) -> None:
    assert parse_gateway(gateway) == url.replace("HTTPS", "https")


@pytest.mark.parametrize(
    "bad", ["ftp://gw.example", "http://", "https://gw.example?x=1", "gw.example:99999", " "]
)
def test_bad_gateways_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="gateway"):
        parse_gateway(bad)
