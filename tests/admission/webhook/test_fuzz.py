"""No input gives a 5xx: the Kubewarden policies' recorded AdmissionRequests (wrapped in v1
reviews), every other JSON file of that corpus as a body, and hypothesis streams of malformed
reviews and objects."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qcdr_admission.app import create_app

from tests.admission.webhook.conftest import (
    admission_settings,
    deployment_of,
    privileged_pod,
    restricted_pod,
    review,
)

CORPUS = "corpora/admission/kubewarden-policies"


def _corpus_files(shared: Path) -> list[Path]:
    return sorted((shared / CORPUS).rglob("*.json"))


def _wrap(data: Any) -> Any:
    """A bare AdmissionRequest becomes the request of a v1 review; anything else is sent as is."""
    if isinstance(data, dict) and "uid" in data and "operation" in data:
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": data}
    return data


@pytest.mark.shared
async def test_kubewarden_requests_never_5xx(shared_path: Path) -> None:
    files = _corpus_files(shared_path)
    assert len(files) > 200, "the Kubewarden corpus moved?"
    app = create_app(admission_settings())
    outcomes: dict[str, int] = {}
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="https://a") as client:
            for f in files:
                data = orjson.loads(f.read_bytes())
                body = _wrap(data)
                r = await client.post("/validate", content=orjson.dumps(body))
                assert r.status_code < 500, (f, r.text)
                if r.status_code == 200:
                    resp = r.json()["response"]
                    assert resp["uid"] == body["request"]["uid"]
                    key = "denied" if not resp["allowed"] else "allowed"
                else:
                    assert r.status_code == 400, (f, r.text)
                    key = r.json()["reason"]
                outcomes[key] = outcomes.get(key, 0) + 1
            privileged = (
                shared_path / CORPUS / "policies/pod-privileged-policy/test_data/privileged_container.json"
            )
            r = await client.post(
                "/validate", content=orjson.dumps(_wrap(orjson.loads(privileged.read_bytes())))
            )
            assert r.json()["response"]["allowed"] is False
            assert "privileged" in r.json()["response"]["status"]["message"]
    # most recorded requests are well-formed and reach the engine; settings files are 400s
    assert outcomes.get("allowed", 0) + outcomes.get("denied", 0) >= 150, outcomes
    assert outcomes.get("denied", 0) >= 20, outcomes


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(admission_settings())
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="https://a") as c:
            yield c


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)

_PATHS: list[tuple[str, ...]] = [
    (),
    ("request",),
    ("request", "uid"),
    ("request", "kind"),
    ("request", "kind", "kind"),
    ("request", "operation"),
    ("request", "subResource"),
    ("request", "userInfo"),
    ("request", "userInfo", "groups"),
    ("request", "dryRun"),
    ("request", "namespace"),
    ("request", "object"),
    ("request", "object", "kind"),
    ("request", "object", "metadata"),
    ("request", "object", "metadata", "annotations"),
    ("request", "object", "spec"),
    ("request", "object", "spec", "template"),
    ("request", "object", "spec", "template", "spec"),
    ("request", "object", "spec", "template", "spec", "containers"),
    ("request", "object", "spec", "template", "spec", "securityContext"),
    ("request", "object", "spec", "template", "spec", "volumes"),
    ("request", "oldObject"),
]


def _set(doc: Any, path: tuple[str, ...], value: Any) -> Any:
    if not path:
        return value
    node = doc
    for key in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return doc
        node = node[key]
    if isinstance(node, dict):
        node[path[-1]] = value
    return doc


@st.composite
def malformed_reviews(draw: st.DrawFn) -> Any:
    base = draw(
        st.sampled_from(
            [
                review(restricted_pod()),
                review(deployment_of(privileged_pod()), group="apps"),
                review(privileged_pod(), operation="UPDATE", old=restricted_pod()),
            ]
        )
    )
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        doc = _set(doc, draw(st.sampled_from(_PATHS)), draw(json_values))
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=malformed_reviews())
async def test_malformed_reviews_never_5xx(client: httpx.AsyncClient, doc: Any) -> None:
    r = await client.post("/validate", content=orjson.dumps(doc))
    assert r.status_code in (200, 400), r.text
    if r.status_code == 400:
        assert r.json()["reason"] in {"malformed_review", "unsupported_review", "malformed_object"}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
async def test_arbitrary_bytes_never_5xx(client: httpx.AsyncClient, raw: bytes) -> None:
    r = await client.post("/validate", content=raw)
    assert r.status_code in (200, 400), r.text
