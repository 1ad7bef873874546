"""Each console page rendered against fake backends: the counts and names they answer, filters
and cursors passed through, writes with the principal's note, scopes, and backends that are down."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI

from tests.federation.conftest import READ
from tests.federation.console import samples
from tests.federation.console.conftest import csrf_of, post, sign_in
from tests.federation.console.fakes import FakeData


def _text(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', html)
    assert match, element_id
    return match.group(1).strip()


async def test_overview_shows_stats_feeds_and_approvals(client: httpx.AsyncClient, fake: FakeData) -> None:
    fake.stats = {
        "total": 4242,
        "by_severity": {"critical": 7, "high": 35},
        "by_category": [{"category": "execution.shell", "count": 40}, {"category": "intel.c2", "count": 2}],
        "series": [
            {
                "start": "2026-12-05T00:00:00+00:00",
                "counts": {"critical": 3, "high": 10},
                "categories": {"execution.shell": 12, "other": 1},
            },
            {
                "start": "2026-12-05T01:00:00+00:00",
                "counts": {"critical": 4, "high": 25},
                "categories": {"execution.shell": 28, "intel.c2": 1},
            },
        ],
        "top_namespaces": [{"namespace": "payments", "count": 31}],
        "top_images": [{"image": "registry.local/shop:9", "count": 12}],
    }
    fake.feeds = {
        "refreshed_at": samples.NOW,
        "changed_at": samples.NOW,
        "cidrs": 10,
        "feeds": [
            {
                "name": "spamhaus-drop",
                "category": "c2",
                "url": "https://x",
                "status": "fresh",
                "checked_at": samples.NOW,
                "age_s": 600.0,
                "ips": 3,
                "cidrs": 7,
            },
        ],
    }
    fake.actions = [samples.action(1), samples.action(2), samples.action(3, state="succeeded")]
    fake.action_stats = {
        "actions": 3,
        "from_findings": 3,
        "pending": 2,
        "requested_p50_s": 4.25,
        "requested_p95_s": 9.0,
        "finished_p50_s": 75.0,
        "finished_p95_s": 120.0,
    }
    await sign_in(client)
    page = await client.get("/ui/")
    assert page.status_code == 200
    html = page.text
    assert _text(html, "total-findings") == "4242"
    assert _text(html, "open-approvals") == "2"
    assert _text(html, "detection-to-action") == "4.2 s"
    for name in ("execution.shell", "payments", "registry.local/shop:9", "spamhaus-drop", "10 min"):
        assert name in html
    # the charts: one stacked segment per non-zero severity (category) per hour, drawn as SVG rects
    severity_chart, _, category_part = html.partition('id="category-chart"')
    assert severity_chart.count("<rect ") == 4
    assert "2026-12-05T01:00 high: 25" in html
    category_chart = category_part.partition("</svg>")[0]
    assert category_chart.count("<rect ") == 4
    assert "2026-12-05T01:00 execution.shell: 28" in category_chart
    assert "2026-12-05T00:00 other: 1" in category_chart
    since = next(q for s, path, q in fake.queries if path == "/v1/findings/stats")
    assert since["bucket"] == ["hour"]


async def test_overview_without_stats_endpoint(client: httpx.AsyncClient, fake: FakeData) -> None:
    await sign_in(client)
    html = (await client.get("/ui/")).text
    assert "Finding statistics are not available" in html
    assert 'class="unavailable"' not in html
    assert _text(html, "open-approvals") == "0"


async def test_a_backend_down_renders_an_error_box(client: httpx.AsyncClient, fake: FakeData) -> None:
    fake.down = {"analysis", "response"}
    await sign_in(client)
    for path, service in (
        ("/ui/", "analysis"),
        ("/ui/findings", "analysis"),
        ("/ui/chains", "analysis"),
        ("/ui/actions", "response"),
        ("/ui/policies", "response"),
    ):
        page = await client.get(path)
        assert page.status_code == 200, path
        assert f"{service} unavailable: HTTP 503 (maintenance)" in page.text, path


async def test_unreachable_backend(console_app: FastAPI, client: httpx.AsyncClient) -> None:
    from qcdr_federation.console.backends import Backends

    state = console_app.state.console
    await state.backends.aclose()
    settings = state.settings.model_copy(update={"console_admission_url": "http://127.0.0.1:9"})
    state.backends = Backends(settings)
    await sign_in(client)
    page = await client.get("/ui/admission")
    assert page.status_code == 200
    assert "admission unavailable: cannot connect (ConnectError)" in page.text


async def test_chains_list_and_timeline(client: httpx.AsyncClient, fake: FakeData) -> None:
    fake.chains = [samples.chain("chain-1"), samples.chain("chain-2")]
    await sign_in(client)
    listing = await client.get("/ui/chains")
    assert _text(listing.text, "shown-count") == "2"
    assert "Shell then service-account token read" in listing.text
    detail = await client.get("/ui/chains/chain-1")
    assert detail.status_code == 200
    html = detail.text
    assert html.count('class="step"') == 2
    assert "<code>T1059.004</code> Unix Shell" in html
    assert "<code>T1552.007</code> Container API" in html
    assert "<code>ev-2</code>" in html
    # a step names its workload when the chain says where it happened (older chains do not)
    assert '<span class="step-workload">shop/web-7 (app)</span>' in html
    assert html.count('class="step-workload"') == 1
    assert _text(html, "confidence") == "0.87"
    assert _text(html, "clusters") == "eu-1, us-2"
    assert (await client.get("/ui/chains/nope")).status_code == 404


async def test_findings_filters_pages_and_detail(client: httpx.AsyncClient, fake: FakeData) -> None:
    fake.findings = [samples.finding(n, namespace="shop" if n % 2 else "db") for n in range(1, 121)]
    fake.events = {"ev-3": {"id": "ev-3", "source": "tetragon", "process": {"binary": "/bin/sh"}}}
    await sign_in(client)
    first = await client.get("/ui/findings", params={"namespace": "shop", "severity": "high"})
    assert first.status_code == 200
    assert _text(first.text, "shown-count") == "50"
    sent = [q for s, path, q in fake.queries if path == "/v1/findings"][-1]
    assert sent["namespace"] == ["shop"]
    assert sent["severity"] == ["high"]
    assert sent["limit"] == ["50"]
    next_link = re.search(r'href="(/ui/findings\?[^"]+)" rel="next"', first.text)
    assert next_link
    second = await client.get(next_link.group(1).replace("&amp;", "&"))
    assert _text(second.text, "shown-count") == "10"  # 60 in shop: 50 + 10
    assert 'rel="next"' not in second.text
    assert (await client.get("/ui/findings", params={"severity": "bogus"})).status_code == 400
    detail = await client.get("/ui/findings/f-3")
    assert detail.status_code == 200
    # explanations are escaped, the raw event is highlighted by Pygments
    assert "a shell was spawned &lt;b&gt;3&lt;/b&gt;" in detail.text
    assert '<div class="highlight">' in detail.text
    assert "/bin/sh" in detail.text
    assert (await client.get("/ui/findings/f-999")).status_code == 404


async def test_policies_yaml_diff_and_transitions(client: httpx.AsyncClient, fake: FakeData) -> None:
    fake.policies = [samples.policy(7), samples.policy(8, status="applied")]
    fake.versions = {
        "7": [
            samples.version(7, 1, "kind: TracingPolicy\nspec:\n  action: Post\n"),
            samples.version(7, 2, "kind: TracingPolicy\nspec:\n  action: Sigkill\n"),
        ]
    }
    csrf = await sign_in(client)
    listing = await client.get("/ui/policies")
    assert _text(listing.text, "shown-count") == "2"
    assert "block-shell-8" in listing.text
    detail = await client.get("/ui/policies/7", params={"from": "1", "to": "2"})
    assert detail.status_code == 200
    html = detail.text
    assert _text(html, "policy-status") == "proposed"
    assert '<span class="gd">-  action: Post</span>' in html
    assert '<span class="gi">+  action: Sigkill</span>' in html
    assert 'class="nt">kind</span>' in html  # YAML highlighted
    for verb in ("approve", "apply", "revoke"):
        assert f'action="/ui/policies/7/{verb}"' in html
    done = await post(client, "/ui/policies/7/revoke", csrf, reason="too noisy")
    assert done.status_code == 303
    assert done.headers["location"] == "/ui/policies/7?done=revoke"
    assert fake.writes[-1] == (
        "response",
        "/v1/policies/7/revoke",
        {"note": "via console by qcdr-api-token: too noisy"},
    )
    assert (await post(client, "/ui/policies/99/approve", csrf)).status_code == 409


@pytest.mark.parametrize("param", ["version", "from", "to"])
@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "x", "-1", "1234567890"])
async def test_a_policy_version_that_is_not_a_number_is_400(
    client: httpx.AsyncClient, fake: FakeData, param: str, value: str
) -> None:
    # "\u00b2" (superscript two) once was a 500: str.isdigit() is true for it, int() refuses it
    fake.policies = [samples.policy(7)]
    await sign_in(client)
    response = await client.get("/ui/policies/7", params={param: value})
    assert response.status_code == 400
    assert f"{param} must be a number" in response.text


async def test_actions_pending_and_leases(client: httpx.AsyncClient, fake: FakeData) -> None:
    fake.actions = [
        samples.action(11),
        samples.action(12, state="succeeded", lease_expires_at="2026-12-05T03:00:00+00:00"),
        samples.action(13, state="succeeded", containment=False),
    ]
    csrf = await sign_in(client)
    page = await client.get("/ui/actions")
    assert _text(page.text, "pending-count") == "1"
    assert _text(page.text, "lease-count") == "1"
    assert "web-11" in page.text
    assert "2026-12-05 03:00:00" in page.text
    # every action, finished ones too, in the recent list
    recent = page.text.partition('id="recent-actions"')[2].partition("</table>")[0]
    assert [f"<td>{i}</td>" in recent for i in (11, 12, 13)] == [True, True, True]
    approve = await post(client, "/ui/actions/11/approve", csrf, reason="confirmed")
    assert approve.status_code == 303
    assert fake.writes[-1] == (
        "response",
        "/v1/actions/11/approve",
        {"note": "via console by qcdr-api-token: confirmed"},
    )
    assert "Action 11 approved." in (await client.get(approve.headers["location"])).text
    assert (await post(client, "/ui/actions/11/reject", csrf)).status_code == 400  # a reason is required
    assert (await post(client, "/ui/actions/11/reject", csrf, reason="false positive")).status_code == 303
    assert (await post(client, "/ui/actions/12/renew", csrf, lease="2h")).status_code == 303
    assert fake.writes[-1] == ("response", "/v1/actions/12/renew", {"lease": "2h"})
    assert (await post(client, "/ui/actions/12/renew", csrf, lease="soon")).status_code == 400
    # ASCII digits only: "\\d" also matched "\u0662" (Arabic-Indic two), passed on to the API
    assert (await post(client, "/ui/actions/12/renew", csrf, lease="\u0662h")).status_code == 400
    # the confirmation names an action id only when the whole id is one ("$" matched before a "\n")
    assert "approved." not in (await client.get("/ui/actions", params={"done": "approve", "id": "11\n"})).text
    assert (await post(client, "/ui/actions/12/undo", csrf)).status_code == 303
    assert fake.writes[-1] == ("response", "/v1/actions/12/undo", {"note": "via console by qcdr-api-token"})
    assert (await post(client, "/ui/actions/12/explode", csrf)).status_code == 404


async def test_read_only_sees_no_forms_and_cannot_write(client: httpx.AsyncClient, fake: FakeData) -> None:
    fake.actions = [samples.action(11)]
    fake.policies = [samples.policy(7)]
    csrf = await sign_in(client, READ)
    page = await client.get("/ui/actions")
    assert "web-11" in page.text
    assert "/ui/actions/11/approve" not in page.text
    policy = await client.get("/ui/policies/7")
    assert "/ui/policies/7/revoke" not in policy.text
    assert csrf_of(policy.text) == csrf  # only the sign-out form
    for path in ("/ui/actions/11/approve", "/ui/policies/7/revoke"):
        refused = await post(client, path, csrf, reason="x")
        assert refused.status_code == 403
        assert "has no write scope" in refused.text
    assert fake.writes == []


async def test_admission_stats_and_fallback(client: httpx.AsyncClient, fake: FakeData) -> None:
    fake.decisions = [
        samples.decision(1),
        samples.decision(2, check="hostPath", namespace="ci"),
        samples.decision(3),
    ]
    await sign_in(client)
    # no stats endpoint: counted from the denials
    page = await client.get("/ui/admission")
    html = page.text
    assert "Counted from the latest denials" in html
    assert _text(html, "denied-count") == "3"
    assert re.search(r"<td>pss/privileged</td><td class=\"num\">2</td>", html)
    assert re.search(r"<td>evil:latest</td><td class=\"num\">3</td>", html)
    fake.decision_stats = {
        "total": 900,
        "denied": 41,
        "by_check": [{"key": "runAsNonRoot", "count": 30}],
        "by_namespace": [{"key": "payments", "count": 41}],
        "by_image": [{"key": "busybox:1", "count": 9}],
    }
    html = (await client.get("/ui/admission", params={"window": "7d"})).text
    assert _text(html, "review-count") == "900"
    assert _text(html, "denied-count") == "41"
    assert "runAsNonRoot" in html
    assert "busybox:1" in html
    assert (await client.get("/ui/admission", params={"window": "1y"})).status_code == 400


async def test_clusters_page_in_standalone(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    html = (await client.get("/ui/clusters")).text
    assert "is <b>standalone</b>" in html


async def test_clusters_page_in_spoke_role(federation_db: str, redis_url: str, redis_prefix: str) -> None:
    from asgi_lifespan import LifespanManager
    from qcdr_common.contracts.federation.v1 import FederationRole
    from qcdr_federation.app import create_app

    from tests.federation.conftest import api_auth, make_settings
    from tests.federation.console.conftest import browser

    settings = make_settings(
        federation_db,
        redis_url,
        redis_prefix,
        role=FederationRole.SPOKE,
        hub_url="https://hub.example:8443",
        cluster_name="edge-3",
        consume_in_app=False,
    )
    app = create_app(settings, auth=api_auth())
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30), browser(app) as client:
        await sign_in(client)
        html = (await client.get("/ui/clusters")).text
    assert "(<b>edge-3</b>) is a <b>spoke</b>" in html
    assert "https://hub.example:8443" in html
