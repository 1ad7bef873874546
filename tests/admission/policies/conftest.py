"""Fixtures of the policy tests: a committed, migrated admission database and app factories."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from qcdr_admission.db import upgrade
from qcdr_admission.policies.config import PolicySettings
from qcdr_admission.policies.lifespan import install_policies
from qcdr_admission.settings import AdmissionSettings
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.service_app import create_service_app
from qcdr_common.testing.plugin import scratch_database

WRITE = "write-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"


@pytest.fixture(scope="module")
def admission_database_url(base_database_url: str) -> Iterator[str]:
    with scratch_database(base_database_url, "qcdr_admission_policies") as url:
        upgrade(url)
        yield url


@pytest.fixture
async def committed_db(admission_database_url: str) -> AsyncIterator[str]:
    yield admission_database_url
    connection = await asyncpg.connect(admission_database_url.replace("+asyncpg", ""))
    try:
        await connection.execute("TRUNCATE admission_policies")
        await connection.execute("UPDATE admission_policy_state SET generation = 0")
    finally:
        await connection.close()


def make_app(database_url: str, redis_url: str, **config: Any) -> FastAPI:
    """An admission app with only the policy parts (what ``create_app`` adds around them)."""
    settings = AdmissionSettings(_env_file=None, database_url=database_url, redis_url=redis_url)
    app = create_service_app(
        settings,
        title="qcdr admission (policies)",
        auth=ApiAuthSettings(token=SecretStr(WRITE), token_read=SecretStr(READ)),
    )
    values: dict[str, Any] = {"policies_poll_s": 0.05, "image_status_refresh_s": 60, "runtime_enabled": False}
    values.update(config)
    install_policies(app, settings, config=PolicySettings(**values))
    return app
