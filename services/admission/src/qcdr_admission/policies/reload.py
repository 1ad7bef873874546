"""The live policy set: every replica polls ``admission_policy_state.generation`` (every
``policies_poll_s``, 0.5 s by default) and, when it moved, reads all policies and swaps in a new
engine. The webhook holds :class:`PolicyStore`, an :class:`~qcdr_admission.engine.Engine` whose
``evaluate`` delegates to the current immutable engine (one attribute read: the swap is atomic).

Why polling rather than LISTEN/NOTIFY or Redis pub/sub: a one-row primary-key read every 0.5 s
is nothing for Postgres, needs no dedicated connection (works behind PgBouncer in transaction
mode), cannot miss a notification across a reconnect, and has no second source of truth. When the
database is away the last good set keeps serving; the failure is logged once and retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pydantic import ValidationError
from qcdr_common.logging import get_logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_admission.engine import CompositeEngine, Engine, PssEngine, Result, Subject
from qcdr_admission.policies import repository as repo
from qcdr_admission.policies.context import NO_IMAGES, NO_RUNTIME, ImageStatusView, RuntimeView
from qcdr_admission.policies.defaults import merged
from qcdr_admission.policies.evaluate import PolicyEngine
from qcdr_admission.policies.model import AdmissionPolicy
from qcdr_admission.policies.pause import pause

log = get_logger("qcdr.admission.policies")


def invalid_reason(exc: ValidationError) -> str:
    """The first error of a stored policy that no longer validates, as one line:
    ``checks: Value error, unknown check 'x' (...)`` (and how many more there are)."""
    errors = exc.errors(include_url=False)
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    where = ".".join(str(part) for part in first["loc"]) or "policy"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return " ".join(f"{where}: {first['msg']}{more}".split())[:500]


class PolicyStore:
    """The engine the webhook evaluates with, reloaded in the background."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession] | None,
        *,
        pss: PssEngine | None = None,
        images: ImageStatusView = NO_IMAGES,
        runtime: RuntimeView = NO_RUNTIME,
        built_in: bool = True,
        poll_s: float = 0.5,
        on_swap: Callable[[int], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self.pss = pss if pss is not None else PssEngine()
        self.images = images
        self.runtime = runtime
        self.built_in = built_in
        self.poll_s = poll_s
        self._on_swap = on_swap
        self.generation = -1  # nothing read from the database yet
        self.loaded = False
        self.errors = 0
        self.skipped: dict[str, str] = {}  # stored policies that no longer validate, with why
        self.policies: tuple[AdmissionPolicy, ...] = ()
        self._current: Engine = self._build([])

    # --- the Engine protocol: one attribute read, then pure evaluation
    def evaluate(self, subject: Subject) -> list[Result]:
        return self._current.evaluate(subject)

    def _build(self, stored: list[AdmissionPolicy]) -> Engine:
        policies = merged(stored, built_in=self.built_in)
        self.policies = tuple(sorted(policies, key=lambda p: p.name))
        engine = PolicyEngine(policies, images=self.images, runtime=self.runtime, generation=self.generation)
        return CompositeEngine((self.pss, engine), deny_templates=self.pss.config.deny_templates)

    def swap(self, generation: int, stored: list[AdmissionPolicy]) -> None:
        self.generation = generation
        self._current = self._build(stored)
        self.loaded = True
        if self._on_swap is not None:
            self._on_swap(generation)

    async def refresh(self) -> bool:
        """Reload when the generation moved; True when a new set was swapped in."""
        if self._sessions is None:
            return False
        async with self._sessions() as session:
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            current = await repo.generation(session)
            if current == self.generation:
                return False
            rows = await repo.list_all(session)
        stored, skipped = [], {}
        for row in rows:
            try:
                stored.append(AdmissionPolicy.model_validate(row.spec))
            except ValidationError as exc:
                skipped[row.name] = invalid_reason(exc)
        if skipped != self.skipped and skipped:
            log.error("admission_policies_skipped", policies=skipped)
        self.skipped = skipped
        self.swap(current, stored)
        log.info(
            "admission_policies_loaded", generation=current, stored=len(stored), active=len(self.policies)
        )
        return True

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll until ``stop`` is set; database errors keep the last good set."""
        failing = False
        while stop is None or not stop.is_set():
            try:
                await self.refresh()
                if failing:
                    log.info("admission_policies_reachable", generation=self.generation)
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: keep serving what we have
                self.errors += 1
                if not failing:
                    log.warning("admission_policies_unreachable", error=f"{type(exc).__name__}: {exc}"[:300])
                failing = True
            if await pause(stop, self.poll_s):
                return

    async def ready(self) -> None:
        """Readiness: the set was read from the database at least once."""
        if not self.loaded:
            raise RuntimeError("admission policies not loaded yet")
