"""Symmetric weighted voting over persona rankings, and preference pairs from the vote.

Each valid ballot ranks all n candidates of a question on a criterion. Rank r (0 = best) earns
`rank_weights(n)[r]`: linearly spaced from +10 to -10, so five candidates get 10, 5, 0, -5, -10, the
middle rank counts nothing and every ballot's weights sum to zero. A candidate's vote is the sum over
ballots.

Ties in the vote are broken, in order, by: more first places (some voter thought it best), fewer last
places (fewer thought it worst), then a fixed pseudo-random order, sha256(question id, candidate id).
The last rule is deterministic but, unlike candidate order, does not favour any generation index.
A pair is only exported when the two candidates' votes differ, so an all-tied question yields none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

MAX_WEIGHT = 10.0


def rank_weights(n: int) -> list[float]:
    """Weights for ranks 0..n-1 (best first), linearly spaced and symmetric around 0: +10 ... -10."""
    if n < 1:
        raise ValueError(f"need at least one candidate, got {n}")
    if n == 1:
        return [0.0]
    return [float(weight) for weight in np.linspace(MAX_WEIGHT, -MAX_WEIGHT, n)]


def check_ranking(ranking: Sequence[str], candidate_ids: Sequence[str]) -> None:
    """Raise ValueError unless `ranking` lists every candidate exactly once."""
    expected = set(candidate_ids)
    duplicates = sorted({item for item in ranking if list(ranking).count(item) > 1})
    problems = []
    if duplicates:
        problems.append(f"repeated {duplicates}")
    if missing := sorted(expected - set(ranking)):
        problems.append(f"missing {missing}")
    if unknown := sorted(set(ranking) - expected):
        problems.append(f"unknown {unknown}")
    if problems:
        raise ValueError("ranking is not a permutation of the candidates: " + "; ".join(problems))


class Tally(BaseModel):
    """The vote on one question and criterion. `ranking` is best first, ties broken as documented."""

    question_id: str
    criterion: str
    n_ballots: int
    totals: dict[str, float]
    first_places: dict[str, int]
    last_places: dict[str, int]
    ranking: list[str]


def _tiebreak(question_id: str, candidate_id: str) -> str:
    return hashlib.sha256(f"{question_id}\x1f{candidate_id}".encode()).hexdigest()


def tally(question_id: str, criterion: str, rankings: Sequence[Sequence[str]], candidate_ids: Sequence[str]) -> Tally:
    """Sum the symmetric rank weights of valid rankings (each must be a permutation of candidate_ids)."""
    weights = rank_weights(len(candidate_ids))
    totals = dict.fromkeys(candidate_ids, 0.0)
    firsts = dict.fromkeys(candidate_ids, 0)
    lasts = dict.fromkeys(candidate_ids, 0)
    for ranking in rankings:
        check_ranking(ranking, candidate_ids)
        for rank, candidate in enumerate(ranking):
            totals[candidate] += weights[rank]
        firsts[ranking[0]] += 1
        lasts[ranking[-1]] += 1
    order = sorted(candidate_ids, key=lambda c: (-totals[c], -firsts[c], lasts[c], _tiebreak(question_id, c)))
    return Tally(question_id=question_id, criterion=criterion, n_ballots=len(rankings), totals=totals,
                 first_places=firsts, last_places=lasts, ranking=order)


class PreferencePair(BaseModel):
    """A TRL preference record (prompt/chosen/rejected) with where it came from.

    `weight` is the vote gap over its maximum (every ballot ranking `chosen` first and `rejected`
    last), so it lies in (0, 1]; files from elsewhere may carry only prompt/chosen/rejected.
    """

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1)
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)
    criterion: str | None = None
    weight: float = Field(1.0, ge=0.0)
    question_id: str | None = None
    chosen_id: str | None = None
    rejected_id: str | None = None
    vote_gap: float | None = None
    n_ballots: int | None = None


def preference_pairs(result: Tally, prompt: str, texts: dict[str, str], all_pairs: bool = False) -> list[PreferencePair]:
    """Best-vs-worst (or every ordered pair with a vote gap) of one tally, as weighted TRL records."""
    if result.n_ballots == 0:
        return []
    max_gap = result.n_ballots * 2 * MAX_WEIGHT
    ranking = result.ranking
    if all_pairs:
        candidates = [(ranking[i], ranking[j]) for i in range(len(ranking)) for j in range(i + 1, len(ranking))]
    else:
        candidates = [(ranking[0], ranking[-1])] if len(ranking) > 1 else []
    pairs = []
    for chosen, rejected in candidates:
        gap = result.totals[chosen] - result.totals[rejected]
        if gap <= 0:
            continue
        pairs.append(PreferencePair(prompt=prompt, chosen=texts[chosen], rejected=texts[rejected],
                                    criterion=result.criterion, weight=gap / max_gap, question_id=result.question_id,
                                    chosen_id=chosen, rejected_id=rejected, vote_gap=gap, n_ballots=result.n_ballots))
    return pairs
