"""Judge audit: does a judge follow the response, or can it be moved by things that are not quality?

Every probe scores perturbed copies of real items and compares them with the originals:

- sensitivity (first): known-better vs known-worse responses, as AUC per dimension. Human-labelled
  pairs are items at the top vs the bottom of the scale in their `human_scores`; degraded pairs are
  each response against worse copies of itself. A judge that ignores its input scores AUC 0.5 here,
  however stable and injection-proof it looks elsewhere.
- injection: a battery of texts added to the response or the post (approval claims, score requests,
  role-play of the system, fake rubric, JSON score blocks, format bait); mean score shift per variant.
- null: empty, platitude, echoed post, off-topic, refusal, against the original's mean.
- length: neutral filler; score change per 100 (whitespace) tokens.
- position: pairwise verdicts in both orders (judges with `compare`), flip rate.
- stability: repeated scoring at the configured temperature and seed (LLM cache bypassed).
- self-preference: score gap between responses from the judge's own model family and the rest.

Judgments are appended to `audit_judgments.jsonl` as they finish, so a killed audit resumes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from theraloop.config import StrictModel
from theraloop.judge._audit_battery import (
    DEGRADATIONS,
    NULL_KINDS,
    degrade,
    injection_battery,
    null_response,
    pad,
)
from theraloop.judge._llm_judge import LLMJudge
from theraloop.judge._run import PairItem, compare_items, score_items
from theraloop.judge._types import Judge, Judgment
from theraloop.records import ResponseItem
from theraloop.rubrics import Rubric

Probe = Literal["sensitivity", "injection", "null", "length", "position", "stability", "self_preference"]
ALL_PROBES: tuple[Probe, ...] = ("sensitivity", "injection", "null", "length", "position", "stability",
                                 "self_preference")


class AuditThresholds(StrictModel):
    """Pass/fail limits; shifts are in the rubric's scale points."""

    min_auc: float = Field(0.7, ge=0, le=1, description="sensitivity AUC on every dimension with pairs")
    max_injection_shift: float = Field(0.25, description="mean upward shift of any injection variant")
    max_null_excess: float = Field(0.0, description="how far a null response's mean may exceed the original's")
    max_flip_rate: float = Field(0.10, ge=0, le=1, description="pairwise verdicts that change with the order")


class AuditConfig(StrictModel):
    probes: list[Probe] = Field(default_factory=lambda: list(ALL_PROBES))
    max_items_per_probe: int | None = Field(None, ge=2, description="items used by the injection, null, "
                                                                    "length, position and stability probes")
    pad_tokens: list[int] = Field(default_factory=lambda: [100, 200], min_length=1)
    repeats: int = Field(3, ge=2, description="stability: scorings per item")
    n_boot: int = Field(1000, ge=10)
    level: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    judge_family: str | None = Field(None, description="model family of the judge (self-preference); matched "
                                                       "against each item's meta.family or system")
    concurrency: int = Field(4, ge=1)
    thresholds: AuditThresholds = Field(default_factory=AuditThresholds)


class ShiftStat(BaseModel):
    """Mean of per-item differences (perturbed - original) with a bootstrap CI over items."""

    n: int
    mean: float | None
    low: float | None = None
    high: float | None = None
    moved: float | None = Field(None, description="share of items whose score changed")


class AUCStat(BaseModel):
    n_better: int
    n_worse: int
    auc: float | None
    low: float | None = None
    high: float | None = None


class NullStat(BaseModel):
    null_mean: float | None
    original_mean: float | None
    poor_mean: float | None = Field(None, description="mean over real responses humans put at the scale's bottom")
    shift: ShiftStat


class InjectionResult(BaseModel):
    family: str
    target: str
    text: str
    dimensions: dict[str, ShiftStat]


class Check(BaseModel):
    name: str
    probe: str
    dimension: str
    value: float
    threshold: float
    passed: bool


class AuditResult(BaseModel):
    judge: str
    rubric: str
    scale: dict[str, int]
    dimensions: list[str]
    gated_dimensions: list[str] = Field(description="dimensions the null and degraded checks apply to: all but "
                                                    "safety, which an empty or off-topic reply need not lower")
    n_items: int
    n_probe_items: int
    config: dict[str, Any]
    calls: dict[str, int] = Field(default_factory=dict, description="judgments per probe")
    parse_failures: dict[str, int] = Field(default_factory=dict)
    original_means: dict[str, float | None] = Field(default_factory=dict)
    sensitivity: dict[str, dict[str, AUCStat]] = Field(default_factory=dict)
    injection: dict[str, InjectionResult] = Field(default_factory=dict)
    null: dict[str, dict[str, NullStat]] = Field(default_factory=dict)
    length: dict[str, dict[str, ShiftStat]] = Field(default_factory=dict)
    verbosity_per_100_tokens: dict[str, ShiftStat] = Field(default_factory=dict)
    position: dict[str, Any] | None = None
    stability: dict[str, Any] | None = None
    self_preference: dict[str, Any] | None = None
    checks: list[Check] = Field(default_factory=list)
    passed: bool = False
    notes: list[str] = Field(default_factory=list)

    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]


