"""All SQL of the workload anomaly engine (callers own the transaction)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson
from sqlalchemy import Boolean, Integer, LargeBinary, Text, bindparam, delete, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_analysis.anomaly.features import EVENT_FEATURES
from qcdr_analysis.anomaly.models import BaselineRow, ModelRow
from qcdr_analysis.anomaly.population import PopulationModel
from qcdr_analysis.anomaly.workload import WorkloadState
from qcdr_analysis.profiles.identity import profile_key, workload_key

POPULATION = "population"
# stored images of an owner read when a new one appears (the newest by write time)
DONOR_ROWS_PER_OWNER = 5


class ConcurrentUpdateError(RuntimeError):
    """Another writer changed a baseline since it was loaded; the batch is retried."""


async def generations(session: AsyncSession, keys: Sequence[str]) -> dict[str, int]:
    rows = await session.execute(
        select(BaselineRow.key, BaselineRow.generation).where(BaselineRow.key.in_(keys))
    )
    return {str(key): int(generation) for key, generation in rows}


async def load_states(session: AsyncSession, keys: Sequence[str], reservoir_size: int) -> list[WorkloadState]:
    rows = await session.execute(
        select(BaselineRow.key, BaselineRow.generation, BaselineRow.state).where(BaselineRow.key.in_(keys))
    )
    return [
        WorkloadState.from_json(key, orjson.loads(state), reservoir_size, generation)
        for key, generation, state in rows
    ]


async def latest_states(
    session: AsyncSession, owners: Iterable[str], exclude: Sequence[str], reservoir_size: int
) -> list[WorkloadState]:
    """Per owner, its most recently active stored baseline that can be scored against (its own
    or an inherited one), other than ``exclude``: what a rollout's new image inherits."""
    # the few most recently written images of each owner: an owner's history can be long
    recent = (
        select(
            BaselineRow.key,
            BaselineRow.workload_key,
            BaselineRow.generation,
            BaselineRow.state,
            func.row_number()
            .over(partition_by=BaselineRow.workload_key, order_by=BaselineRow.updated_at.desc())
            .label("rank"),
        )
        .where(BaselineRow.workload_key.in_(sorted(owners)), BaselineRow.key.not_in(list(exclude)))
        .subquery()
    )
    rows = await session.execute(
        select(recent.c.key, recent.c.workload_key, recent.c.generation, recent.c.state).where(
            recent.c.rank <= DONOR_ROWS_PER_OWNER
        )
    )
    best: dict[str, WorkloadState] = {}
    for key, owner, generation, blob in rows:
        state = WorkloadState.from_json(key, orjson.loads(blob), reservoir_size, generation)
        if state.scoring_baseline is None or state.last_activity is None:
            continue
        known = best.get(owner)
        if known is None or (known.last_activity or 0) < state.last_activity:
            best[owner] = state
    return list(best.values())


async def save_states(session: AsyncSession, states: Sequence[WorkloadState]) -> None:
    """Insert new baselines, update the others where their generation is still the loaded one."""
    fresh = [s for s in states if s.generation == 0]
    known = [s for s in states if s.generation > 0]
    if fresh:
        values = [_values(s, 1) for s in fresh]
        inserted = await session.execute(
            insert(BaselineRow).values(values).on_conflict_do_nothing().returning(BaselineRow.key)
        )
        if len(inserted.all()) != len(fresh):
            raise ConcurrentUpdateError("a baseline was created by another writer")
    if known:
        # one statement for the batch; the generation check makes each row a compare-and-set
        statement = text(
            "UPDATE analysis_baselines AS b SET ready = v.ready, generation = v.expected + 1,"
            " state = v.blob, namespace = v.ns, updated_at = now()"
            " FROM unnest(:keys, :expected, :ready, :blobs, :ns) AS v(key, expected, ready, blob, ns)"
            " WHERE b.key = v.key AND b.generation = v.expected RETURNING b.key"
        ).bindparams(
            bindparam("keys", type_=ARRAY(Text)),
            bindparam("expected", type_=ARRAY(Integer)),
            bindparam("ready", type_=ARRAY(Boolean)),
            bindparam("blobs", type_=ARRAY(LargeBinary)),
            bindparam("ns", type_=ARRAY(Text)),
        )
        result = await session.execute(
            statement,
            {
                "keys": [s.key for s in known],
                "expected": [s.generation for s in known],
                "ready": [s.ready for s in known],
                "blobs": [orjson.dumps(s.to_json()) for s in known],
                "ns": [s.workload.namespace for s in known],
            },
        )
        if len(result.all()) != len(known):
            raise ConcurrentUpdateError("a baseline changed since it was loaded (reset or another worker)")
    for state in states:
        state.generation += 1
        state.dirty = state.changed = False


