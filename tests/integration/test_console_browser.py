"""Issue #11 acceptance: the web console in headless Chromium over TLS, against real processes.

One stack for the module (its own database and key prefix): ingest, analysis, response (acting on
the Kubernetes API test server) and admission over plain HTTP, and federation (standalone) over
HTTPS with a development certificate whose key the browser pins. The data goes in through the
real APIs: Falco alerts that make findings and a reverse-shell chain, the policies response
generates from them, a pending action, an admission denial. The browser then signs in, checks
every page against what the APIs say, approves the action, approves and revokes a policy, signs
out, and writes a screenshot of each page into ``docs/console/``. A second test checks what is
refused: no session, a wrong or missing CSRF token, a foreign origin, a read-only session.
"""

from __future__ import annotations

import json
import re
import secrets
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Page
from qcdr_admission.certs import CertFiles, write_dev_certs
from qcdr_analysis import attack
from qcdr_common.testing import browser
from qcdr_common.testing.browser import Chromium
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_common.testing.plugin import scratch_database
from qcdr_common.testing.wait import eventually

from tests.integration.stack import Proc, Stack, free_port, service_cmd

chromium = browser.chromium

TOKEN = "console-it-" + secrets.token_hex(16)
READ_TOKEN = "console-ro-" + secrets.token_hex(16)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONTAINER = "5e11c0ffee01"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
VIEWPORT = {"width": 1280, "height": 900}

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


async def chain_in_database(database_url: str, chain_id: str) -> list[dict[str, Any]]:
    """The steps of a chain finding as analysis stored them (``analysis_findings.payload``)."""
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        payload = await conn.fetchval(
            "SELECT payload FROM analysis_findings WHERE id = $1 AND kind = 'chain'", chain_id
        )
    finally:
        await conn.close()
    assert payload is not None, f"no chain {chain_id} in analysis_findings"
    steps: list[dict[str, Any]] = json.loads(payload)["attributes"]["steps"]
    return steps


@dataclass
class Console:
    stack: Stack
    procs: dict[str, Proc]
    certs: CertFiles
    base_url: str
    k8s: K8sTestServer

    def get(self, service: str, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.procs[service].url}{path}", headers=AUTH, params=params, timeout=10)
        r.raise_for_status()
        return r.json()

    def post(self, service: str, path: str, body: Any) -> httpx.Response:
        return httpx.post(f"{self.procs[service].url}{path}", json=body, headers=AUTH, timeout=10)


def serve_tls(stack: Stack, service: str, certs: CertFiles, **env: str) -> tuple[Proc, str]:
    """``Stack.serve`` for a service answering HTTPS: readiness is checked against the dev CA."""
    port = free_port()
    proc = Proc(
        service,
        service_cmd(service, "serve", "--port", str(port)),
        {**stack.env, **env},
        stack.workdir / f"{service}.log",
        port,
    )
    stack.procs[service] = proc
    proc.start()
    url = f"https://127.0.0.1:{port}"
    ca = ssl.create_default_context(cafile=certs.ca_cert)
    deadline = time.monotonic() + 60
    while True:
        if proc.popen is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{service} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            if httpx.get(f"{url}/readyz", verify=ca, timeout=1.0).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{service} not ready:\n{proc.tail()}")
        time.sleep(0.1)


def falco_alert(when: datetime, rule: str, tags: list[str], exe: str, parent: str) -> dict[str, Any]:
    return {
        "uuid": str(uuid.uuid4()),
        "time": when.isoformat(),
        "rule": rule,
        "priority": "Critical",
        "output": f"{rule} in shop/web-1",
        "hostname": "node-1",
        "source": "syscall",
        "tags": tags,
        "output_fields": {
            "k8s.ns.name": "shop",
            "k8s.pod.name": "web-1",
            "container.id": CONTAINER,
            "container.name": "web",
            "container.image.repository": "registry.example.com/shop/web",
            "container.image.tag": "1.4.2",
            "proc.exepath": exe,
            "proc.name": exe.rsplit("/", 1)[1],
            "proc.pexepath": parent,
        },
    }


def privileged_review() -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "rooted", "namespace": "payments"},
        "spec": {
            "containers": [{"name": "app", "image": "nginx:1.27", "securityContext": {"privileged": True}}]
        },
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "name": "rooted",
            "namespace": "payments",
            "operation": "CREATE",
            "userInfo": {"username": "mallory@example.com", "groups": ["system:authenticated"]},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


