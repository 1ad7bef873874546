"""API shapes of ``/v1/dns/verdict``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class VerdictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=300, description="The queried name, any case, trailing dot ok."
    )


class VerdictRead(BaseModel):
    name: str = Field(description="The canonical name: lowercase, no trailing dot, IDNA (xn--).")
    blocked: bool
    reason: str
    threat: str | None = Field(description="The listing feeds' categories (comma-separated), or dga.")
    registered_domain: str | None = Field(description="From the bundled public-suffix list; null if none.")
    listed: str | None = Field(
        default=None, description="The listed entry that matched (the name or a parent)."
    )
    feeds: list[str] = Field(default_factory=list)
    dga_score: float | None = None
