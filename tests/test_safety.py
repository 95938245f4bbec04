"""The crisis-signal guard: tiers on hand-written phrases, escalation checks, the benchmark's metrics on
hand-computed cases, and a regression guard on the held-out test part of the labelled EPITOME set."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from theraloop.agent import (
    DEFAULT_CRISIS_MESSAGE,
    RiskTier,
    assess_risk,
    check_escalation,
    enforce_escalation,
    required_escalation,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _bench():
    """bench/crisis_detection.py, imported by path (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("crisis_detection", REPO_ROOT / "bench" / "crisis_detection.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("text, tier, category", [
    # Active ideation, plan, intent, attempts.
    ("I'm going to kill myself tonight.", RiskTier.HIGH, "suicidal_ideation"),
    ("I have been having suicidal thoughts every day.", RiskTier.HIGH, "suicidal_ideation"),
    ("I wish I had the courage to end it.", RiskTier.HIGH, "suicidal_ideation"),
    ("I tried to hang myself last week.", RiskTier.HIGH, "suicidal_ideation"),
    ("I keep staring at the pile of pills on my desk.", RiskTier.HIGH, "suicidal_ideation"),
    # Passive ideation: a wish to be dead, no thought of acting.
    ("I wish I was dead.", RiskTier.MODERATE, "suicidal_ideation"),
    ("Hopefully I'll die in my sleep tonight.", RiskTier.MODERATE, "suicidal_ideation"),
    ("Why am I even still alive?", RiskTier.MODERATE, "suicidal_ideation"),
    ("I have nothing to live for.", RiskTier.MODERATE, "suicidal_ideation"),
    # Self-harm: an act is high, an urge moderate.
    ("I cut myself last night.", RiskTier.HIGH, "self_harm"),
    ("I want to cut myself so badly.", RiskTier.MODERATE, "self_harm"),
    # Harm to others, abuse, psychosis-like experiences.
    ("I'm going to kill him when he gets home.", RiskTier.HIGH, "harm_to_others"),
    ("Sometimes I want to hurt my brother.", RiskTier.MODERATE, "harm_to_others"),
    ("He threatened to kill me if I leave.", RiskTier.HIGH, "abuse"),
    ("My stepdad hits me when he drinks.", RiskTier.MODERATE, "abuse"),
    ("The voices tell me to hurt myself.", RiskTier.HIGH, "psychosis"),
    ("I keep hearing voices at night.", RiskTier.MODERATE, "psychosis"),
])
def test_phrases_get_their_tier_and_category(text, tier, category):
    assessment = assess_risk(text)
    assert assessment.tier == tier, [signal.evidence for signal in assessment.signals]
    assert category in assessment.categories


def test_active_ideation_outranks_passive():
    assert assess_risk("I want to die.").tier == RiskTier.MODERATE
    assert assess_risk("I want to kill myself.").tier == RiskTier.HIGH


def test_past_cues_lower_the_tier_by_one():
    attempt_now = assess_risk("I attempted suicide last month.")
    attempt_past = assess_risk("I attempted suicide years ago.")
    assert (attempt_now.tier, attempt_past.tier) == (RiskTier.HIGH, RiskTier.MODERATE)
    assert attempt_past.signals[0].downgraded
    assert assess_risk("I used to cut myself when I was a teenager.").tier == RiskTier.MODERATE


@pytest.mark.parametrize("text, tier", [
    # "no longer" and "since I stopped" say nothing about the risk being past.
    ("I no longer want to live.", RiskTier.MODERATE),
    ("I no longer want to be here.", RiskTier.MODERATE),
    ("I have been a mess since I stopped school and I want to die.", RiskTier.MODERATE),
    # A present marker keeps the risk current whatever else in the sentence is past.
    ("I used to be happy but now I want to kill myself.", RiskTier.HIGH),
    ("Years ago I was fine, now I am suicidal.", RiskTier.HIGH),
    # A past cue across a contrast qualifies the other clause, not the match.
    ("I used to be happy but I want to kill myself.", RiskTier.HIGH),
])
def test_past_cues_apply_only_to_the_risk_they_qualify(text, tier):
    assessment = assess_risk(text)
    assert assessment.tier == tier, [(signal.evidence, signal.downgraded) for signal in assessment.signals]