@pytest.fixture(scope="module")
def console(
    base_database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    work = tmp_path_factory.mktemp("console")
    prefix = f"consoleit-{uuid.uuid4().hex[:6]}"
    certs = write_dev_certs(work / "certs", ["localhost"], ip_addresses=["127.0.0.1"])
    # the cluster response acts on: the Kubernetes API test server with the attacked pod
    k8s = K8sTestServer()
    with k8s.serve(), scratch_database(base_database_url, "qcdr_console_it") as db:
        k8s.seed(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.example.com/shop/web:1.4.2"}]},
            }
        )
        stack = Stack.create(
            work,
            database_url=db,
            redis_url=redis_url,
            prefix=prefix,
            token=TOKEN,
            extra_env={
                "QCDR_API_TOKEN_READ": READ_TOKEN,
                "QCDR_CLUSTER_ID": "console-it",
                "QCDR_STREAM_BLOCK_MS": "100",
                "QCDR_OUTBOX_POLL_S": "0.05",
                "QCDR_CORRELATION_IDLE_FLUSH_S": "1",
            },
        )
        try:
            stack.migrate("ingest", "analysis", "response", "admission", "federation")
            procs = {s: stack.serve(s) for s in ("ingest", "analysis", "admission")}
            procs["response"] = stack.serve(
                "response",
                QCDR_KUBECONFIG=str(k8s.write_kubeconfig(work / "kubeconfig")),
                # the approved isolation really runs (against the test server) and holds a lease;
                # no shipped playbooks, so the one pending action is the test's own
                QCDR_ACTIONS_MODE="enforce",
                QCDR_BUILTIN_PLAYBOOKS="false",
            )
            fed, base_url = serve_tls(
                stack,
                "federation",
                certs,
                FEDERATION_ROLE="standalone",
                QCDR_FEDERATION_TLS_CERT=str(certs.cert),
                QCDR_FEDERATION_TLS_KEY=str(certs.key),
                QCDR_CONSOLE_SERVICE_TOKEN=TOKEN,
                QCDR_CONSOLE_INGEST_URL=procs["ingest"].url,
                QCDR_CONSOLE_ANALYSIS_URL=procs["analysis"].url,
                QCDR_CONSOLE_RESPONSE_URL=procs["response"].url,
                QCDR_CONSOLE_ADMISSION_URL=procs["admission"].url,
            )
            procs["federation"] = fed
            yield Console(stack, procs, certs, base_url, k8s)
        finally:
            stack.close()  # deletes its Redis keys too


@dataclass
class Seeded:
    chain: dict[str, Any]
    findings: list[dict[str, Any]]
    policies: list[dict[str, Any]]
    action: dict[str, Any]
    denial: dict[str, Any]


@pytest.fixture(scope="module")
def seeded(console: Console) -> Seeded:
    """The data every page shows, put in through the services' own APIs."""
    now = datetime.now(UTC)
    alerts = [
        falco_alert(
            now - timedelta(seconds=20),
            "Terminal shell in container",
            ["container", "shell", "mitre_execution", "T1059.004"],
            "/bin/bash",
            "/usr/local/bin/node",
        ),
        falco_alert(
            now - timedelta(seconds=10),
            "Outbound connection to C2 server",
            ["network", "mitre_command_and_control", "T1071"],
            "/bin/bash",
            "/usr/local/bin/node",
        ),
    ]
    r = console.post("ingest", "/v1/events/falco", alerts)
    assert r.status_code == 202, r.text
    (chain,) = eventually(lambda: console.get("analysis", "/v1/chains")["items"], within=60)
    assert chain["pattern"] == "reverse_shell"
    # two source findings and the chain's own
    findings = eventually(
        lambda: (
            (items := console.get("analysis", "/v1/findings", limit=100)["items"])
            and len(items) >= 3
            and items
        ),
        within=30,
    )
    # response folds each finding into its policy: wait until every one is linked
    eventually(
        lambda: all(
            httpx.get(
                f"{console.procs['response'].url}/v1/findings/{f['id']}/policy", headers=AUTH, timeout=10
            ).status_code
            == 200
            for f in findings
            if f["kind"] == "source"
        ),
        within=60,
    )
    policies = console.get("response", "/v1/policies", limit=100)["items"]
    assert policies

    r = console.post(
        "response",
        "/v1/actions",
        {
            "action": "isolate_pod",
            "target": {"namespace": "shop", "pod": "web-1"},
            "require_approval": True,
            "lease": "1h",
            "reason": "reverse shell in shop/web-1",
            "finding_id": chain["id"],
        },
    )
    assert r.status_code in (200, 201, 202), r.text
    action = r.json()
    assert action["state"] == "pending", action

    r = console.post("admission", "/validate", privileged_review())
    assert r.status_code == 200, r.text
    assert r.json()["response"]["allowed"] is False
    # the decision log is written behind the answer
    (denial,) = eventually(
        lambda: console.get("admission", "/v1/admission/decisions", allowed="false")["items"], within=30
    )
    return Seeded(chain, findings, policies, action, denial)


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / name), full_page=True)


