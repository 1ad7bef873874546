"""API shapes of ``POST /v1/metrics/{source}``: the answer, and the request bodies as JSON Schema
(the body is read as bytes for its size limit, so FastAPI cannot derive the schema itself)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from qcdr_common.contracts.events.v1 import Workload
from qcdr_common.contracts.samples.v1 import MAX_SAMPLES_PER_ENVELOPE, METRIC_NAME

MAX_SAMPLES_PER_REQUEST = 50_000


class SampleRejection(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int = Field(description="json: the item in samples; prometheus: the series in timeseries. From 0.")
    sample: int | None = Field(
        default=None, description="prometheus: the sample within the series (none: the whole series)."
    )
    reason: str


class SamplesResult(BaseModel):
    """What happened to a batch of samples. Valid samples are published even when others are rejected."""

    source: str
    received: int = Field(description="Input samples in the request.")
    accepted: int = Field(
        description="Input samples published (prometheus: merged per workload and instant)."
    )
    ignored: int = Field(
        description="Input samples deliberately not used: unknown series, a counter's first sample."
    )
    rejected: list[SampleRejection] = Field(
        description="Why samples were rejected (the first few when there are many; see rejected_total)."
    )
    rejected_total: int = Field(description="Input samples rejected.")
    published: int = Field(description="WorkloadSamples published on ingest:samples.")
    envelopes: int = Field(description=f"Envelopes queued (at most {MAX_SAMPLES_PER_ENVELOPE} samples each).")


_STRING = {"type": "string", "maxLength": 300}
WORKLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Who was measured; cluster defaults to the cluster query parameter.",
    "properties": dict.fromkeys(Workload.model_fields, _STRING),
    "additionalProperties": False,
}
JSON_BODY_SCHEMA: dict[str, Any] = {
    "title": "JsonSamples",
    "description": "source json",
    "type": "object",
    "required": ["samples"],
    "additionalProperties": False,
    "properties": {
        "samples": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_SAMPLES_PER_REQUEST,
            "items": {
                "type": "object",
                "required": ["time", "workload", "values"],
                "additionalProperties": False,
                "properties": {
                    "time": {
                        "type": "string",
                        "format": "date-time",
                        "description": "RFC 3339, with a zone.",
                    },
                    "workload": WORKLOAD_SCHEMA,
                    "values": {
                        "type": "object",
                        "description": "Metric name (snake_case, unit in the name) -> finite value ≥ 0.",
                        "minProperties": 1,
                        "maxProperties": 64,
                        "propertyNames": {"pattern": METRIC_NAME.pattern},
                        "additionalProperties": {"type": "number", "minimum": 0},
                    },
                },
            },
        }
    },
}
_LABEL = {
    "type": "object",
    "required": ["name", "value"],
    "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
}
PROMETHEUS_BODY_SCHEMA: dict[str, Any] = {
    "title": "PrometheusRemoteWriteJson",
    "description": "source prometheus: the remote-write WriteRequest's fields as JSON",
    "type": "object",
    "required": ["timeseries"],
    "properties": {
        "timeseries": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["labels", "samples"],
                "properties": {
                    "labels": {"type": "array", "items": _LABEL},
                    "samples": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["value", "timestamp"],
                            "properties": {
                                "value": {"type": "number"},
                                "timestamp": {"type": "integer", "description": "Epoch milliseconds."},
                            },
                        },
                    },
                },
            },
        }
    },
}