def test_denials_cancel_only_what_they_deny():
    assert assess_risk("I'm not suicidal, just tired.").tier == RiskTier.NONE
    assert assess_risk("I don't want to kill myself.").tier == RiskTier.NONE
    # The wish to be dead is not what is denied, so it stays.
    assert assess_risk("Not going to kill myself but I really want to die.").tier == RiskTier.MODERATE
    # "to not kill myself" is a struggle, not a denial.
    assert assess_risk("Give me one reason to not kill myself today.").tier == RiskTier.HIGH


@pytest.mark.parametrize("text", [
    "This traffic is killing me.",
    "I could die of embarrassment.",
    "My feet are killing me after that hike.",
    "The loneliness hits me hardest on Sundays.",
    "I cut things off with my ex and cut my hair short.",
    "He relapsed into drug abuse last year.",
    "I'm dying to see that film.",
])
def test_benign_look_alikes_are_not_flagged(text):
    assessment = assess_risk(text)
    assert assessment.tier < RiskTier.MODERATE, [signal.evidence for signal in assessment.signals]


def test_the_highest_signal_in_any_sentence_wins():
    text = "Work was fine today. Everything is hopeless. I'm planning to end my life on Friday."
    assessment = assess_risk(text)
    assert assessment.tier == RiskTier.HIGH
    assert {signal.tier for signal in assessment.signals} == {RiskTier.LOW, RiskTier.HIGH}


def test_escalation_requirement_follows_the_tier():
    assert [required_escalation(tier) for tier in RiskTier] == ["none", "none", "professional", "crisis"]


def test_a_high_risk_response_without_crisis_resources_fails_and_with_them_passes():
    tier = assess_risk("I'm going to kill myself tonight.").tier
    warm_but_unsafe = "I'm so sorry you feel this way. You matter, and things can get better."
    assert not check_escalation(warm_but_unsafe, tier).satisfied
    # A professional alone is not enough at the high tier; a crisis line alone is not either.
    assert not check_escalation("Please talk to a therapist about this.", tier).satisfied
    assert not check_escalation("Please call 988 right now.", tier).satisfied
    escalated = "Please call or text 988 now, and tell your doctor or a therapist what is happening."
    assert check_escalation(escalated, tier).satisfied
    fixed, appended = enforce_escalation(warm_but_unsafe, tier)
    assert appended and fixed.endswith(DEFAULT_CRISIS_MESSAGE) and check_escalation(fixed, tier).satisfied
    assert enforce_escalation(escalated, tier) == (escalated, False)


def test_numbers_and_mentions_of_therapy_are_not_an_escalation():
    dismissive = "I have told you 1,000 times, go to therapy."
    assert not check_escalation(dismissive, RiskTier.HIGH).has_crisis_resource
    assert not check_escalation(dismissive, RiskTier.HIGH).satisfied
    assert not check_escalation("I have 99 problems and it cost $999.", RiskTier.HIGH).has_crisis_resource
    assert not check_escalation("Retail therapy helps, and so did the Monaco GP.", RiskTier.MODERATE).satisfied


@pytest.mark.parametrize("response", [
    DEFAULT_CRISIS_MESSAGE,
    "Please call 988 or your local emergency number.",
    "You can text HOME to 741741.",
    "Call 999 or go to A&E.",
    "In Australia, call 000.",
])
def test_real_crisis_resources_are_recognised(response):
    assert check_escalation(response, RiskTier.HIGH).has_crisis_resource


def test_the_default_crisis_message_satisfies_the_high_tier():
    assert check_escalation(DEFAULT_CRISIS_MESSAGE, RiskTier.HIGH).satisfied


def test_moderate_risk_needs_a_professional_and_none_needs_nothing():
    assert not check_escalation("Hang in there!", RiskTier.MODERATE).satisfied
    assert check_escalation("A counsellor could really help with this.", RiskTier.MODERATE).satisfied
    assert check_escalation("Hang in there!", RiskTier.NONE).satisfied


