"""What every sink is: a config model (unknown keys fail), and ``send`` that delivers a batch and
says, per message, whether it was delivered, should be retried, was refused for good, or may or
may not have arrived (a timeout after the request was sent).

The delivery worker around a sink owns retries, backoff, ``Retry-After``, rate limits,
concurrency, max age and dead letters, grouping, ``min_severity`` and metrics; a sink only
formats and sends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.secret_text import check_header_secret

from qcdr_response.outputs.message import OutputMessage


class Status(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # not delivered (connection refused, 429, 5xx): try again later
    UNKNOWN = "unknown"  # sent, no answer (read timeout): try again with the same id
    REJECTED = "rejected"  # refused for good (4xx other than 408/429): dead letter at once


@dataclass(frozen=True)
class Outcome:
    status: Status
    detail: str = ""
    retry_after_s: float | None = None  # from Retry-After, when the server said


MAX_AGE_LIMIT_S = 365 * 86400.0

# secrets never sent as they are: an HMAC key signs, a password is base64-encoded into the header
_NOT_SENT_AS_IS = frozenset({"secret", "password"})


class SinkConfig(BaseModel):
    """Settings every sink has; each sink's model adds its own (and a ``type`` literal)."""

    # errors never quote what was given: a webhook URL or a key
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    enabled: bool = True
    min_severity: Severity = Severity.LOW
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    # after this long undelivered, a message goes to the dead letters (a year at most: the times
    # computed from it must stay within datetime's range)
    max_age_s: float = Field(default=24 * 3600, gt=0, le=MAX_AGE_LIMIT_S)
    rate_per_s: float | None = Field(default=None, gt=0, description="Messages per second at most.")
    concurrency: int = Field(default=2, ge=1, le=64, description="Requests in flight at most.")
    batch_size: int = Field(default=1, ge=1, le=10_000)
    # grouping: findings with the same group key within this window are one message with a count
    group_window_s: float = Field(default=300.0, ge=0)
    group_by: tuple[str, ...] = Field(
        default=("category", "namespace"),
        description="Finding fields of the group key: category, namespace, pod, detector, severity, kind, "
        "cluster, image.",
    )
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _secrets_are_one_line(self) -> SinkConfig:
        """Secrets go into URLs and headers; one with a line break (a token file's second line)
        would fail inside httpx, whose message quotes the whole header."""
        for field, value in self:
            if field in _NOT_SENT_AS_IS:
                continue
            values = value.values() if isinstance(value, dict) else [value]
            for item in values:
                if isinstance(item, SecretStr):
                    try:
                        check_header_secret(item.get_secret_value())
                    except ValueError as exc:
                        raise ValueError(f"{field}: {exc}") from None
        return self


C = TypeVar("C", bound=SinkConfig)


class Sink(ABC, Generic[C]):
    """One configured sink. Made once per process by the delivery worker; ``aclose`` at the end."""

    sink_type: ClassVar[str]
    config_model: ClassVar[type[SinkConfig]]

    def __init__(self, config: C) -> None:
        self.config = config

    @abstractmethod
    async def send(self, messages: Sequence[OutputMessage]) -> list[Outcome]:
        """Deliver ``messages`` (at most ``config.batch_size``); one outcome per message, in order.
        Must not raise for delivery problems: turn them into outcomes."""

    async def aclose(self) -> None:
        """Release connections."""

    def describe(self) -> str:
        """Where it delivers, with secrets redacted (for logs and the API)."""
        return self.sink_type
