"""Judges: the LLM judge (absolute and pairwise), the trained encoder judge, calibration, judge training."""

from __future__ import annotations

from theraloop._lazy import lazy_exports

_EXPORTS = {
    "Calibration": "theraloop.judge._calibration",
    "DEFAULT_SYSTEM_PROMPT": "theraloop.judge._llm_judge",
    "DPOJudgeConfig": "theraloop.judge._dpo",
    "DPOJudgeResult": "theraloop.judge._dpo",
    "Judge": "theraloop.judge._types",
    "JudgeConfig": "theraloop.judge._llm_judge",
    "JudgePreferencePair": "theraloop.judge._dpo",
    "JudgeValidation": "theraloop.judge._validate",
    "Judgment": "theraloop.judge._types",
    "LLMJudge": "theraloop.judge._llm_judge",
    "MonotoneMap": "theraloop.judge._calibration",
    "PairItem": "theraloop.judge._run",
    "PairJudgment": "theraloop.judge._types",
    "ValidateConfig": "theraloop.judge._validate",
    "Validation": "theraloop.judge._validate",
    "Winner": "theraloop.judge._types",
    "absolute_schema": "theraloop.judge._llm_judge",
    "build_judge_preference_pairs": "theraloop.judge._dpo",
    "compare_items": "theraloop.judge._run",
    "pairwise_schema": "theraloop.judge._llm_judge",
    "render_markdown": "theraloop.judge._validate",
    "score_items": "theraloop.judge._run",
    "summarize_judgments": "theraloop.judge._run",
    "summarize_pairs": "theraloop.judge._run",
    "train_dpo_judge": "theraloop.judge._dpo",
    "validate": "theraloop.judge._validate",
    "validate_mentalalign": "theraloop.judge._validate",
    "write_validation": "theraloop.judge._validate",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
