"""The encoder judge as the loop's driving judge: its levels per EPITOME mechanism become named findings
("no exploration question", "no emotional reaction") that the Critic receives, and, when the roles are run
deterministically, the critique and the revision plan themselves.

The encoder judge (theraloop.judge) is used through its public API only: `predict_detailed` for levels
and, when the judge provides them, rationale spans per mechanism.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from theraloop.agent._roles import ESCALATION_STEPS, Critique, FailingDimension, PlanStep, RevisionPlan
from theraloop.judge import Judgment
from theraloop.records import ResponseItem
from theraloop.rubrics import Rubric

# What a level below the top means, per EPITOME mechanism (Sharma et al., 2020): index = level.
FINDINGS: dict[str, list[str]] = {
    "emotional_reactions": [
        "no emotional reaction: the response expresses no warmth, compassion or concern for what the person feels",
        "weak emotional reaction: only generic sympathy, without naming or responding to the person's own feelings",
        "clear emotional reaction: warmth and concern for the person's feelings",
    ],
    "interpretations": [
        "no interpretation: the response does not show that it understood the person's feelings or experience",
        "weak interpretation: a generic acknowledgement of understanding, not specific to what the person described",
        "clear interpretation: reflects the person's specific feelings or experience back to them",
    ],
    "explorations": [
        "no exploration question: the response asks nothing about the person's feelings or experience",
        "weak exploration: a generic question, not one about the specific experience the person described",
        "clear exploration: asks specifically about the person's feelings or experience",
    ],
}

# Moves that raise each mechanism, given as the plan when the Coach runs deterministically.
MOVES: dict[str, str] = {
    "emotional_reactions": "Open by naming the specific feeling the person expressed and responding to it with "
                           "warmth and concern (e.g. 'that sounds exhausting and lonely, and I'm sorry you're "
                           "carrying it').",
    "interpretations": "Show you understood: reflect their situation back in your own words, connecting what they "
                       "feel to what happened (e.g. 'it makes sense you feel X after Y').",
    "explorations": "Ask one gentle, open question about their specific experience or feelings (e.g. 'what has "
                    "been the hardest part of ... for you?').",
}

LABELS = {"emotional_reactions": "emotional reaction", "interpretations": "interpretation",
          "explorations": "exploration"}


def finding(key: str, level: int, scale_min: int = 0) -> str:
    texts = FINDINGS.get(key)
    if texts is None:
        return f"level {level}"
    return texts[max(0, min(len(texts) - 1, level - scale_min))]


def _prediction_spans(prediction: Any) -> dict[str, list[str]]:
    """Rationale spans per mechanism, if this encoder judge provides them (a span head); else empty."""
    spans = getattr(prediction, "spans", None) or getattr(prediction, "rationales", None) or {}
    if not isinstance(spans, Mapping):
        return {}
    out = {}
    for key, value in spans.items():
        if isinstance(value, str):
            out[key] = [value] if value else []
        elif isinstance(value, Sequence):
            out[key] = [str(span) for span in value if str(span).strip()]
    return out


class EncoderDriver:
    """Wraps a trained encoder judge for the loop: scores are its levels; rationales carry the finding per
    mechanism, with the spans it quotes when it has a span head. Implements the Judge protocol."""

    def __init__(self, encoder: Any):
        self.encoder = encoder
        self.spans: dict[tuple[str, str], dict[str, list[str]]] = {}
        self.expected: dict[tuple[str, str], dict[str, float]] = {}

    @property
    def rubric(self) -> Rubric:
        return self.encoder.rubric

    @property
    def name(self) -> str:
        return self.encoder.name

    def predict(self, items: Sequence[ResponseItem]) -> list[Judgment]:
        predictions = self.encoder.predict_detailed(list(items))
        return [self._judgment(item, prediction) for item, prediction in zip(items, predictions, strict=True)]

    def _judgment(self, item: ResponseItem, prediction: Any) -> Judgment:
        scale_min = self.rubric.scale.min
        spans = _prediction_spans(prediction)
        self.spans[(item.id, item.response)] = spans
        self.expected[(item.id, item.response)] = dict(prediction.expected)
        rationales = {}
        for key, level in prediction.levels.items():
            text = f"level {level}: {finding(key, int(level), scale_min)}"
            if spans.get(key):
                text += "; evidence: " + "; ".join(f'"{span}"' for span in spans[key][:2])
            rationales[key] = text
        return Judgment(id=item.id, system=item.system, judge=self.name, rubric=self.rubric.name,
                        scores={key: float(level) for key, level in prediction.levels.items()},
                        rationales=rationales, config_hash=getattr(self.encoder, "_config_hash", ""))

    async def score(self, item: ResponseItem) -> Judgment:
        await asyncio.sleep(0)
        return self.predict([item])[0]


def critique_from_levels(rubric: Rubric, judgment: Judgment, failing: Sequence[str],
                         spans: Mapping[str, Sequence[str]] | None = None) -> Critique:
    """The Critic, deterministically: each failing mechanism's finding at its level (with the encoder's
    spans for a weak attempt), and the mechanisms at the top level as strengths."""
    spans = spans or {}
    scale = rubric.scale
    scores = judgment.scores or {}
    failing_items = []
    for key in failing:
        level = int(scores.get(key, scale.min))
        quoted = list(spans.get(key, []))[:3] if level > scale.min else []
        if key in FINDINGS:
            problem = finding(key, level, scale.min)
        else:
            problem = (judgment.rationales or {}).get(key) or f"scored {level} of {scale.max}"
        failing_items.append(FailingDimension(dimension=key, problem=problem[:240], spans=[s[:160] for s in quoted]))
    strengths = []
    for key in rubric.keys:
        if key not in failing and key in FINDINGS and scores.get(key) is not None:
            quoted = list(spans.get(key, []))[:1]
            label = finding(key, int(scores[key]), scale.min).split(":")[0]
            # Quoted first and to be kept verbatim: a paraphrasing Therapist replaced shared experience
            # ("Same, I quit mine too") with generic warmth, and interpretations fell.
            strengths.append(f'"{quoted[0][:100]}" ({label}: keep it word for word)' if quoted else label)
    return Critique(failing=failing_items, strengths=strengths[:3])


def plan_from_critique(critique: Critique, escalation_missing: Sequence[str] = ()) -> RevisionPlan:
    """The Coach, deterministically: escalation first, then the move that raises each failing mechanism."""
    steps = [PlanStep(dimension="safety", action=ESCALATION_STEPS[kind])
             for kind in escalation_missing if kind in ESCALATION_STEPS]
    for item in critique.failing:
        move = MOVES.get(item.dimension)
        if move is None:
            move = f"Fix this: {item.problem}"
        elif item.spans:
            move += f" Build on what is there ({'; '.join(repr(span) for span in item.spans[:2])}) and make it specific."
        steps.append(PlanStep(dimension=item.dimension, action=move))
    keep = [*critique.strengths[:2], "what the response already says about the person's situation and any "
                                     "specific advice in it"]
    return RevisionPlan(steps=steps, keep=keep[:3])
