"""Two spoke replicas share one credential row. When one rotates (the hub asked, or the
credential is 7 days old), the other still holds the old credential; after the hub's overlap
(``credential_overlap_s``) the hub refuses it with 401. That replica must take the rotated
credential from the shared row, not try the single-use bootstrap token for ever (found by the
replicas audit: its heartbeat, policy pull, status and command loops stopped until a restart).

1. replica A registers (cred1, stored); replica B starts and resumes with cred1;
2. the hub asks for a rotation; replica A rotates: cred2 is stored;
3. the overlap ends: the hub refuses cred1;
4. replica B's next call gets 401, and B carries on with cred2 without registering.

FakeHub (from test_registration) plays the hub: one-time bootstrap tokens, and here the end of the
overlap is explicit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from qcdr_federation.spoke.client import HubError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.federation.spoke.conftest import eventually
from tests.federation.spoke.test_registration import FakeHub, registrar, spoke_settings, stored

pytestmark = [pytest.mark.db]


async def test_a_replica_left_with_the_rotated_credential_takes_the_new_one(
    spoke_engine: AsyncEngine, spoke_db: str, redis_url: str, spoke_prefix: str, tmp_path: Path
) -> None:
    hub = FakeHub()
    token_file = tmp_path / "bootstrap-token"
    token_file.write_text("tok")
    hub.tokens.add("tok")
    settings = spoke_settings(spoke_db, redis_url, spoke_prefix, token_file)

    async with registrar(settings, spoke_engine, hub) as (reg_a, client_a, _):
        await eventually(lambda: _is(reg_a.ready.is_set()))
        async with registrar(settings, spoke_engine, hub) as (reg_b, client_b, _):
            await eventually(lambda: _is(reg_b.ready.is_set()))
            assert client_b.credential is not None
            assert client_b.credential.credential_id == "cred1"

            reg_a.request_rotation()  # 2
            await eventually(lambda: _is(client_a.credential.credential_id == "cred2"))  # type: ignore[union-attr]
            assert (await stored(spoke_engine))[0] == "cred2"
            hub.valid.pop("cred1")  # 3: the overlap is over

            with pytest.raises(HubError) as refused:  # 4
                await client_b.commands(0)
            reg_b.failed(refused.value)
            await eventually(
                lambda: _is(client_b.credential is not None and client_b.credential.credential_id == "cred2")
            )

            registers = hub.calls.count("/federation/v1/register")
            ready_b = reg_b.ready.is_set()
            held_b = client_b.credential.credential_id if client_b.credential else None

    # the good credential was in the shared database all along
    assert ready_b
    assert held_b == "cred2"
    assert registers == 1  # replica A's first registration only


async def _is(value: object) -> object:
    return value
