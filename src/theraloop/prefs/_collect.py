"""Persona preference collection: K sampled personas rank each question's candidates per criterion.

For every question, K personas are drawn (seeded by the run seed and the question id). Each persona
sees the candidates under the labels A, B, C, ... in an order shuffled by (seed, question, persona),
so position bias averages out over personas, and answers one JSON object: per criterion, the list of
labels best first. Labels are mapped back to candidate ids before anything is stored. A ballot is
valid only when every ranking is a permutation of all labels (the JSON schema says so and
complete_structured retries until it holds); a ballot still invalid after the retries is recorded,
counted and reported, and never votes.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, field_validator

from theraloop._prompting import delimit, with_data_notice
from theraloop.config import StrictModel
from theraloop.data._personas import Persona, render_persona_prompt
from theraloop.io import InputError, JSONLAppender, write_json, write_jsonl
from theraloop.llm import ChatModel, ChatRequest, LLMConfig, Message, complete_structured, map_concurrent
from theraloop.prefs._generate import Candidate
from theraloop.prefs._voting import (
    PreferencePair,
    Tally,
    check_ranking,
    preference_pairs,
    rank_weights,
    tally,
)
from theraloop.rubrics import Rubric, load_rubric

LABELS = string.ascii_uppercase


class PrefsConfig(StrictModel):
    k: int = Field(3, ge=1, description="personas sampled per question")
    rubric: str = Field("modpo", description="rubric whose dimensions are the criteria")
    criteria: list[str] | None = Field(None, description="criteria to rank on (default: every rubric dimension)")
    all_pairs: bool = Field(False, description="also export every pair with a vote gap, not only best-vs-worst")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(256, ge=16)
    max_attempts: int = Field(3, ge=1, description="attempts before a ballot is recorded as invalid")
    seed: int = 0
    llm: LLMConfig = Field(default_factory=LLMConfig)

    @field_validator("criteria")
    @classmethod
    def _nonempty(cls, criteria: list[str] | None) -> list[str] | None:
        if criteria is not None and not criteria:
            raise ValueError("give at least one criterion")
        return criteria

    def load_rubric(self) -> Rubric:
        rubric = load_rubric(self.rubric)
        return rubric.subset(self.criteria) if self.criteria else rubric


class Ballot(BaseModel):
    """One persona's rankings of one question's candidates. `shown` is the display order: label i
    (A, B, ...) was candidate shown[i]. `rankings` holds candidate ids, best first, or None when invalid."""

    id: str
    question_id: str
    persona_id: str
    shown: list[str]
    rankings: dict[str, list[str]] | None = None
    ok: bool = False
    attempts: int = 0
    errors: list[str] = Field(default_factory=list)
    judge: str | None = None


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def ballot_id(question_id: str, persona_id: str) -> str:
    return f"{question_id}|{persona_id}"


def sample_personas(personas: Sequence[Persona], question_id: str, k: int, seed: int) -> list[Persona]:
    """K distinct personas for a question: the first K of a seeded permutation of the personas sorted by
    id, so the panel does not depend on input order and a larger K extends a smaller one's panel."""
    pool = sorted(personas, key=lambda persona: persona.id)
    order = np.random.default_rng([seed, _stable_int(question_id)]).permutation(len(pool))
    return [pool[index] for index in order[:k]]


def display_order(question_id: str, persona_id: str, n: int, seed: int) -> list[int]:
    """The order (indices into the question's candidates) in which this persona sees them."""
    rng = np.random.default_rng([seed, _stable_int(question_id), _stable_int(persona_id)])
    return [int(index) for index in rng.permutation(n)]


