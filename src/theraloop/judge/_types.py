"""What every judge produces, and the Protocol the refine loop and arena use to call any judge."""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from theraloop.records import ResponseItem
from theraloop.rubrics import Rubric

Winner = Literal["A", "B", "tie"]


class Judgment(BaseModel):
    """Scores for one response. `scores` is None when the judge's output never parsed: a parse
    failure is recorded and counted, never turned into a score."""

    id: str
    system: str | None = None
    scores: dict[str, float] | None = None
    rationales: dict[str, str] | None = None
    parse_ok: bool = True
    attempts: int = 1
    errors: list[str] = Field(default_factory=list)
    judge: str
    rubric: str
    config_hash: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calibrated: bool = False


class PairJudgment(BaseModel):
    """A pairwise verdict per dimension, in terms of the caller's A and B whatever order the judge saw.

    `orders` holds each presentation's verdicts (`AB`: A shown first; `BA`: B shown first) so
    position bias can be measured; `winners` is the combined verdict (orders that disagree make a tie).
    """

    id: str
    system_a: str | None = None
    system_b: str | None = None
    winners: dict[str, Winner] | None = None
    orders: dict[str, dict[str, Winner] | None] = Field(default_factory=dict)
    rationales: dict[str, dict[str, str]] = Field(default_factory=dict)
    parse_ok: bool = True
    attempts: int = 0
    errors: list[str] = Field(default_factory=list)
    judge: str
    rubric: str
    config_hash: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


@runtime_checkable
class Judge(Protocol):
    """Anything that scores a response on a rubric: the LLM judge, the trained encoder judge, ..."""

    @property
    def rubric(self) -> Rubric: ...

    @property
    def name(self) -> str: ...

    async def score(self, item: ResponseItem) -> Judgment: ...
