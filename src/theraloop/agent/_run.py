"""Building a Refiner and an independent judge from configuration."""

from __future__ import annotations

from theraloop.agent._loop import IndependentJudgeConfig, RefineConfig, Refiner
from theraloop.judge import Judge, LLMJudge
from theraloop.llm import build_llm


def build_refiner(config: RefineConfig) -> Refiner:
    """The driving judge and the roles share one model instance unless agent_llm names another. With
    engine 'encoder' the driving judge is the trained encoder judge and the model serves the roles only."""
    second = build_independent_judge(config.second_judge) if config.second_judge else None
    if config.engine == "encoder":
        from theraloop.agent._encoder_drive import EncoderDriver
        from theraloop.judge._encoder import EncoderJudge

        judge = EncoderDriver(EncoderJudge.load(config.encoder_path, runtime=config.encoder_runtime))
        roles_llm = build_llm(config.agent_llm or config.judge.llm)
        return Refiner(judge, roles_llm, config, second_judge=second)
    judge_llm = build_llm(config.judge.llm)
    roles_llm = judge_llm if config.agent_llm in (None, config.judge.llm) else build_llm(config.agent_llm)
    return Refiner(LLMJudge(judge_llm, config.judge), roles_llm, config, second_judge=second)


def build_independent_judge(config: IndependentJudgeConfig) -> Judge:
    if config.engine == "encoder":
        from theraloop.judge._encoder import EncoderJudge

        return EncoderJudge.load(config.encoder_path)
    return LLMJudge(build_llm(config.judge.llm), config.judge)