def ballot_schema(criteria: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    ranking = {"type": "array", "items": {"type": "string", "enum": list(labels)}, "minItems": len(labels),
               "maxItems": len(labels), "uniqueItems": True}
    return {"type": "object", "properties": {criterion: ranking for criterion in criteria},
            "required": list(criteria), "additionalProperties": False}


def ballot_prompt(rubric: Rubric, context: str, shown_texts: Sequence[str]) -> str:
    responses = "\n\n".join(f"### Response {LABELS[i]}\n{delimit(f'response_{LABELS[i]}', text)}"
                            for i, text in enumerate(shown_texts))
    criteria = "\n".join(f"- {d.key} ({d.name}): {d.question}" for d in rubric.dimensions)
    labels = ", ".join(LABELS[: len(shown_texts)])
    return (
        f"## What you wrote\n{delimit('help_seeker_post', context)}\n\n## Replies you received\n{responses}\n\n## Criteria\n{criteria}\n\n"
        f"For every criterion, rank ALL the replies from best to worst for you, as a list of their letters "
        f"({labels}), each letter exactly once. The order in which the replies appear says nothing about them."
    )


def _labels_to_ids(value: dict[str, list[str]], criteria: Sequence[str], shown: Sequence[str]) -> dict[str, list[str]]:
    labels = list(LABELS[: len(shown)])
    rankings = {}
    for criterion in criteria:
        check_ranking(value[criterion], labels)
        rankings[criterion] = [shown[labels.index(label)] for label in value[criterion]]
    return rankings


async def collect_ballot(llm: ChatModel, persona: Persona, candidates: Sequence[Candidate], rubric: Rubric,
                         config: PrefsConfig) -> Ballot:
    """Ask one persona to rank one question's candidates (all from the same question) on every criterion."""
    question_id, n = candidates[0].question_id, len(candidates)
    if n > len(LABELS):
        raise ValueError(f"question {question_id}: {n} candidates, at most {len(LABELS)} can be labelled")
    shown = [candidates[index] for index in display_order(question_id, persona.id, n, config.seed)]
    request = ChatRequest(
        messages=[Message(role="system", content=with_data_notice(render_persona_prompt(persona))),
                  Message(role="user", content=ballot_prompt(rubric, candidates[0].context, [c.response for c in shown]))],
        temperature=config.temperature, max_tokens=config.max_tokens,
        seed=_stable_int(f"{config.seed}\x1f{question_id}\x1f{persona.id}") & 0x7FFFFFFF,
        json_schema=ballot_schema(rubric.keys, LABELS[:n]), schema_name="ballot")
    result = await complete_structured(llm, request, max_attempts=config.max_attempts)
    ballot = Ballot(id=ballot_id(question_id, persona.id), question_id=question_id, persona_id=persona.id,
                    shown=[c.id for c in shown], attempts=result.attempts, errors=result.errors,
                    judge=f"{llm.backend}:{llm.model_id}")
    if result.ok:
        try:
            ballot.rankings = _labels_to_ids(result.value, rubric.keys, ballot.shown)
            ballot.ok = True
        except ValueError as exc:  # only reachable if a backend's schema check is weaker than ours
            ballot.errors.append(str(exc))
    return ballot


def group_candidates(candidates: Sequence[Candidate]) -> dict[str, list[Candidate]]:
    """Candidates by question, in first-seen question order and by k within a question."""
    groups: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault(candidate.question_id, []).append(candidate)
    for question_id, group in groups.items():
        ids = [candidate.id for candidate in group]
        if len(set(ids)) != len(ids):
            raise InputError(f"question {question_id}: duplicate candidate ids")
        group.sort(key=lambda candidate: candidate.k)
        if len({candidate.context for candidate in group}) > 1:
            raise InputError(f"question {question_id}: candidates disagree on the question text")
    return groups


async def collect_ballots(llm: ChatModel, candidates: Sequence[Candidate], personas: Sequence[Persona],
                          config: PrefsConfig, out_path: str | Path, concurrency: int = 4,
                          progress: bool = True) -> list[Ballot]:
    """Ballots of K personas for every question with at least two candidates, appended to out_path
    as they finish; ballots already there are kept (they must show the same candidates)."""
    rubric = config.load_rubric()
    if not personas:
        raise InputError("no personas to collect preferences from")
    groups = {qid: group for qid, group in group_candidates(candidates).items() if len(group) >= 2}
    appender = JSONLAppender(out_path)
    ballots = {record["id"]: Ballot.model_validate(record) for record in appender.existing}
    for ballot in ballots.values():
        group = groups.get(ballot.question_id)
        if group is not None and sorted(ballot.shown) != sorted(c.id for c in group):
            appender.close()
            raise InputError(f"{out_path}: ballot {ballot.id} ranked other candidates than the input has for "
                             f"question {ballot.question_id}; write to a new --out folder")
    panels = {qid: sample_personas(personas, qid, config.k, config.seed) for qid in groups}
    jobs = [(groups[qid], persona) for qid, panel in panels.items() for persona in panel
            if ballot_id(qid, persona.id) not in ballots]

    async def job(task: tuple[list[Candidate], Persona]) -> Ballot:
        return await collect_ballot(llm, task[1], task[0], rubric, config)

    def finished(_task: tuple, ballot: Ballot) -> None:
        ballots[ballot.id] = ballot
        appender.write(ballot)

    try:
        await map_concurrent(jobs, job, concurrency=concurrency, desc=f"persona rankings ({llm.model_id})",
                             on_result=finished, progress=progress)
    finally:
        appender.close()
    return [ballots[ballot_id(qid, persona.id)] for qid, panel in panels.items() for persona in panel
            if ballot_id(qid, persona.id) in ballots]


class VoteResult(BaseModel):
    criteria: list[str]
    weights_by_n: dict[int, list[float]]
    ballots: int
    valid_ballots: int
    invalid_ballots: int
    invalid: list[dict[str, Any]] = Field(description="ballot id and reason for each invalid ballot")
    tallies: dict[str, dict[str, Tally]] = Field(description="question id -> criterion -> tally")


def count_votes(ballots: Sequence[Ballot], groups: dict[str, list[Candidate]], criteria: Sequence[str]) -> VoteResult:
    """Tally valid ballots per question and criterion. Ballots are re-validated here (the file may have
    been edited): an invalid one is listed with its reason and does not vote."""
    valid: dict[str, list[Ballot]] = {}
    invalid = []
    for ballot in ballots:
        group = groups.get(ballot.question_id)
        reason = None
        if not ballot.ok or ballot.rankings is None:
            reason = "; ".join(ballot.errors[-1:]) or "no valid ranking"
        elif group is None:
            reason = "question has no candidates in the input"
        else:
            try:
                for criterion in criteria:
                    if criterion not in ballot.rankings:
                        raise ValueError(f"no ranking for criterion '{criterion}'")
                    check_ranking(ballot.rankings[criterion], [c.id for c in group])
            except ValueError as exc:
                reason = str(exc)
        if reason is None:
            valid.setdefault(ballot.question_id, []).append(ballot)
        else:
            invalid.append({"id": ballot.id, "reason": reason})
    tallies = {
        qid: {criterion: tally(qid, criterion, [b.rankings[criterion] for b in valid.get(qid, [])],
                               [c.id for c in group]) for criterion in criteria}
        for qid, group in groups.items() if qid in valid
    }
    sizes = sorted({len(group) for group in groups.values()})
    return VoteResult(criteria=list(criteria), weights_by_n={n: rank_weights(n) for n in sizes}, ballots=len(ballots),
                      valid_ballots=len(ballots) - len(invalid), invalid_ballots=len(invalid), invalid=invalid,
                      tallies=tallies)


def build_pairs(votes: VoteResult, groups: dict[str, list[Candidate]],
                all_pairs: bool = False) -> dict[str, list[PreferencePair]]:
    """Per criterion, the weighted preference pairs of every question (question order preserved)."""
    pairs: dict[str, list[PreferencePair]] = {criterion: [] for criterion in votes.criteria}
    for qid, by_criterion in votes.tallies.items():
        texts = {candidate.id: candidate.response for candidate in groups[qid]}
        prompt = groups[qid][0].context
        for criterion, result in by_criterion.items():
            pairs[criterion] += preference_pairs(result, prompt, texts, all_pairs)
    return pairs


class PrefsSummary(BaseModel):
    questions: int
    ballots: int
    valid_ballots: int
    invalid_ballots: int
    pairs: dict[str, int]


async def collect_preferences(llm: ChatModel, candidates: Sequence[Candidate], personas: Sequence[Persona],
                              config: PrefsConfig, out_dir: str | Path, concurrency: int = 4,
                              progress: bool = True) -> PrefsSummary:
    """The whole stage: ballots.jsonl (resumable), votes.json and pairs_<criterion>.jsonl in out_dir."""
    out_dir = Path(out_dir)
    criteria = config.load_rubric().keys
    ballots = await collect_ballots(llm, candidates, personas, config, out_dir / "ballots.jsonl", concurrency, progress)
    groups = group_candidates(candidates)
    votes = count_votes(ballots, groups, criteria)
    write_json(out_dir / "votes.json", votes.model_dump(mode="json"))
    pairs = build_pairs(votes, groups, config.all_pairs)
    for criterion, records in pairs.items():
        write_jsonl(out_dir / f"pairs_{criterion}.jsonl", records)
    return PrefsSummary(questions=len(votes.tallies), ballots=votes.ballots, valid_ballots=votes.valid_ballots,
                        invalid_ballots=votes.invalid_ballots,
                        pairs={criterion: len(records) for criterion, records in pairs.items()})