async def text(page: Page, selector: str) -> str:
    return (await page.locator(selector).inner_text()).strip()


async def sign_in(page: Page, base_url: str, token: str) -> None:
    await page.goto(f"{base_url}/ui/login")
    await page.fill("#token", token)
    await page.click("form[action='/ui/login'] button[type=submit]")
    await page.wait_for_url(f"{base_url}/ui/")


async def test_the_console_in_a_browser(console: Console, seeded: Seeded, chromium: Chromium) -> None:
    base = console.base_url
    context = await chromium.new_context(trust=[console.certs.cert], viewport=VIEWPORT)
    page = await context.new_page()

    # no session: every page sends the browser to sign in
    await page.goto(f"{base}/ui/findings")
    assert page.url == f"{base}/ui/login"
    await sign_in(page, base, TOKEN)
    (cookie,) = [c for c in await context.cookies() if c["name"] == "qcdr_console"]
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"], cookie["path"]) == (
        True,
        True,
        "Strict",
        "/ui",
    )

    # overview: the totals the APIs give
    since = (datetime.now(UTC) - timedelta(hours=24)).isoformat()
    stats = console.get("analysis", "/v1/findings/stats", since=since, bucket="hour")
    assert stats["total"] == len(seeded.findings)
    assert await text(page, "#total-findings") == str(stats["total"])
    assert await text(page, "#open-approvals") == "1"
    assert "shop" in await text(page, "main")
    await shot(page, "overview.png")

    # clusters: a standalone console says so
    await page.click("nav >> text=Clusters")
    assert "standalone" in await text(page, "#cluster-role")
    await shot(page, "clusters.png")

    # chains: the list, then the chain, step by step against the analysis API
    api_chains = console.get("analysis", "/v1/chains", limit=100)["items"]
    await page.click("nav >> text=Attack chains")
    assert await text(page, "#shown-count") == str(len(api_chains)) == "1"
    await shot(page, "chains.png")
    await page.click(f"a[href='/ui/chains/{seeded.chain['id']}']")
    await page.wait_for_url(f"{base}/ui/chains/{seeded.chain['id']}")
    chain = console.get("analysis", f"/v1/chains/{seeded.chain['id']}")
    steps = page.locator("li.step")
    assert await steps.count() == len(chain["steps"]) == 2
    for i, step in enumerate(chain["steps"]):
        shown = await steps.nth(i).inner_text()
        assert step["name"] in shown, shown
        assert step["event_id"] in shown, shown
        for technique in step["techniques"]:
            assert technique["name"], technique
            assert f"{technique['id']} {technique['name']}" in shown, shown
    assert [s["techniques"][0]["id"] for s in chain["steps"]] == ["T1059.004", "T1071"]
    # and against the database itself: the chain finding analysis stored, with MITRE's names
    stored = await chain_in_database(console.stack.env["DATABASE_URL"], seeded.chain["id"])
    assert [s["name"] for s in stored] == [s["name"] for s in chain["steps"]]
    for i, step in enumerate(stored):
        shown = await steps.nth(i).inner_text()
        assert step["event_id"] in shown, shown
        for technique_id in step["techniques"]:
            assert f"{technique_id} {attack.name(technique_id)}" in shown, shown
    assert await text(page, "#confidence") == f"{chain['confidence']:.2f}"
    assert await text(page, "#clusters") == ", ".join(chain["clusters"])
    await shot(page, "chain.png")

    # findings: the table holds exactly the API's findings; a detail page shows the raw event
    api_findings = console.get("analysis", "/v1/findings", limit=50)["items"]
    await page.click("nav >> text=Findings")
    assert await text(page, "#shown-count") == str(len(api_findings))
    table = await text(page, "table")
    for f in api_findings:
        assert f["title"] in table
    await shot(page, "findings.png")
    source = next(f for f in api_findings if f["kind"] == "source")
    await page.click(f"a[href='/ui/findings/{source['id']}']")
    detail = await text(page, "main")
    assert source["id"] in detail
    assert source["evidence_event_ids"][0] in detail
    assert CONTAINER in detail  # from the raw event ingest keeps
    await shot(page, "finding.png")

    # policies: the names response holds; one policy with its YAML and a diff of two versions
    api_policies = console.get("response", "/v1/policies", limit=100)["items"]
    await page.click("nav >> text=Policies")
    assert await text(page, "#shown-count") == str(len(api_policies))
    table = await text(page, "table")
    for p in api_policies:
        assert p["name"] in table
    await shot(page, "policies.png")
    policy = api_policies[0]
    await page.click(f"a[href='/ui/policies/{policy['id']}']")
    assert policy["status"] == "proposed"
    assert (await text(page, "#policy-status")).startswith("proposed")
    assert "apiVersion" in await text(page, "main")
    if policy["current_version"] > 1:
        await page.goto(f"{base}/ui/policies/{policy['id']}?from=1&to={policy['current_version']}")
        assert f"Diff 1 → {policy['current_version']}" in await text(page, "main")
    await shot(page, "policy.png")
    # proposed → approved → revoked, through the forms
    for verb, status in (("approve", "approved"), ("revoke", "revoked")):
        form = page.locator(f"form[action='/ui/policies/{policy['id']}/{verb}']")
        await form.locator("input[name=reason]").fill(f"console test {verb}")
        await form.locator("button").click()
        await page.wait_for_url(f"{base}/ui/policies/{policy['id']}?done={verb}")
        assert (await text(page, "#policy-status")).startswith(status)
        assert console.get("response", f"/v1/policies/{policy['id']}")["status"] == status

    # actions: the pending one, approved with a reason, then executed against the test cluster
    action_id = seeded.action["id"]
    await page.click("nav >> text=Actions")
    assert await text(page, "#pending-count") == "1"
    row = page.locator("section", has=page.locator("#pending-count")).locator("tr", has_text="isolate_pod")
    shown = await row.inner_text()
    for key, value in seeded.action["target"].items():
        assert f"{key}={value}" in shown, shown
    await shot(page, "actions.png")
    form = page.locator(f"form[action='/ui/actions/{action_id}/approve']")
    await form.locator("input[name=reason]").fill("confirmed by the on-call")
    await form.locator("button").click()
    await page.wait_for_url(re.compile(r".*/ui/actions\?done=approve.*"))
    assert f"Action {action_id} approved." in await text(page, "[role=status]")

    def executed() -> dict[str, Any] | None:
        item = console.get("response", f"/v1/actions/{action_id}")
        return item if item["state"] not in ("pending", "queued", "running") else None

    done = eventually(executed, within=30)
    assert done["state"] == "succeeded", done
    assert "confirmed by the on-call" in str(done)
    # it acted on the cluster: the pod is fenced in by a deny-all CiliumNetworkPolicy
    fences = console.k8s.objects("CiliumNetworkPolicy")
    assert [ns for ns, _name in fences] == ["shop"], fences
    # the page shows it executed: gone from the approvals, holding its containment lease
    deadline = time.monotonic() + 30
    while await text(page, "#lease-count") != "1":
        assert time.monotonic() < deadline, "the approved isolation never shows as a lease"
        await page.reload()
    assert await text(page, "#pending-count") == "0"
    leases = page.locator("section", has=page.locator("#lease-count"))
    lease = await leases.locator("tr", has_text="isolate_pod").inner_text()
    assert str(action_id) in lease
    assert done["lease_expires_at"][:16].replace("T", " ") in lease
    # and the recent list says what became of it, with who decided and why
    recent = await page.locator("#recent-actions tr", has_text="isolate_pod").inner_text()
    assert "succeeded" in recent, recent
    assert "confirmed by the on-call" in recent, recent

    # admission: the denial by check and namespace, as the decision log has it
    await page.click("nav >> text=Admission")
    since = (datetime.now(UTC) - timedelta(hours=24)).isoformat()
    decisions = console.get("admission", "/v1/admission/decisions/stats", since=since)
    assert await text(page, "#denied-count") == str(decisions["denied"]) == "1"
    grid = await text(page, ".grid")
    for breakdown in ("by_check", "by_namespace", "by_image"):
        assert decisions[breakdown], decisions
        for entry in decisions[breakdown]:
            assert entry["key"] in grid, (entry, grid)
    assert "payments" in grid
    checks = {v["check"] for v in seeded.denial["violations"] if v.get("mode") == "enforce"}
    assert "privileged" in checks
    assert "privileged" in grid
    assert "rooted" in await text(page, "main")
    await shot(page, "admission.png")

    # sign out: the session is gone, /ui sends to the login page again
    await page.click("button:has-text('Sign out')")
    await page.wait_for_url(f"{base}/ui/login")
    await page.goto(f"{base}/ui")
    assert page.url == f"{base}/ui/login"
    assert [c for c in await context.cookies() if c["name"] == "qcdr_console"] == []
    await context.close()


CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def signed_in(console: Console, token: str) -> tuple[httpx.Client, str]:
    """An HTTPS client holding a console session for ``token``, and the session's CSRF token."""
    client = httpx.Client(
        base_url=console.base_url,
        verify=ssl.create_default_context(cafile=console.certs.ca_cert),
        timeout=10,
    )
    r = client.post("/ui/login", data={"token": token})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ui/"
    cookie = r.headers["set-cookie"].lower()
    for flag in ("httponly", "secure", "samesite=strict", "path=/ui"):
        assert flag in cookie, cookie
    page = client.get("/ui/")
    assert page.status_code == 200
    match = CSRF_FIELD.search(page.text)
    assert match is not None
    return client, match.group(1)


def test_no_session_a_bad_csrf_token_or_a_read_only_token_is_refused(
    console: Console, seeded: Seeded
) -> None:
    policy_id = seeded.policies[0]["id"]

    def status() -> str:
        return str(console.get("response", f"/v1/policies/{policy_id}")["status"])

    before = status()
    with httpx.Client(
        base_url=console.base_url, verify=ssl.create_default_context(cafile=console.certs.ca_cert), timeout=10
    ) as anonymous:
        r = anonymous.get("/ui/findings")
        assert (r.status_code, r.headers["location"]) == (303, "/ui/login")
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        r = anonymous.post(f"/ui/policies/{policy_id}/revoke", data={"csrf_token": "x", "reason": "no"})
        assert r.status_code == 401
        r = anonymous.post("/ui/login", data={"token": "not-a-token-of-this-suite"})
        assert r.status_code == 401
        assert "set-cookie" not in r.headers

    client, csrf = signed_in(console, TOKEN)
    try:
        path = f"/ui/policies/{policy_id}/revoke"
        wrong = {"csrf_token": secrets.token_urlsafe(32), "reason": "csrf"}
        for form in (wrong, {"reason": "no token at all"}):
            r = client.post(path, data=form)
            assert r.status_code == 403, r.text
            assert "CSRF" in r.text
        # the right token from another origin
        r = client.post(path, data={"csrf_token": csrf}, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        assert status() == before
        # the right token and origin go through: sign out ends the session
        r = client.post("/ui/logout", data={"csrf_token": csrf}, headers={"Origin": console.base_url})
        assert (r.status_code, r.headers["location"]) == (303, "/ui/login")
        r = client.get("/ui/")
        assert (r.status_code, r.headers["location"]) == (303, "/ui/login")
    finally:
        client.close()

    reader, csrf = signed_in(console, READ_TOKEN)
    try:
        page = reader.get(f"/ui/policies/{policy_id}")
        assert page.status_code == 200
        assert "(read-only)" in page.text
        assert f"/ui/policies/{policy_id}/revoke" not in page.text  # no write forms
        r = reader.post(f"/ui/policies/{policy_id}/approve", data={"csrf_token": csrf})
        assert r.status_code == 403
        assert "no write scope" in r.text
        assert status() == before
    finally:
        reader.close()
