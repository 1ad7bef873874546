"""Refits the population models in the background and swaps them in atomically.

The rows are gathered on the event loop (a fast copy of the ready workloads' reservoirs, under
the detectors' lock so no batch is half applied), the fit runs in a thread (scikit-learn releases
the GIL in its hot loops), and the new model replaces the old in one assignment, after it was
saved: a restart loads the same model the running worker used.
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import Counter
from qcdr_common.logging import get_logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_analysis.anomaly import population
from qcdr_analysis.anomaly import repository as repo
from qcdr_analysis.detectors.workload_anomaly import State
from qcdr_analysis.findings.service import DetectorSet

log = get_logger(__name__)
FITS = Counter("qcdr_anomaly_model_fits_total", "Population model refits, by outcome.", ["outcome"])


class ModelTrainer:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        detectors: DetectorSet,
        state: State,
        *,
        poll_seconds: float = 5.0,
    ) -> None:
        self.sessions = sessions
        self.detectors = detectors
        self.state = state
        self.poll_seconds = poll_seconds
        self.fits = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.fit_if_due()
            except Exception:
                FITS.labels(outcome="failed").inc()
                log.exception("population model refit failed; the current model stays")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_seconds)

    async def fit_if_due(self) -> population.PopulationModel | None:
        engine = self.state.engine
        async with self.detectors.lock:
            if not engine.refit_due():
                return None
            rows, workloads = engine.training_rows()
            engine.last_fit = engine.max_seen
            fitted_at = engine.max_seen
        if fitted_at is None:
            return None
        model = await asyncio.to_thread(engine.fit_rows, rows, workloads, fitted_at)
        if model is None:
            return None
        async with self.sessions.begin() as session:
            await repo.save_model(session, model)
        engine.install_model(model)
        self.fits += 1
        FITS.labels(outcome="fitted").inc()
        log.info("population models refit", rows=model.rows, workloads=workloads)
        return model
