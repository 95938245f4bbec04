"""Judges: the LLM judge (absolute and pairwise), the trained encoder judge, calibration, judge training."""

from theraloop.judge._calibration import Calibration, MonotoneMap
from theraloop.judge._dpo import (
    DPOJudgeConfig,
    DPOJudgeResult,
    JudgePreferencePair,
    build_judge_preference_pairs,
    train_dpo_judge,
)
from theraloop.judge._llm_judge import (
    DEFAULT_SYSTEM_PROMPT,
    JudgeConfig,
    LLMJudge,
    absolute_schema,
    pairwise_schema,
)
from theraloop.judge._run import PairItem, compare_items, score_items, summarize_judgments, summarize_pairs
from theraloop.judge._types import Judge, Judgment, PairJudgment, Winner
from theraloop.judge._validate import (
    JudgeValidation,
    ValidateConfig,
    Validation,
    render_markdown,
    validate,
    validate_mentalalign,
    write_validation,
)

__all__ = [
    "JudgeValidation",
    "ValidateConfig",
    "Validation",
    "render_markdown",
    "validate",
    "validate_mentalalign",
    "write_validation",
    "DPOJudgeConfig",
    "DPOJudgeResult",
    "JudgePreferencePair",
    "build_judge_preference_pairs",
    "train_dpo_judge",
    "DEFAULT_SYSTEM_PROMPT",
    "Calibration",
    "Judge",
    "JudgeConfig",
    "Judgment",
    "LLMJudge",
    "MonotoneMap",
    "PairItem",
    "PairJudgment",
    "Winner",
    "absolute_schema",
    "compare_items",
    "pairwise_schema",
    "score_items",
    "summarize_judgments",
    "summarize_pairs",
]
