import asyncio
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from pydantic import SecretStr
from qcdr_ingest.qualys.auth import TokenProvider, TokenTiming, token_lifetime
from qcdr_ingest.qualys.client import QualysCdrClient
from qcdr_ingest.qualys.config import QualysSettings
from qcdr_ingest.qualys.double import DoubleConfig, Fault, QualysDouble, serve_double
from qcdr_ingest.qualys.errors import QualysAuthError, QualysConnectionError, QualysPayloadError
from qcdr_ingest.qualys.retry import RetryPolicy

NOW = datetime(2026, 3, 1, tzinfo=UTC)
KEY = "k" * 64
FAST = RetryPolicy(max_retries=2, backoff_base_s=0.001, backoff_max_s=0.002)


def make_jwt(lifetime: float | None, *, iat: float = 1_000_000.0) -> str:
    claims: dict[str, object] = {"sub": "demo", "iat": iat}
    if lifetime is not None:
        claims["exp"] = iat + lifetime
    return jwt.encode(claims, KEY, algorithm="HS256")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class AuthServer:
    """A MockTransport handler for /auth that records what it was sent."""

    def __init__(self, answer: Callable[[], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer()


def provider(
    handler: Callable[[httpx.Request], httpx.Response],
    *,
    clock: Clock | None = None,
    username: str | None = "demo",
    password: str | None = "pw",
    token: str | None = None,
) -> TokenProvider:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="https://gw.example/prefix")
    return TokenProvider(
        http,
        username=username,
        password=SecretStr(password) if password is not None else None,
        access_token=SecretStr(token) if token is not None else None,
        timing=TokenTiming(margin_s=300.0, fraction=0.1, default_lifetime_s=60.0),
        retry=FAST,
        clock=clock or Clock(),
    )


async def test_login_posts_the_form_and_accepts_201_with_a_raw_jwt() -> None:
    token = make_jwt(3600)
    server = AuthServer(lambda: httpx.Response(201, text=token + "\n"))
    auth = provider(server)
    assert await auth.get() == token
    assert await auth.get() == token  # cached: one login
    [request] = server.requests
    assert request.method == "POST"
    assert request.url == "https://gw.example/prefix/auth"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request.content.decode())
    assert form == {"username": ["demo"], "password": ["pw"], "token": ["true"]}


async def test_password_with_special_characters_is_encoded() -> None:
    server = AuthServer(lambda: httpx.Response(200, text=make_jwt(3600)))
    auth = provider(server, password="p&ss=w%rd +x")
    await auth.get()
    assert parse_qs(server.requests[0].content.decode())["password"] == ["p&ss=w%rd +x"]


async def test_token_is_renewed_early_from_its_exp_claim() -> None:
    clock = Clock()
    tokens = iter([make_jwt(100, iat=1.0), make_jwt(100, iat=2.0)])
    server = AuthServer(lambda: httpx.Response(201, text=next(tokens)))
    auth = provider(server, clock=clock)
    first = await auth.get()
    # margin = min(300 s, 10 % of 100 s) = 10 s, so renewal is due at 90 s.
    clock.now = 89.9
    assert await auth.get() == first
    clock.now = 90.1
    assert await auth.get() != first
    assert len(server.requests) == 2


async def test_a_long_lived_token_is_renewed_five_minutes_early() -> None:
    clock = Clock()
    server = AuthServer(lambda: httpx.Response(201, text=make_jwt(4 * 3600, iat=time.time())))
    auth = provider(server, clock=clock)
    await auth.get()
    clock.now = 4 * 3600 - 301
    await auth.get()
    assert len(server.requests) == 1
    clock.now = 4 * 3600 - 299
    await auth.get()
    assert len(server.requests) == 2


async def test_token_without_exp_uses_the_default_lifetime() -> None:
    clock = Clock()
    server = AuthServer(lambda: httpx.Response(201, text=make_jwt(None)))
    auth = provider(server, clock=clock)
    await auth.get()
    clock.now = 53.0  # default 60 s minus 10 %
    await auth.get()
    assert len(server.requests) == 1
    clock.now = 54.1
    await auth.get()
    assert len(server.requests) == 2


def test_token_lifetime_prefers_exp_minus_iat() -> None:
    assert token_lifetime(make_jwt(120, iat=5.0)) == 120.0
    assert token_lifetime(make_jwt(None)) is None


async def test_concurrent_callers_share_one_login() -> None:
    server = AuthServer(lambda: httpx.Response(201, text=make_jwt(3600)))
    auth = provider(server)
    tokens = await asyncio.gather(*(auth.get() for _ in range(10)))
    assert len(set(tokens)) == 1
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [401, 403])
async def test_bad_credentials_give_a_one_line_error(status: int) -> None:
    auth = provider(AuthServer(lambda: httpx.Response(status, json={"error": "Bad credentials"})))
    with pytest.raises(QualysAuthError) as info:
        await auth.get()
    message = str(info.value)
    assert "\n" not in message
    assert f"HTTP {status}" in message
    assert "'demo'" in message
    assert "QUALYS_PASSWORD" in message
    assert "pw" not in message.replace("QUALYS_PASSWORD", "")


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        ("<html><body>Login</body></html>", "text/html", "HTML"),
        ('{"token": "abc"}', "application/json", "JSON"),
        ("", "text/plain", "empty body"),
        ("not a token at all", "text/plain", "not a JWT"),
    ],
)
async def test_unexpected_login_payloads_are_reported(body: str, content_type: str, expected: str) -> None:
    answer = httpx.Response(200, text=body, headers={"content-type": content_type})
    auth = provider(AuthServer(lambda: answer))
    with pytest.raises(QualysPayloadError, match=expected) as info:
        await auth.get()
    assert "\n" not in str(info.value)