def _values(state: WorkloadState, generation: int) -> dict[str, object]:
    return {
        "key": state.key,
        "workload_key": workload_key(state.workload),
        "profile_key": profile_key(state.workload),
        "namespace": state.workload.namespace,
        "ready": state.ready,
        "generation": generation,
        "state": orjson.dumps(state.to_json()),
    }


async def states_for(
    session: AsyncSession, *, workload: str | None = None, profile: str | None = None
) -> list[WorkloadState]:
    """Baselines of a workload key or of a profile key (the profiles API)."""
    statement = select(BaselineRow.key, BaselineRow.generation, BaselineRow.state)
    if workload is not None:
        statement = statement.where(BaselineRow.workload_key == workload)
    if profile is not None:
        statement = statement.where(BaselineRow.profile_key == profile)
    rows = await session.execute(statement.order_by(BaselineRow.key).limit(50))
    return [WorkloadState.from_json(k, orjson.loads(blob), 16, g) for k, g, blob in rows]


async def reset(session: AsyncSession, *, workload: str | None = None, profile: str | None = None) -> int:
    """Delete baselines so they learn again; running workers see the row gone and start afresh."""
    statement = delete(BaselineRow)
    if workload is not None:
        statement = statement.where(BaselineRow.workload_key == workload)
    if profile is not None:
        statement = statement.where(BaselineRow.profile_key == profile)
    result = await session.execute(statement.returning(BaselineRow.key))
    return len(result.all())


async def save_model(session: AsyncSession, model: PopulationModel) -> None:
    meta, forest, centroids = model.to_bytes()
    values = {"name": POPULATION, "meta": orjson.loads(meta), "forest": forest, "centroids": centroids}
    statement = insert(ModelRow).values(values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[ModelRow.name],
            set_={
                "meta": statement.excluded.meta,
                "forest": statement.excluded.forest,
                "centroids": statement.excluded.centroids,
                "updated_at": func.now(),
            },
        )
    )


async def load_model(session: AsyncSession) -> PopulationModel | None:
    row = (await session.execute(select(ModelRow).where(ModelRow.name == POPULATION))).scalar_one_or_none()
    if row is None:
        return None
    return PopulationModel.from_bytes(orjson.dumps(row.meta), row.forest, row.centroids)


def _number(value: float) -> float | None:
    return None if value != value else round(float(value), 6)  # NaN (no samples) is null


async def feature_baselines(session: AsyncSession, profile: str) -> list[dict[str, object]]:
    """What the profiles API shows of the workloads running an image: per workload, its state and
    each feature's learned mean, standard deviation and quartiles (smoothed per-window values),
    and for a feature that follows the clock its mean per hour of day (UTC, 0-23)."""
    out: list[dict[str, object]] = []
    for state in await states_for(session, profile=profile):
        baseline = state.baseline
        entry: dict[str, object] = {
            "baseline_key": state.key,
            "workload_key": workload_key(state.workload),
            "state": "ready" if baseline is not None else "learning",
            "windows": baseline.windows
            if baseline is not None
            else int(max(state.smoothed_moments.n, default=0)),
            "alerts": dict(state.alerts),
            # a new image still learning is scored against this baseline of an earlier image
            "inherited_from": state.inherited_from,
        }
        if baseline is not None:
            gauges = state.gauge_names or tuple(f"gauge_{i}" for i in range(state.n_gauges))
            names = [*EVENT_FEATURES, *gauges]
            daily = baseline.daily
            entry["features"] = [
                {
                    "feature": name,
                    "mean": _number(baseline.mean[i]),
                    "std": _number(baseline.std[i]),
                    "q1": _number(baseline.q1[i]),
                    "q3": _number(baseline.q3[i]),
                    "hourly_mean": [_number(v) for v in daily.mean[:, i]]
                    if daily is not None and daily.features[i]
                    else None,
                }
                for i, name in enumerate(names)
            ]
        out.append(entry)
    return out
