"""Human-study statistics: how far clinicians agree with each other, and a judge with them.

Input throughout: `labels[item_id][rater_id] = label`, labels from `classes` (by default the
pairwise verdicts "A", "B", "tie"); a rater may be missing on any item. Single-number statistics
(kappas, AC1) return NaN when undefined, as the reference libraries do; summaries use None.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from itertools import combinations
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

Labels = Mapping[Hashable, Mapping[Hashable, str]]
DEFAULT_CLASSES: tuple[str, ...] = ("A", "B", "tie")
TIE = "tie"
Consensus = Literal["unanimous", "majority", "single_rater", "no_majority"]


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    classes = tuple(classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be at least two distinct labels, got {list(classes)}")
    return classes


def validate_labels(labels: Labels, classes: Sequence[str] = DEFAULT_CLASSES) -> None:
    """Raise ValueError naming the item and rater of the first label outside `classes`."""
    allowed = set(_check_classes(classes))
    for item, ratings in labels.items():
        if not isinstance(ratings, Mapping):
            raise ValueError(f"item {item!r}: expected a mapping rater -> label, "
                             f"got {type(ratings).__name__}")
        for rater, label in ratings.items():
            if label not in allowed:
                raise ValueError(f"item {item!r}, rater {rater!r}: label {label!r} "
                                 f"is not one of {list(classes)}")


def _check_pair(a: Sequence[str], b: Sequence[str], classes: Sequence[str]) -> None:
    if len(a) != len(b):
        raise ValueError(f"the two raters have {len(a)} and {len(b)} labels; they must label the same items")
    allowed = set(classes)
    for name, sequence in (("a", a), ("b", b)):
        for index, label in enumerate(sequence):
            if label not in allowed:
                raise ValueError(f"{name}[{index}]: label {label!r} is not one of {list(classes)}")


def _check_judge(judge: Mapping[Hashable, str], labels: Labels, classes: Sequence[str]) -> None:
    allowed = set(classes)
    for item, label in judge.items():
        if label not in allowed:
            raise ValueError(f"judge, item {item!r}: label {label!r} is not one of {list(classes)}")
    # Catches ids of different types or sources (1 vs "1"), which would otherwise compare nothing.
    if labels and not any(item in labels for item in judge):
        raise ValueError("the judge labels no item of the human study; check that item ids match")


def rater_ids(labels: Labels) -> list[Hashable]:
    """Raters in order of first appearance."""
    return list(dict.fromkeys(rater for ratings in labels.values() for rater in ratings))


def majority_label(labels: Sequence[str]) -> str | None:
    """The plurality label; None when no label or when the top count is shared (no majority)."""
    ranked = Counter(labels).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def consensus_strength(labels: Sequence[str]) -> Consensus:
    """unanimous (two or more raters, all agree), majority (plurality, not unanimous),
    single_rater, or no_majority (top count shared, or no rating)."""
    if majority_label(labels) is None:
        return "no_majority"
    if len(labels) == 1:
        return "single_rater"
    return "unanimous" if len(set(labels)) == 1 else "majority"


def fleiss_kappa(labels: Labels, classes: Sequence[str] = DEFAULT_CLASSES) -> float:
    """Fleiss' kappa, generalised as in Gwet's irrCAC (fleiss.kappa.raw) to items rated by
    different numbers of raters. With r_i ratings on item i, r_ik of them in class k:
      p_a  = mean over items with r_i >= 2 of sum_k r_ik (r_ik - 1) / (r_i (r_i - 1))
      pi_k = mean over items with r_i >= 1 of r_ik / r_i,   p_e = sum_k pi_k^2
      kappa = (p_a - p_e) / (1 - p_e)
    With the same number of raters on every item this is exactly Fleiss (1971). NaN when no item
    has two ratings or when every rating falls in one class (p_e = 1).
    """
    classes = _check_classes(classes)
    validate_labels(labels, classes)
    column = {label: index for index, label in enumerate(classes)}
    counts = np.zeros((len(labels), len(classes)))
    for row, ratings in enumerate(labels.values()):
        for label in ratings.values():
            counts[row, column[label]] += 1
    per_item = counts.sum(axis=1)
    counts, per_item = counts[per_item >= 1], per_item[per_item >= 1]
    multi = per_item >= 2
    if not multi.any():
        return math.nan
    pairs_agreeing = (counts[multi] * (counts[multi] - 1)).sum(axis=1)
    p_a = float(np.mean(pairs_agreeing / (per_item[multi] * (per_item[multi] - 1))))
    p_e = float(np.sum(np.mean(counts / per_item[:, None], axis=0) ** 2))
    return (p_a - p_e) / (1 - p_e) if p_e < 1 else math.nan


def confusion_matrix(a: Sequence[str], b: Sequence[str],
                     classes: Sequence[str] = DEFAULT_CLASSES) -> list[list[int]]:
    """Counts with rows = labels in `a`, columns = labels in `b`, both in `classes` order."""
    classes = _check_classes(classes)
    _check_pair(a, b, classes)
    index = {label: position for position, label in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    for left, right in zip(a, b, strict=True):
        matrix[index[left]][index[right]] += 1
    return matrix


def cohen_kappa(a: Sequence[str], b: Sequence[str], labels: Sequence[str] | None = None) -> float:
    """Cohen's kappa of two raters over the same items; `labels` defaults to the labels seen.
    NaN when there are no items or chance agreement is 1."""
    classes = tuple(labels) if labels is not None else tuple(sorted(set(a) | set(b)))
    if len(set(classes)) != len(classes):
        raise ValueError(f"labels must be distinct, got {list(classes)}")
    _check_pair(a, b, classes)
    if not a:
        return math.nan
    matrix = np.array(confusion_matrix(a, b, classes) if len(classes) >= 2 else [[len(a)]], dtype=float)
    n = matrix.sum()
    p_o = np.trace(matrix) / n
    p_e = float(np.sum(matrix.sum(axis=1) * matrix.sum(axis=0))) / n**2
    return float((p_o - p_e) / (1 - p_e)) if p_e < 1 else math.nan


def gwet_ac1(a: Sequence[str], b: Sequence[str], classes: Sequence[str] = DEFAULT_CLASSES) -> float:
    """Gwet's AC1 for two raters (Gwet 2008).

    p_a = share of items labelled alike; pi_k = mean of the two raters' shares of class k;
    p_e = sum_k pi_k (1 - pi_k) / (q - 1) with q = len(classes); AC1 = (p_a - p_e) / (1 - p_e).
    Unlike kappa it stays high when agreement is high but one class dominates. NaN with no items.
    """
    classes = _check_classes(classes)
    _check_pair(a, b, classes)
    if not a:
        return math.nan
    n = len(a)
    p_a = sum(left == right for left, right in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    pi = np.array([(count_a[label] + count_b[label]) / (2 * n) for label in classes])
    p_e = float(np.sum(pi * (1 - pi))) / (len(classes) - 1)
    return (p_a - p_e) / (1 - p_e)


def non_tie_subset(a: Sequence[str], b: Sequence[str], tie: str = TIE) -> tuple[list[str], list[str]]:
    """The items where neither rater said `tie`: did they pick the same winner?"""
    if len(a) != len(b):
        raise ValueError(f"the two raters have {len(a)} and {len(b)} labels; they must label the same items")
    kept = [(left, right) for left, right in zip(a, b, strict=True) if left != tie and right != tie]
    return [left for left, _ in kept], [right for _, right in kept]


def cohen_kappa_non_tie(a: Sequence[str], b: Sequence[str], classes: Sequence[str] = DEFAULT_CLASSES,
                        tie: str = TIE) -> float:
    """Cohen's kappa over the non-tie subset, with the non-tie classes as the label set."""
    _check_pair(a, b, _check_classes(classes))
    return cohen_kappa(*non_tie_subset(a, b, tie), labels=[label for label in classes if label != tie])