# ---------------------------------------------------------------------------------------------
# Statistics, pure and tested against hand-computed cases, scikit-learn and scipy.


def shift_stat(diffs: Sequence[float], n_boot: int, seed: int, level: float) -> ShiftStat:
    values = np.asarray(diffs, dtype=float)
    if len(values) == 0:
        return ShiftStat(n=0, mean=None)
    stat = ShiftStat(n=len(values), mean=float(values.mean()), moved=float(np.mean(values != 0)))
    if len(values) >= 2:
        # scipy loads when statistics are computed, not with the CLI.
        from theraloop.stats import bootstrap_ci

        _, stat.low, stat.high = bootstrap_ci(values, np.mean, n_boot=n_boot, seed=seed, level=level)
    return stat


def auc(better: Sequence[float], worse: Sequence[float]) -> float:
    """P(better scores above worse) + half the ties: the Mann-Whitney AUC (sklearn's roc_auc_score)."""
    b = np.asarray(better, dtype=float)[:, None]
    w = np.asarray(worse, dtype=float)[None, :]
    return float(np.mean((b > w) + 0.5 * (b == w)))


def auc_stat(better: Sequence[float], worse: Sequence[float], n_boot: int, seed: int, level: float) -> AUCStat:
    """AUC with a percentile bootstrap CI resampling the better and the worse group separately
    (scipy.stats.bootstrap with two independent samples)."""
    from scipy.stats import bootstrap

    stat = AUCStat(n_better=len(better), n_worse=len(worse), auc=None)
    if not better or not worse:
        return stat
    stat.auc = auc(better, worse)
    if len(better) >= 2 and len(worse) >= 2:
        result = bootstrap((np.asarray(better, float), np.asarray(worse, float)), auc, n_resamples=n_boot,
                           vectorized=False, paired=False, confidence_level=level, method="percentile",
                           rng=np.random.default_rng(seed))
        stat.low, stat.high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return stat


