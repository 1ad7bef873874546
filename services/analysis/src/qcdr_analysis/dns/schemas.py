"""API shapes of ``/v1/dns/classify``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_NAMES = 1000


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    names: list[str] = Field(
        min_length=1,
        max_length=MAX_NAMES,
        description="Query names (any case, trailing dot ok; punycode for IDNs, which score 0).",
    )


class NameScore(BaseModel):
    name: str = Field(description="The name as scored: lowercase, no trailing dot.")
    registered: str = Field(description="Its registered domain (dynamic-DNS hosts count as registered).")
    score: float = Field(ge=0, le=1, description="How machine-made the name looks, 0..1.")
    is_dga: bool = Field(description="score >= threshold (the model's threshold: about 1 % of real names).")
    reasons: list[str] = Field(description="Plain-language reasons when is_dga, else empty.")


class ClassifyResponse(BaseModel):
    threshold: float
    results: list[NameScore]