def gwet_ac1_non_tie(a: Sequence[str], b: Sequence[str], classes: Sequence[str] = DEFAULT_CLASSES,
                     tie: str = TIE) -> float:
    """Gwet's AC1 over the non-tie subset; q counts the non-tie classes only."""
    _check_pair(a, b, _check_classes(classes))
    return gwet_ac1(*non_tie_subset(a, b, tie), classes=[label for label in classes if label != tie])


def paired_ratings(labels: Labels, rater_a: Hashable, rater_b: Hashable) -> tuple[list[str], list[str]]:
    """The two raters' labels on the items both of them rated, in item order."""
    shared = [ratings for ratings in labels.values() if rater_a in ratings and rater_b in ratings]
    return [ratings[rater_a] for ratings in shared], [ratings[rater_b] for ratings in shared]


def _mean_defined(values: Sequence[float | None]) -> float | None:
    defined = [value for value in values if value is not None and not math.isnan(value)]
    return float(np.mean(defined)) if defined else None


def _defined(value: float) -> float | None:
    return None if math.isnan(value) else value


class PairAgreement(BaseModel):
    """Two raters on the items both rated; kappa and AC1 on the non-tie subset (None if undefined)."""

    model_config = ConfigDict(frozen=True)

    raters: tuple[Any, Any]
    n_shared: int
    n_non_tie: int
    exact_agreement: float | None
    cohen_kappa_non_tie: float | None
    gwet_ac1_non_tie: float | None