async def test_jwt_shaped_garbage_is_a_payload_error() -> None:
    auth = provider(AuthServer(lambda: httpx.Response(201, text="abc.def.ghi")))
    with pytest.raises(QualysPayloadError, match="not a readable JWT"):
        await auth.get()


async def test_dns_failure_names_the_host() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        try:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        except socket.gaierror as exc:
            raise httpx.ConnectError("[Errno -2] Name or service not known", request=request) from exc

    calls: list[int] = []

    def counting(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return handler(request)

    auth = provider(counting)
    with pytest.raises(QualysConnectionError, match=r"cannot resolve Qualys gateway host 'gw.example'"):
        await auth.get()
    assert len(calls) == 1  # DNS failures are not retried


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


async def test_connection_refused_names_host_and_port(make_settings: Callable[..., QualysSettings]) -> None:
    port = _closed_port()
    settings = make_settings(gateway_url=f"http://127.0.0.1:{port}", max_retries=1)
    async with QualysCdrClient(settings) as client:
        with pytest.raises(
            QualysConnectionError, match=rf"connection refused by Qualys gateway 127.0.0.1:{port}"
        ):
            await client.authenticate()


async def test_tls_failure_names_the_gateway(make_settings: Callable[..., QualysSettings]) -> None:
    # Speaking TLS to a plain-HTTP server fails the handshake, all on 127.0.0.1.
    with serve_double(DoubleConfig()) as url:
        settings = make_settings(gateway_url=url.replace("http://", "https://"))
        async with QualysCdrClient(settings) as client:
            with pytest.raises(
                QualysConnectionError, match=r"TLS handshake with Qualys gateway 127.0.0.1:\d+"
            ):
                await client.authenticate()


async def test_no_credentials_at_all(make_settings: Callable[..., QualysSettings]) -> None:
    async with QualysCdrClient(make_settings(username=None, password=None), base_url="http://x") as client:
        with pytest.raises(
            QualysAuthError, match="QUALYS_USERNAME and QUALYS_PASSWORD, or QUALYS_ACCESS_TOKEN"
        ):
            await client.authenticate()


async def test_access_token_is_used_directly_as_bearer(make_settings: Callable[..., QualysSettings]) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path != "/auth", "a configured access token must not trigger a login"
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json={"content": [], "totalElements": 0, "last": True})

    settings = make_settings(username=None, password=None, access_token=SecretStr("my.access.token"))
    async with QualysCdrClient(
        settings, base_url="http://x", transport=httpx.MockTransport(handler)
    ) as client:
        result = await client.fetch_findings(NOW, NOW)
    assert result.fetched == 0
    assert set(seen) == {"Bearer my.access.token"}


async def test_rejected_access_token_without_credentials_fails_clearly(
    make_settings: Callable[..., QualysSettings],
) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(401))
    settings = make_settings(username=None, password=None, access_token=SecretStr("old.access.token"))
    async with QualysCdrClient(settings, base_url="http://x", transport=transport) as client:
        with pytest.raises(QualysAuthError, match="QUALYS_ACCESS_TOKEN was rejected"):
            await client.fetch_findings(NOW, NOW)


async def test_rejected_access_token_falls_back_to_a_login(
    make_settings: Callable[..., QualysSettings],
) -> None:
    double = QualysDouble(DoubleConfig(findings=[]))
    with serve_double(double) as url:
        settings = make_settings(access_token=SecretStr("stale.access.token"), gateway_url=url)
        async with QualysCdrClient(settings) as client:
            result = await client.fetch_findings(NOW, NOW)
    assert result.fetched == 0
    assert double.stats.tokens_issued == 1
    assert double.stats.status[401] == 1


async def test_a_401_gets_exactly_one_fresh_login(make_settings: Callable[..., QualysSettings]) -> None:
    logins: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth":
            logins.append(1)
            return httpx.Response(201, text=make_jwt(3600, iat=time.time()))
        return httpx.Response(401, json={"error": "nope"})

    transport = httpx.MockTransport(handler)
    async with QualysCdrClient(make_settings(), base_url="http://x", transport=transport) as client:
        with pytest.raises(QualysAuthError, match="rejected a freshly issued token"):
            await client.fetch_findings(NOW, NOW)
    assert len(logins) == 2


async def test_revoked_token_is_replaced_and_the_fetch_completes(
    make_settings: Callable[..., QualysSettings],
) -> None:
    findings = [
        {
            "uuid": f"u{i}",
            "threatCategory": "Execution",
            "severity": 3,
            "timestamp": "2026-02-28T12:00:00.000Z",
        }
        for i in range(30)
    ]
    double = QualysDouble(DoubleConfig(findings=findings, faults=[Fault(kind="revoke", at=(2,))]))
    with serve_double(double) as url:
        async with QualysCdrClient(make_settings(gateway_url=url, page_size=10)) as client:
            result = await client.fetch_findings(NOW - timedelta(days=1), NOW)
    assert result.fetched == 30
    assert double.stats.tokens_issued == 2
    assert double.stats.rejected_tokens == 1
