"""What configuration sections share: the base class (unknown keys refused, values frozen),
the pattern of topic-safe names and the backoff used by MQTT reconnects and camera reopens."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Names that end up in MQTT topics (device, cameras, cascade levels).
TOPIC_SAFE = r"^[A-Za-z0-9_-]+$"


class Section(BaseModel):
    """Base of every section: a misspelt key is an error, not a silently ignored setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BackoffConfig(Section):
    """Exponential backoff between attempts (doubling, with jitter)."""

    min_delay: float = Field(1.0, gt=0, description="First delay in seconds.")
    max_delay: float = Field(30.0, gt=0, description="Longest delay in seconds.")

    @model_validator(mode="after")
    def _order(self) -> BackoffConfig:
        if self.max_delay < self.min_delay:
            raise ValueError(f"max_delay ({self.max_delay}) is below min_delay ({self.min_delay})")
        return self