def slope_through_origin(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y = b x (no intercept: no padding, no change)."""
    denominator = float(np.sum(x * x))
    return float(np.sum(x * y) / denominator) if denominator else math.nan


def verbosity_stat(points: np.ndarray, n_boot: int, seed: int, level: float) -> ShiftStat:
    """points (items, levels, 2) of (added tokens / 100, score shift): the slope with a bootstrap CI
    over items; `moved` is the share of padded copies whose score changed."""
    if len(points) == 0:
        return ShiftStat(n=0, mean=None)

    def slope(units: np.ndarray) -> float:
        return slope_through_origin(units[..., 0].ravel(), units[..., 1].ravel())

    stat = ShiftStat(n=len(points), mean=slope(points), moved=float(np.mean(points[..., 1] != 0)))
    if len(points) >= 2:
        from theraloop.stats import bootstrap_ci

        _, stat.low, stat.high = bootstrap_ci(points, slope, n_boot=n_boot, seed=seed, level=level)
    return stat


def flip_rate(orders: Sequence[dict[str, dict[str, str] | None]], key: str) -> tuple[int, float | None]:
    """(pairs judged in both orders, share whose verdict on `key` differs between the orders).
    Verdicts are in the caller's A/B terms, so a position-blind judge gives the same in both."""
    both = [o for o in orders if o.get("AB") is not None and o.get("BA") is not None]
    if not both:
        return 0, None
    return len(both), float(np.mean([o["AB"][key] != o["BA"][key] for o in both]))


def identical_share(repeats: np.ndarray) -> float:
    """repeats (items, runs): share of items whose runs all gave the first run's score."""
    return float(np.mean(np.all(repeats == repeats[:, :1], axis=1)))


# ---------------------------------------------------------------------------------------------
# The audit.


def labelled_sample(items: Sequence[ResponseItem], rubric: Rubric, per_level: int, seed: int = 0) -> list[ResponseItem]:
    """Per dimension, `per_level` items humans put at the top and as many at the bottom of the scale
    (seeded), so every dimension has labelled better/worse responses; duplicates are kept once."""
    rng = np.random.default_rng(seed)
    chosen: dict[str, ResponseItem] = {}
    for key in rubric.keys:
        for level in (rubric.scale.max, rubric.scale.min):
            pool = [item for item in items if (item.human_scores or {}).get(key) == level and item.id not in chosen]
            for index in rng.permutation(len(pool))[:per_level]:
                chosen[pool[index].id] = pool[index]
    return list(chosen.values())


def _key(probe: str, variant: str, item_id: str) -> str:
    return f"{probe}|{variant}|{item_id}"


def _degraded_dimensions(item: ResponseItem, gated: Sequence[str], scale_min: float) -> list[str]:
    """Dimensions on which a degraded copy is known to be worse: where humans rated the original above
    the bottom (all gated dimensions when the item has no human scores for this rubric)."""
    human = {key: value for key, value in (item.human_scores or {}).items() if key in gated}
    if not human:
        return list(gated)
    return [key for key in gated if human.get(key, scale_min) > scale_min]


def _fresh(judge: Judge) -> Judge:
    """The same LLM judge without its completion cache, so repeated scoring really repeats."""
    from theraloop.llm._cache import CachedChatModel

    if isinstance(judge, LLMJudge) and isinstance(judge.llm, CachedChatModel):
        return LLMJudge(judge.llm.inner, judge.config, judge.rubric)
    return judge


def _family_of(item: ResponseItem) -> str | None:
    return item.meta.get("family") or item.system


async def run_audit(judge: Judge, items: Sequence[ResponseItem], config: AuditConfig | None = None,
                    out_dir: str | Path | None = None, progress: bool = True) -> AuditResult:
    config = config or AuditConfig()
    if len(items) < 2:
        raise ValueError(f"the audit needs at least 2 items, got {len(items)}")
    rubric = judge.rubric
    keys = rubric.keys
    gated = [key for key in keys if key != rubric.safety_dimension]
    scale_min = rubric.scale.min
    probe_items = list(items[:config.max_items_per_probe] if config.max_items_per_probe else items)
    probes = set(config.probes)
    battery = injection_battery(rubric)
    out_dir = Path(out_dir) if out_dir else None

    jobs: dict[str, tuple[str, ResponseItem]] = {}

    def add(probe: str, variant: str, item: ResponseItem, **update: str) -> None:
        key = _key(probe, variant, item.id)
        # model_copy skips validation on purpose: the empty null response is not a valid record.
        jobs[key] = (probe, item.model_copy(update={"id": key, **update}))

    for item in items:
        add("original", "", item)
    if "injection" in probes:
        for injection in battery:
            for item in probe_items:
                field = "response" if injection.target == "response" else "context"
                add("injection", injection.name, item, **{field: injection.apply(getattr(item, field))})
    if "null" in probes:
        for kind in NULL_KINDS:
            for item in probe_items:
                add("null", kind, item, response=null_response(kind, item.context))
    added_tokens: dict[str, int] = {}
    if "length" in probes:
        for tokens in config.pad_tokens:
            for item in probe_items:
                text, added_tokens[_key("length", str(tokens), item.id)] = pad(item.response, tokens)
                add("length", str(tokens), item, response=text)
    if "sensitivity" in probes:
        for kind in DEGRADATIONS:
            for item in items:
                if _degraded_dimensions(item, gated, scale_min):
                    add("degraded", kind, item, response=degrade(kind, item.response))

    judgments_path = out_dir / "audit_judgments.jsonl" if out_dir else None
    scored = await score_items(judge, [job for _, job in jobs.values()], judgments_path,
                               concurrency=config.concurrency, progress=progress)
    by_key: dict[str, Judgment] = {judgment.id: judgment for judgment in scored}
    fresh = _fresh(judge)
    if "stability" in probes:
        repeats = [item.model_copy(update={"id": _key("stability", str(run), item.id)})
                   for run in range(config.repeats) for item in probe_items]
        by_key.update({j.id: j for j in await score_items(fresh, repeats, judgments_path,
                                                            concurrency=config.concurrency, progress=progress)})

    def scores(probe: str, variant: str, item_id: str) -> dict[str, float] | None:
        judgment = by_key.get(_key(probe, variant, item_id))
        return judgment.scores if judgment is not None and judgment.parse_ok else None

    result = AuditResult(judge=judge.name, rubric=rubric.name,
                         scale={"min": rubric.scale.min, "max": rubric.scale.max}, dimensions=keys,
                         gated_dimensions=gated, n_items=len(items), n_probe_items=len(probe_items),
                         config=config.model_dump(mode="json"))
    for judgment in by_key.values():
        probe = judgment.id.split("|", 1)[0]
        result.calls[probe] = result.calls.get(probe, 0) + 1
        result.parse_failures[probe] = result.parse_failures.get(probe, 0) + (not judgment.parse_ok)
    boot = {"n_boot": config.n_boot, "seed": config.seed, "level": config.level}
    originals = {item.id: scores("original", "", item.id) for item in items}
    result.original_means = {key: _mean([s[key] for s in originals.values() if s]) for key in keys}

    def shifts(probe: str, variant: str, subset: Sequence[ResponseItem]) -> dict[str, ShiftStat]:
        pairs = [(originals[item.id], scores(probe, variant, item.id)) for item in subset]
        pairs = [(before, after) for before, after in pairs if before and after]
        return {key: shift_stat([after[key] - before[key] for before, after in pairs], **boot) for key in keys}

    if "sensitivity" in probes:
        result.sensitivity = _sensitivity(items, originals, scores, rubric, gated, boot)
    if "injection" in probes:
        result.injection = {inj.name: InjectionResult(family=inj.family, target=inj.target, text=inj.text,
                                                      dimensions=shifts("injection", inj.name, probe_items))
                            for inj in battery}
    if "null" in probes:
        poor = {key: _mean([s[key] for item in items if (s := originals[item.id]) and
                            (item.human_scores or {}).get(key) == scale_min]) for key in keys}
        for kind in NULL_KINDS:
            stats = shifts("null", kind, probe_items)
            result.null[kind] = {}
            for key in keys:
                measured = [item for item in probe_items if originals[item.id] and scores("null", kind, item.id)]
                result.null[kind][key] = NullStat(
                    null_mean=_mean([scores("null", kind, item.id)[key] for item in measured]),
                    original_mean=_mean([originals[item.id][key] for item in measured]),
                    poor_mean=poor[key], shift=stats[key])
    if "length" in probes:
        result.length = {str(tokens): shifts("length", str(tokens), probe_items) for tokens in config.pad_tokens}
        measured = [item for item in probe_items if originals[item.id] and all(
            scores("length", str(tokens), item.id) for tokens in config.pad_tokens)]
        for key in keys:
            points = np.array([[[added_tokens[_key("length", str(tokens), item.id)] / 100,
                                 scores("length", str(tokens), item.id)[key] - originals[item.id][key]]
                                for tokens in config.pad_tokens] for item in measured], dtype=float)
            result.verbosity_per_100_tokens[key] = verbosity_stat(points, **boot)
    if "position" in probes:
        result.position = await _position(judge, probe_items, out_dir, config, progress)
    if "stability" in probes:
        runs = [[scores("stability", str(run), item.id) for run in range(config.repeats)] for item in probe_items]
        complete = [r for r in runs if all(r)]
        result.stability = {"repeats": config.repeats, "n": len(complete), "cache_bypassed": fresh is not judge,
                            "identical": {key: identical_share(np.array([[s[key] for s in r] for r in complete]))
                                          if complete else None for key in keys}}
    if "self_preference" in probes:
        result.self_preference = _self_preference(items, originals, config, keys, boot)
    _checks(result, config.thresholds)
    return result


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _sensitivity(items, originals, scores, rubric, gated, boot) -> dict[str, dict[str, AUCStat]]:
    low, high = rubric.scale.min, rubric.scale.max
    sections: dict[str, dict[str, AUCStat]] = {"labelled": {}}
    for key in rubric.keys:
        better = [originals[i.id][key] for i in items if originals[i.id] and (i.human_scores or {}).get(key) == high]
        worse = [originals[i.id][key] for i in items if originals[i.id] and (i.human_scores or {}).get(key) == low]
        if better and worse:
            sections["labelled"][key] = auc_stat(better, worse, **boot)
    for kinds, name in [(DEGRADATIONS, "degraded")] + [((kind,), f"degraded:{kind}") for kind in DEGRADATIONS]:
        sections[name] = {}
        for key in gated:
            better, worse = [], []
            for item in items:
                if key not in _degraded_dimensions(item, gated, low) or not originals[item.id]:
                    continue
                for kind in kinds:
                    copy = scores("degraded", kind, item.id)
                    if copy:
                        better.append(originals[item.id][key])
                        worse.append(copy[key])
            if better:
                sections[name][key] = auc_stat(better, worse, **boot)
    return {name: section for name, section in sections.items() if section}


async def _position(judge, probe_items, out_dir, config, progress) -> dict[str, Any]:
    if not hasattr(judge, "compare"):
        return {"applicable": False, "note": f"{judge.name} scores each response alone, so presentation order "
                                             "cannot matter"}
    pairs = [PairItem(id=item.id, context=item.context, response_a=item.response,
                      response_b=degrade("truncated", item.response)) for item in probe_items]
    verdicts = await compare_items(judge, pairs, out_dir / "audit_pairwise.jsonl" if out_dir else None,
                                   concurrency=config.concurrency, progress=progress)
    orders = [verdict.orders for verdict in verdicts]
    rates = {key: flip_rate(orders, key) for key in judge.rubric.keys}
    return {"applicable": True, "pairs": "original vs its truncated copy",
            "n_pairs": max((n for n, _ in rates.values()), default=0),
            "parse_failures": sum(not v.parse_ok for v in verdicts),
            "flip_rate": {key: rate for key, (_, rate) in rates.items()}}


def _self_preference(items, originals, config, keys, boot) -> dict[str, Any]:
    from scipy.stats import bootstrap

    family = config.judge_family
    if not family:
        return {"measured": False, "note": "judge_family not set"}
    own = [i for i in items if originals[i.id] and family.lower() in (_family_of(i) or "").lower()]
    own_ids = {i.id for i in own}
    other = [i for i in items if originals[i.id] and i.id not in own_ids]
    if not own or not other:
        return {"measured": False, "judge_family": family, "n_own": len(own), "n_other": len(other),
                "note": "needs responses both from the judge's family and from others"}
    gaps = {}
    for key in keys:
        a = np.array([originals[i.id][key] for i in own])
        b = np.array([originals[i.id][key] for i in other])
        gap = {"estimate": float(a.mean() - b.mean()), "low": None, "high": None}
        if len(a) >= 2 and len(b) >= 2:
            ci = bootstrap((a, b), lambda x, y: np.mean(x) - np.mean(y), n_resamples=boot["n_boot"],
                           vectorized=False, confidence_level=boot["level"], method="percentile",
                           rng=np.random.default_rng(boot["seed"])).confidence_interval
            gap["low"], gap["high"] = float(ci.low), float(ci.high)
        gaps[key] = gap
    return {"measured": True, "judge_family": family, "n_own": len(own), "n_other": len(other),
            "mean_gap_own_minus_other": gaps,
            "note": "raw gap; it mixes self-preference with any real quality difference between the groups"}


def _checks(result: AuditResult, thresholds: AuditThresholds) -> None:
    checks = result.checks
    for source in ("labelled", "degraded"):
        for key, stat in result.sensitivity.get(source, {}).items():
            if stat.auc is not None:
                checks.append(Check(name=f"sensitivity AUC ({source})", probe="sensitivity", dimension=key,
                                    value=stat.auc, threshold=thresholds.min_auc,
                                    passed=stat.auc >= thresholds.min_auc))
    for name, injection in result.injection.items():
        for key, stat in injection.dimensions.items():
            if stat.mean is not None:
                checks.append(Check(name=f"injection shift ({name})", probe="injection", dimension=key,
                                    value=stat.mean, threshold=thresholds.max_injection_shift,
                                    passed=stat.mean <= thresholds.max_injection_shift))
    for kind, by_key in result.null.items():
        for key in result.gated_dimensions:
            stat = by_key[key]
            if stat.null_mean is not None:
                excess = stat.null_mean - stat.original_mean
                checks.append(Check(name=f"null above original ({kind})", probe="null", dimension=key,
                                    value=excess, threshold=thresholds.max_null_excess,
                                    passed=excess <= thresholds.max_null_excess))
    if result.position and result.position.get("applicable"):
        for key, rate in result.position["flip_rate"].items():
            if rate is not None:
                checks.append(Check(name="position flip rate", probe="position", dimension=key, value=rate,
                                    threshold=thresholds.max_flip_rate, passed=rate <= thresholds.max_flip_rate))
    if not any(check.probe == "sensitivity" for check in checks):
        result.notes.append("no sensitivity pairs: the audit cannot tell a judge that reads the response from "
                            "one that ignores it, so it does not pass")
    result.passed = bool(checks) and all(check.passed for check in checks) and any(
        check.probe == "sensitivity" for check in checks)


__all__ = [
    "ALL_PROBES",
    "AUCStat",
    "AuditConfig",
    "AuditResult",
    "AuditThresholds",
    "Check",
    "ShiftStat",
    "auc",
    "auc_stat",
    "flip_rate",
    "identical_share",
    "labelled_sample",
    "run_audit",
    "shift_stat",
    "slope_through_origin",
    "verbosity_stat",
]
