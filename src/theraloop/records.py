"""Records shared by every stage: a help-seeker's context and one response to it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ResponseItem(BaseModel):
    """One response to one help-seeker. `system` names what produced it (a model, 'human', a file)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    context: str = Field(min_length=1, description="the help-seeker's post or conversation so far")
    response: str = Field(min_length=1)
    system: str | None = None
    human_scores: dict[str, float] | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("context", "response")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


def bundled_examples_path() -> Path:
    return Path(str(resources.files("theraloop") / "examples" / "examples.jsonl"))
