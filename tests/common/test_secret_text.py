"""qcdr_common.secret_text: what an HTTP error may say, and scrubbing echoed secrets."""

from __future__ import annotations

import httpx
import pytest
from qcdr_common.secret_text import check_header_secret, describe_http_error, scrub, url_secrets

HOOK = "https://hooks.slack.com/services/T0123ABCD/B0123ABCD/abcdefghijklmnopqrstuvwx"


def test_a_refused_header_is_described_by_its_type_only() -> None:
    # what httpx raises for a header h11 refuses (tests/cli/test_header_secrets.py sends one)
    refused = httpx.LocalProtocolError("Illegal header value b'Bearer SECRET\\nline'")
    assert describe_http_error(refused) == "LocalProtocolError"


def test_other_errors_keep_their_message() -> None:
    assert describe_http_error(httpx.ConnectError("connection refused")) == "ConnectError: connection refused"


def test_an_echoed_path_or_segment_is_masked_and_short_words_are_not() -> None:
    echoed = "HTTP 404: Cannot POST /services/T0123ABCD/B0123ABCD/abcdefghijklmnopqrstuvwx (services)"
    assert scrub(echoed, url_secrets(HOOK)) == "HTTP 404: Cannot POST *** (services)"
    one = "unknown token abcdefghijklmnopqrstuvwx"
    assert scrub(one, url_secrets(HOOK)) == "unknown token ***"
    assert scrub(f"sent to {HOOK}", url_secrets(HOOK)) == "sent to ***"


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "a\x7fb", "a\tb"])
def test_control_characters_cannot_go_into_a_header(value: str) -> None:
    with pytest.raises(ValueError, match="holds a line break") as caught:
        check_header_secret(value)
    assert value not in str(caught.value)


def test_a_printable_secret_can() -> None:
    assert check_header_secret("Abc-123._~+/=") == "Abc-123._~+/="


@pytest.mark.parametrize("key", ["routing_key", "webhook_url", "credential", "private_key", "hec_token"])
def test_log_values_under_secret_key_names_are_masked(key: str) -> None:
    from qcdr_common.logging import REDACTED, _redact
    from qcdr_common.testing.logs import capture_logs
    from structlog import get_logger

    with capture_logs(processors=[_redact]) as logs:
        get_logger("t").warning("configured", **{key: HOOK})
    assert logs[0][key] == REDACTED


def test_short_values_are_not_scrubbed() -> None:
    """An "X-Api-Version: 2" header must not turn "HTTP 502" into "HTTP 50***"."""
    assert scrub("HTTP 502: bad gateway", ["2", "v1"]) == "HTTP 502: bad gateway"


def test_credential_ids_stay_in_the_logs() -> None:
    from qcdr_common.logging import _redact
    from qcdr_common.testing.logs import capture_logs
    from structlog import get_logger

    with capture_logs(processors=[_redact]) as logs:
        get_logger("t").info("registered", credential_id="cred-123", credential="abcdefghij.secret")
    assert logs[0]["credential_id"] == "cred-123"
    assert logs[0]["credential"] == "***"
