"""``json``: samples in our own shape, the contract's ``WorkloadSample`` as JSON::

    {"samples": [{"time": "2026-05-01T12:00:00Z",
                  "workload": {"namespace": "shop", "owner_kind": "Deployment", "owner_name": "cart",
                               "pod": "cart-7d9f-x2", "container": "app", "image_digest": "sha256:…"},
                  "values": {"cpu_cores": 0.2, "memory_bytes": 73400320}}]}

A workload without ``cluster`` gets the request's default cluster. A sample stamped further ahead
than the horizon, or whose workload holds a NUL character, is rejected.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from qcdr_common.contracts.samples.v1 import WorkloadSample

from qcdr_ingest.samples.registry import Converted, Horizon, Rejection, ShapeError, register, unstorable

_SHAPE = 'body must be a JSON object {"samples": [...]}'


def size(body: Any) -> int:
    if not isinstance(body, dict) or "samples" not in body:
        raise ShapeError(_SHAPE)
    unknown = sorted(set(body) - {"samples"})
    if unknown:
        # a typo such as "sample" must not be dropped silently
        raise ShapeError(f"{_SHAPE}; unknown field(s): {', '.join(repr(k) for k in unknown)[:200]}")
    if not isinstance(body["samples"], list):
        raise ShapeError(f'"samples" must be an array, got {type(body["samples"]).__name__}')
    return len(body["samples"])


def _reason(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}"[:300] if where else str(error["msg"])[:300]


def convert(body: Any, cluster: str, horizon: Horizon) -> Converted:
    out = Converted([])
    for index, item in enumerate(body["samples"]):
        if not isinstance(item, dict):
            out.rejected.append(Rejection(index, f"a sample must be an object, got {type(item).__name__}"))
            continue
        workload = item.get("workload")
        if isinstance(workload, dict) and not workload.get("cluster"):
            item = {**item, "workload": {**workload, "cluster": cluster}}
        try:
            sample = WorkloadSample.model_validate(item)
        except ValidationError as exc:
            out.rejected.append(Rejection(index, _reason(exc)))
            continue
        refused = horizon.refuses(sample.time, "time") or unstorable(sample.workload)
        if refused:
            out.rejected.append(Rejection(index, refused))
            continue
        out.samples.append(sample)
        out.accepted += 1
    return out


register("json", "WorkloadSample objects: {samples: [{time, workload, values}]}", size, convert, __name__)
