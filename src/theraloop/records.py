"""Records shared by every stage: a help-seeker's context and one response to it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

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


LongInputPolicy = Literal["truncate", "skip"]
# About 3.5 characters per token: 6,000 characters of post plus 6,000 of response fit a 4,096-token context
# with the rubric and the judge's answer.
DEFAULT_MAX_CHARS = 6000


def _cut_middle(text: str, max_chars: int) -> str:
    """Head and tail of `text` with the middle replaced by a marker: a post's opening and its last lines
    (often the request) both survive."""
    marker = f"\n[... {len(text) - max_chars} characters cut to fit the model's context ...]\n"
    keep = max(0, max_chars - len(marker))
    return text[:keep // 2].rstrip() + marker + text[len(text) - (keep - keep // 2):].lstrip()


def fit_items(items: list[ResponseItem], max_chars: int = DEFAULT_MAX_CHARS, policy: LongInputPolicy = "truncate",
              source: str = "input") -> tuple[list[ResponseItem], list[str]]:
    """Items whose post or response exceeds `max_chars`, truncated (the full post kept in
    meta['full_context'] for the safety guard) or skipped; returns the items to run and one warning each."""
    kept, warnings = [], []
    for item in items:
        long_fields = [name for name in ("context", "response") if len(getattr(item, name)) > max_chars]
        if not long_fields:
            kept.append(item)
            continue
        sizes = ", ".join(f"{name} {len(getattr(item, name)):,} characters" for name in long_fields)
        if policy == "skip":
            warnings.append(f"{source}: item {item.id!r} skipped: {sizes} (limit {max_chars:,}; --on-long truncate "
                            "to keep it)")
            continue
        update: dict[str, Any] = {name: _cut_middle(getattr(item, name), max_chars) for name in long_fields}
        update["meta"] = {**item.meta, "truncated": long_fields,
                          **({"full_context": item.context} if "context" in long_fields else {})}
        kept.append(item.model_copy(update=update))
        warnings.append(f"{source}: item {item.id!r} truncated: {sizes} cut to {max_chars:,} (the safety guard still "
                        "reads the whole post)")
    return kept, warnings