def pairwise_agreement(labels: Labels, classes: Sequence[str] = DEFAULT_CLASSES,
                       tie: str = TIE) -> list[PairAgreement]:
    """Every pair of raters: exact agreement on shared items, kappa and AC1 on the non-tie subset."""
    classes = _check_classes(classes)
    validate_labels(labels, classes)
    pairs = []
    for rater_a, rater_b in combinations(rater_ids(labels), 2):
        a, b = paired_ratings(labels, rater_a, rater_b)
        exact = sum(left == right for left, right in zip(a, b, strict=True)) / len(a) if a else None
        pairs.append(PairAgreement(
            raters=(rater_a, rater_b), n_shared=len(a), n_non_tie=len(non_tie_subset(a, b, tie)[0]),
            exact_agreement=exact, cohen_kappa_non_tie=_defined(cohen_kappa_non_tie(a, b, classes, tie)),
            gwet_ac1_non_tie=_defined(gwet_ac1_non_tie(a, b, classes, tie))))
    return pairs


class RaterBaseline(BaseModel):
    model_config = ConfigDict(frozen=True)

    rater: Any
    n_compared: int
    n_skipped: int
    agreement: float | None


class LeaveOneRaterOut(BaseModel):
    """Each rater against the majority of the others: the human ceiling for a judge."""

    model_config = ConfigDict(frozen=True)

    per_rater: list[RaterBaseline]
    mean: float | None
    n_skipped: int


def leave_one_rater_out(labels: Labels, classes: Sequence[str] = DEFAULT_CLASSES) -> LeaveOneRaterOut:
    """Exact agreement of each rater with the plurality of the remaining raters on the items they rated.

    Items where the remaining raters have no majority (nobody else rated it, or their top count is
    shared) are skipped and counted. `mean` is the unweighted mean over raters with any comparison.
    """
    validate_labels(labels, classes)
    per_rater = []
    for rater in rater_ids(labels):
        matches = compared = skipped = 0
        for ratings in labels.values():
            if rater not in ratings:
                continue
            others = majority_label([label for other, label in ratings.items() if other != rater])
            if others is None:
                skipped += 1
                continue
            compared += 1
            matches += ratings[rater] == others
        per_rater.append(RaterBaseline(rater=rater, n_compared=compared, n_skipped=skipped,
                                       agreement=matches / compared if compared else None))
    return LeaveOneRaterOut(per_rater=per_rater, mean=_mean_defined([row.agreement for row in per_rater]),
                            n_skipped=sum(row.n_skipped for row in per_rater))


class ExactAgreement(BaseModel):
    """Exact (all-class) agreement; each mean is unweighted over pairs or raters that share items."""

    model_config = ConfigDict(frozen=True)

    human_human: float | None
    n_rater_pairs: int
    human_judge: float | None
    n_raters_with_judge: int
    judge_majority: float | None
    n_items_judge_majority: int


def exact_agreement(labels: Labels, judge: Mapping[Hashable, str] | None = None,
                    classes: Sequence[str] = DEFAULT_CLASSES) -> ExactAgreement:
    """Human-human (mean over rater pairs), human-judge (mean over raters) and judge-majority
    (over items with a majority that the judge labelled)."""
    classes = _check_classes(classes)
    validate_labels(labels, classes)
    pair_values = [pair.exact_agreement for pair in pairwise_agreement(labels, classes)
                   if pair.exact_agreement is not None]
    rater_values: list[float] = []
    majority_hits: list[bool] = []
    if judge is not None:
        _check_judge(judge, labels, classes)
        for rater in rater_ids(labels):
            hits = [ratings[rater] == judge[item] for item, ratings in labels.items()
                    if rater in ratings and item in judge]
            if hits:
                rater_values.append(sum(hits) / len(hits))
        for item, ratings in labels.items():
            majority = majority_label(list(ratings.values()))
            if majority is not None and item in judge:
                majority_hits.append(judge[item] == majority)
    return ExactAgreement(
        human_human=_mean_defined(pair_values), n_rater_pairs=len(pair_values),
        human_judge=_mean_defined(rater_values), n_raters_with_judge=len(rater_values),
        judge_majority=sum(majority_hits) / len(majority_hits) if majority_hits else None,
        n_items_judge_majority=len(majority_hits))