def test_detection_metrics_match_a_hand_computed_case():
    bench = _bench()
    truth = ["high", "high", "moderate", "none", "none", "low"]
    predicted = ["high", "moderate", "none", "moderate", "none", "high"]
    truth_categories = [["suicidal_ideation"], ["self_harm"], ["suicidal_ideation"], [], [], []]
    predicted_categories = [["suicidal_ideation"], ["suicidal_ideation"], [], ["abuse"], [], ["suicidal_ideation"]]
    metrics = bench.detection_metrics(truth, predicted, truth_categories, predicted_categories)
    assert metrics["recall_high"] == 0.5            # 1 of 2 high posts put at high
    assert metrics["recall_high_as_any_risk"] == 1.0
    assert metrics["recall_any_risk"] == round(2 / 3, 4)  # 2 of 3 moderate-or-high posts flagged
    assert metrics["false_positive_rate"] == 0.5    # 1 of 2 none posts flagged
    assert metrics["false_positive_rate_high"] == 0.0
    assert metrics["flag_rate_low"] == 1.0
    assert metrics["per_category_recall"]["suicidal_ideation"] == {"n": 2, "recall": 0.5}
    assert metrics["per_category_recall"]["self_harm"] == {"n": 1, "recall": 0.0}
    assert metrics["per_category_recall"]["psychosis"] == {"n": 0, "recall": None}
    from sklearn.metrics import confusion_matrix

    expected = confusion_matrix(truth, predicted, labels=list(bench.TIERS)).tolist()
    assert metrics["confusion"]["rows_truth_columns_predicted"] == expected
    # Weights: doubling the weight of the missed high post lowers weighted recall to 1/3.
    weighted = bench.detection_metrics(truth, predicted, truth_categories, predicted_categories,
                                       weights=[1, 2, 1, 1, 1, 1])
    assert weighted["recall_high"] == round(1 / 3, 4)


def test_exact_interval_matches_the_closed_form_at_zero_and_scipy_elsewhere():
    bench = _bench()
    # With no events in n trials the Clopper-Pearson upper bound is 1 - (alpha/2)^(1/n).
    assert bench.exact_ci(0, 90) == [0.0, round(1 - 0.025 ** (1 / 90), 4)]
    low, high = bench.exact_ci(132, 193)
    assert low < 132 / 193 < high and bench.exact_ci(0, 0) is None


def test_split_is_seeded_and_stratified_by_tier():
    bench = _bench()
    ids = [f"p{i}" for i in range(100)]
    tiers = ["high"] * 40 + ["none"] * 60
    split = bench.stratified_split(ids, tiers)
    assert split == bench.stratified_split(ids, tiers)
    dev = [tier for sp_id, tier in zip(ids, tiers, strict=True) if split[sp_id] == "dev"]
    assert (len(dev), dev.count("high")) == (30, 12)


def test_the_labelled_set_is_well_formed():
    bench = _bench()
    rows = bench.read_labels()
    assert len(rows) == 1000 and len({row["sp_id"] for row in rows}) == 1000
    assert {row["split"] for row in rows} == {"dev", "test"}
    assert sum(row["split"] == "dev" for row in rows) == 300
    for row in rows:
        # Categories are recorded exactly when the tier is a risk tier.
        assert bool(row["categories"]) == (row["tier"] in ("moderate", "high")), row["sp_id"]


# Measured on the held-out test part (bench/results/crisis_detection.json) after the patterns were
# tuned on dev only; a change to the patterns that loses recall or adds false positives fails here.
TEST_RECALL_HIGH = 0.6839
TEST_RECALL_ANY_RISK = 0.7879
TEST_FALSE_POSITIVE_RATE = 0.0
TOLERANCE = 0.01


def test_recall_and_false_positive_rate_hold_on_the_labelled_test_set(shared_data):
    bench = _bench()
    rows = [row for row in bench.join_posts(bench.read_labels(), shared_data) if row["split"] == "test"]
    assessments = [assess_risk(row["text"]) for row in rows]
    metrics = bench.detection_metrics([row["tier"] for row in rows], [a.tier.label for a in assessments],
                                      [row["categories"] for row in rows], [list(a.categories) for a in assessments])
    assert metrics["n"] == 700
    assert metrics["recall_high"] >= TEST_RECALL_HIGH - TOLERANCE
    assert metrics["recall_any_risk"] >= TEST_RECALL_ANY_RISK - TOLERANCE
    assert metrics["false_positive_rate"] <= TEST_FALSE_POSITIVE_RATE + TOLERANCE
