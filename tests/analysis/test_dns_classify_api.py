"""``POST /v1/dns/classify`` on the analysis app: scores, read scope, and refusals of bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from qcdr_analysis.app import create_app
from qcdr_analysis.dns import classify, load_classifier
from qcdr_common.api.auth import ApiAuthSettings

from tests.analysis.conftest import analysis_settings

READ = "analysis-dns-read-0123456789abcdef"
WRITE = "analysis-dns-write-0123456789abcdef"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # The endpoint needs neither database nor Redis: the app is used without its lifespan.
    app = create_app(
        analysis_settings(database_url="postgresql+asyncpg://unused@127.0.0.1:1/none"),
        auth=ApiAuthSettings(token=SecretStr(WRITE), token_read=SecretStr(READ)),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://analysis.test",
        headers={"Authorization": f"Bearer {READ}"},
    ) as c:
        yield c


async def test_scores_a_batch_with_a_read_token(client: httpx.AsyncClient) -> None:
    names = ["clwafrfuuxq.yi.org", "Mail.Google.com.", "xn--80aaiflkn.su", "postukegacize.com"]
    response = await client.post("/v1/dns/classify", json={"names": names})
    assert response.status_code == 200, response.text
    body = response.json()
    by_name = {r["name"]: r for r in body["results"]}
    assert list(by_name) == ["clwafrfuuxq.yi.org", "mail.google.com", "xn--80aaiflkn.su", "postukegacize.com"]
    # the API says what the classifier says, threshold included
    expected = classify(list(by_name))
    assert [r["is_dga"] for r in body["results"]] == [v.is_dga for v in expected]
    assert body["threshold"] == load_classifier().threshold
    random_host = by_name["clwafrfuuxq.yi.org"]
    assert random_host["is_dga"]
    assert random_host["score"] >= body["threshold"]
    assert random_host["registered"] == "clwafrfuuxq.yi.org"  # a FreeDNS host is its own registration
    assert random_host["reasons"]
    assert not by_name["mail.google.com"]["is_dga"]
    assert by_name["mail.google.com"]["reasons"] == []
    assert by_name["xn--80aaiflkn.su"]["score"] == 0  # punycode is not judged lexically


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"names": ["ok.example", "bad name.example"]}, "invalid_name"),
        ({"names": ["a..b"]}, "invalid_name"),
        ({"names": ["-lead.example"]}, "invalid_name"),
        ({"names": ["x" * 64 + ".example"]}, "invalid_name"),
        # a label ending in a newline: "$" matches before it, a full match does not
        ({"names": ["a\n.example"]}, "invalid_name"),
        ({"names": []}, None),
        ({"names": ["a.example"] * 1001}, None),
        ({"names": ["a.example"], "extra": 1}, None),
        ({"name": "a.example"}, None),
    ],
)
async def test_bad_input_is_refused_with_a_reason(
    client: httpx.AsyncClient, body: dict[str, object], reason: str | None
) -> None:
    response = await client.post("/v1/dns/classify", json=body)
    assert response.status_code == 422
    if reason:
        assert response.json()["reason"] == reason
        assert "names[" in response.json()["detail"]


async def test_a_token_is_required(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/dns/classify", json={"names": ["a.example"]}, headers={"Authorization": "Bearer wrong"}
    )
    assert response.status_code == 401
    del client.headers["Authorization"]
    assert (await client.post("/v1/dns/classify", json={"names": ["a.example"]})).status_code == 401