class ConsensusGroup(BaseModel):
    model_config = ConfigDict(frozen=True)

    n_items: int
    n_judged: int
    correct: int
    accuracy: float | None


class ConsensusAccuracy(BaseModel):
    """Judge accuracy against the majority label, by how strongly the raters agreed.

    `overall` pools every item with a majority; no-majority items have no reference and are counted only.
    """

    model_config = ConfigDict(frozen=True)

    unanimous: ConsensusGroup
    majority: ConsensusGroup
    single_rater: ConsensusGroup
    overall: ConsensusGroup
    n_no_majority: int


def accuracy_by_consensus(labels: Labels, judge: Mapping[Hashable, str],
                          classes: Sequence[str] = DEFAULT_CLASSES) -> ConsensusAccuracy:
    classes = _check_classes(classes)
    validate_labels(labels, classes)
    _check_judge(judge, labels, classes)
    tallies = {group: [0, 0, 0] for group in ("unanimous", "majority", "single_rater", "overall")}
    no_majority = 0
    for item, ratings in labels.items():
        item_labels = list(ratings.values())
        strength = consensus_strength(item_labels)
        if strength == "no_majority":
            no_majority += 1
            continue
        judged = item in judge
        correct = judged and judge[item] == majority_label(item_labels)
        for group in (strength, "overall"):
            tallies[group][0] += 1
            tallies[group][1] += judged
            tallies[group][2] += correct

    def group(n_items: int, n_judged: int, correct: int) -> ConsensusGroup:
        return ConsensusGroup(n_items=n_items, n_judged=n_judged, correct=correct,
                              accuracy=correct / n_judged if n_judged else None)

    return ConsensusAccuracy(**{name: group(*counts) for name, counts in tallies.items()},
                             n_no_majority=no_majority)


def _json_ready(value: Any) -> Any:
    """NaN -> None, numpy scalars -> Python, mapping keys -> str, tuples -> lists."""
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def human_study_report(labels: Labels, judge: Mapping[Hashable, str] | None = None,
                       classes: Sequence[str] = DEFAULT_CLASSES) -> dict[str, Any]:
    """Everything the clinician study reports, as one JSON-serialisable dict (undefined values are None).

    Keys: classes, n_items, n_raters, n_ratings, majority {labels, n_no_majority}, fleiss_kappa,
    non_tie_pairwise {cohen_kappa_mean, gwet_ac1_mean, n_pairs_*, pairs}, leave_one_rater_out,
    exact_agreement, and, with a judge: judge_vs_majority_confusion (rows majority, columns judge,
    items with a majority the judge labelled) and accuracy_by_consensus (else None).
    """
    classes = _check_classes(classes)
    validate_labels(labels, classes)
    if not any(labels.values()):
        raise ValueError("the human study has no ratings")
    majorities = {item: majority_label(list(ratings.values())) for item, ratings in labels.items()}
    pairs = pairwise_agreement(labels, classes)
    report: dict[str, Any] = {
        "classes": list(classes),
        "n_items": len(labels),
        "n_raters": len(rater_ids(labels)),
        "n_ratings": sum(len(ratings) for ratings in labels.values()),
        "majority": {"labels": majorities,
                     "n_no_majority": sum(label is None for label in majorities.values())},
        "fleiss_kappa": fleiss_kappa(labels, classes),
        "non_tie_pairwise": {
            "cohen_kappa_mean": _mean_defined([pair.cohen_kappa_non_tie for pair in pairs]),
            "gwet_ac1_mean": _mean_defined([pair.gwet_ac1_non_tie for pair in pairs]),
            "n_pairs": len(pairs),
            "n_pairs_kappa_defined": sum(pair.cohen_kappa_non_tie is not None for pair in pairs),
            "n_pairs_ac1_defined": sum(pair.gwet_ac1_non_tie is not None for pair in pairs),
            "pairs": [pair.model_dump() for pair in pairs],
        },
        "leave_one_rater_out": leave_one_rater_out(labels, classes).model_dump(),
        "exact_agreement": exact_agreement(labels, judge, classes).model_dump(),
        "judge_vs_majority_confusion": None,
        "accuracy_by_consensus": None,
    }
    if judge is not None:
        judged = [item for item, majority in majorities.items() if majority is not None and item in judge]
        report["judge_vs_majority_confusion"] = {
            "rows": "majority", "columns": "judge", "classes": list(classes),
            "matrix": confusion_matrix([majorities[item] for item in judged],
                                       [judge[item] for item in judged], classes),
        }
        report["accuracy_by_consensus"] = accuracy_by_consensus(labels, judge, classes).model_dump()
    return _json_ready(report)
