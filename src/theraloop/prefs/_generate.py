"""Candidate generation: N sampled responses per help-seeker question, on any backend, resumable."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field, field_validator

from theraloop.config import StrictModel
from theraloop.io import JSONLAppender, check_unique_ids, read_jsonl
from theraloop.llm import ChatModel, ChatRequest, LLMConfig, Message, map_concurrent

DEFAULT_THERAPIST_PROMPT = (
    "You are a warm, skilled mental-health supporter replying to a person who has posted about a difficulty. "
    "Respond directly to them in a few short paragraphs: acknowledge their feelings, reflect what they said, "
    "support their own choices and strengths, and point to professional or crisis help if there is any risk. "
    "Do not diagnose and do not lecture."
)


class Question(BaseModel):
    """A help-seeker's post. Also read from `context`, `prompt` or `question` fields (and EPITOME posts)."""

    id: str = Field(min_length=1)
    text: str = Field(min_length=1, validation_alias=AliasChoices("text", "context", "prompt", "question"))

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value


class Candidate(BaseModel):
    """One generated response. Its fields are a superset of ResponseItem (id, context, response, system),
    so a candidates file can be judged as it is."""

    id: str
    question_id: str
    k: int = Field(ge=0, description="candidate index within the question, 0..n-1")
    context: str
    response: str = Field(min_length=1)
    system: str
    seed: int
    temperature: float
    finish_reason: str | None = None
    completion_tokens: int = 0


class GenerateConfig(StrictModel):
    n: int = Field(5, ge=1, description="candidates per question")
    temperature: float = Field(0.8, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1)
    max_attempts: int = Field(3, ge=1, description="attempts (new seed each) when a reply comes back empty")
    seed: int = 0
    system_prompt: str = DEFAULT_THERAPIST_PROMPT
    llm: LLMConfig = Field(default_factory=LLMConfig)


def candidate_id(question_id: str, k: int) -> str:
    return f"{question_id}#{k}"


def candidate_seed(base_seed: int, question_id: str, k: int, attempt: int = 0) -> int:
    """A 31-bit seed per (run seed, question, candidate, attempt). Distinct seeds make the completion
    cache (keyed by the request, seed included) store each candidate separately and keep sampled
    candidates different even on backends that reuse one RNG state."""
    digest = hashlib.sha256(f"{base_seed}\x1f{question_id}\x1f{k}\x1f{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def read_questions(path: str | Path) -> list[Question]:
    questions = read_jsonl(path, Question)
    check_unique_ids(questions, path)
    return questions


def epitome_questions(root: str | Path, split: str, limit: int | None = None, seed: int = 42) -> list[Question]:
    """Seeker posts of the MODPO train or test split (see `theraloop.data.modpo_split`)."""
    from theraloop.data import modpo_split

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    posts = getattr(modpo_split(root, seed=seed), split)
    return [Question(id=post.id, text=post.text) for post in posts[:limit]]


class GenerationSummary(BaseModel):
    questions: int
    candidates: int
    generated: int = Field(description="candidates generated in this run (the rest were already on disk)")
    failed: list[str] = Field(default_factory=list, description="candidate ids left empty after every attempt")


async def _generate_one(llm: ChatModel, config: GenerateConfig, question: Question, k: int) -> Candidate | None:
    for attempt in range(config.max_attempts):
        seed = candidate_seed(config.seed, question.id, k, attempt)
        request = ChatRequest(messages=[Message(role="system", content=config.system_prompt),
                                        Message(role="user", content=question.text)],
                              temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens,
                              seed=seed)
        response = await llm.complete(request)
        text = response.text.strip()
        if text:
            return Candidate(id=candidate_id(question.id, k), question_id=question.id, k=k, context=question.text,
                             response=text, system=f"{llm.backend}:{llm.model_id}", seed=seed,
                             temperature=config.temperature, finish_reason=response.finish_reason,
                             completion_tokens=response.usage.completion_tokens)
    return None


async def generate_candidates(llm: ChatModel, questions: Sequence[Question], config: GenerateConfig,
                              out_path: str | Path, concurrency: int = 4,
                              progress: bool = True) -> tuple[list[Candidate], GenerationSummary]:
    """Generate `config.n` candidates per question, appending each to out_path as it finishes.

    (question, k) pairs already in out_path are skipped, so a killed run continues. Returns every
    candidate of these questions in (question, k) order, and a summary.
    """
    appender = JSONLAppender(out_path)
    done = {(record["question_id"], record["k"]): Candidate.model_validate(record) for record in appender.existing}
    jobs = [(question, k) for question in questions for k in range(config.n) if (question.id, k) not in done]
    failed: list[str] = []

    async def job(task: tuple[Question, int]) -> Candidate | None:
        return await _generate_one(llm, config, *task)

    def finished(task: tuple[Question, int], candidate: Candidate | None) -> None:
        if candidate is None:
            failed.append(candidate_id(task[0].id, task[1]))
            return
        done[(candidate.question_id, candidate.k)] = candidate
        appender.write(candidate)

    try:
        await map_concurrent(jobs, job, concurrency=concurrency, desc=f"generating ({llm.model_id})",
                             on_result=finished, progress=progress)
    finally:
        appender.close()
    candidates = [done[(q.id, k)] for q in questions for k in range(config.n) if (q.id, k) in done]
    summary = GenerationSummary(questions=len(questions), candidates=len(candidates),
                                generated=len(jobs) - len(failed), failed=sorted(failed))
    return candidates, summary
