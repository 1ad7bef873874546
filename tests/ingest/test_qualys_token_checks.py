"""A Qualys access token with a line break is refused when the settings load, naming the variable
and never quoting the token (httpx would otherwise quote the whole header in its error)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError
from qcdr_ingest.qualys.config import QualysSettings

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJxY2RyIn0.SIGNATURESECRET0123456789"


@pytest.mark.parametrize("bad", [JWT + "\nsecond line", JWT[:20] + "\x00" + JWT[20:]])
def test_a_token_that_cannot_be_a_header_is_refused_without_quoting_it(bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        QualysSettings(gateway_url="http://127.0.0.1:9", access_token=SecretStr(bad))
    text = str(caught.value)
    assert "holds a line break or another control character" in text
    assert "SIGNATURESECRET" not in text


def test_surrounding_whitespace_is_not_a_problem() -> None:
    settings = QualysSettings(gateway_url="http://127.0.0.1:9", access_token=SecretStr(f"  {JWT}\n"))
    assert settings.has_credentials
