"""The refinement loop: judge -> Critic -> Coach -> Therapist -> judge, with a safety guard.

A revision is accepted only when the response-safety check finds no harm in it (whatever the judge
says), the judge parsed it, Safety did not drop and the aggregate over the driving dimensions improved
(with `keep_met`, also no driving dimension that met its target fell below it); otherwise the best
version so far is kept. At moderate or higher risk the response must carry the
escalation that the risk requires (emergency, crisis, child-protection, domestic-violence or professional
help), and the loop enforces it.
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from theraloop.agent._roles import Critique, RevisionPlan, Roles
from theraloop.config import StrictModel
from theraloop.io import InputError, JSONLAppender, sha256_json, write_jsonl
from theraloop.judge import Judge, JudgeConfig, Judgment
from theraloop.judge._audit_battery import strip_injection_spans
from theraloop.llm import ChatModel, LLMConfig, StructuredResult, map_concurrent
from theraloop.records import ResponseItem
from theraloop.rubrics import Rubric
from theraloop.safety import (
    EscalationCheck,
    HarmAssessment,
    RiskAssessment,
    SafetyAssessor,
    check_escalation,
    default_assessor,
    enforce_escalation,
)


class IndependentJudgeConfig(StrictModel):
    """A second judge that only measures: the loop never sees its scores, so it cannot be gamed."""

    engine: Literal["encoder", "llm"] = "encoder"
    encoder_path: str | None = Field(None, description="trained encoder judge folder (engine: encoder)")
    judge: JudgeConfig | None = Field(None, description="LLM judge settings (engine: llm)")

    @model_validator(mode="after")
    def _complete(self) -> IndependentJudgeConfig:
        if self.engine == "encoder" and not self.encoder_path:
            raise ValueError("engine 'encoder' needs encoder_path")
        if self.engine == "llm" and self.judge is None:
            raise ValueError("engine 'llm' needs a judge section (a different model from the driving judge)")
        return self


class RefineConfig(StrictModel):
    engine: Literal["llm", "encoder"] = Field(
        "llm", description="the driving judge: the LLM judge (section `judge`) or a trained encoder judge "
                           "(`encoder_path`), whose levels per mechanism the Critic receives as named findings")
    encoder_path: str | None = Field(None, description="trained encoder judge folder (engine: encoder)")
    encoder_runtime: Literal["torch", "onnx"] = "torch"
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="the driving judge (engine: llm); its llm "
                                                                        "section is also the roles' default model")
    agent_llm: LLMConfig | None = Field(None, description="model for Critic/Coach/Therapist; default: judge.llm. "
                                                          "`model` may name an installed model (theraloop models)")
    critic: Literal["llm", "judge"] = Field(
        "llm", description="llm: the Critic is a model call that reads the judge's scores and findings; judge: the "
                           "critique is the driving judge's findings themselves (deterministic, no model call)")
    coach: Literal["llm", "playbook"] = Field(
        "llm", description="llm: the Coach is a model call; playbook: the plan is the known move per failing "
                           "dimension (deterministic, no model call)")
    drive: list[str] | None = Field(None, description="dimensions that drive refinement; default: all")
    threshold: float = Field(4.0, description="target score for every driving dimension")
    thresholds: dict[str, float] = Field(default_factory=dict, description="per-dimension targets")
    max_rounds: int = Field(3, ge=0)
    aggregate: Literal["mean", "min"] = "mean"
    min_improvement: float = Field(0.0, ge=0.0, description="aggregate gain a revision must exceed")
    keep_met: bool = Field(False, description="reject a revision in which a driving dimension that had met its "
                                              "target falls below it, whatever the aggregate gains (a strength of "
                                              "the response is not traded for others)")
    enforce_escalation: bool = True
    region: str | None = Field(None, description="help resources for escalation text (safety/resources.yaml); "
                                                 "default $THERALOOP_REGION, else international")
    response_safety: bool = Field(True, description="reject any revision the response-safety check flags")
    role_temperature: float = Field(0.3, ge=0.0)
    revision_max_chars: int = Field(1500, ge=200)
    revision_max_tokens: int = Field(700, ge=32, description="token cap of a Therapist call")
    seed: int = 0
    concurrency: int = Field(1, ge=1, description="responses refined in parallel")
    independent: IndependentJudgeConfig | None = None
    # Defences against revisions that game the driving judge (`theraloop judge audit` measures the need).
    consistency_check: bool = Field(False, description="reject a revision whose gain disappears when it is "
                                                       "re-scored with its injection-like spans removed")
    second_judge: IndependentJudgeConfig | None = Field(None, description="accept only revisions this judge "
                                                                          "also scores as an improvement")

    @model_validator(mode="after")
    def _drive_known(self) -> RefineConfig:
        if self.engine == "encoder":
            # The encoder judge's rubric is known once it is loaded; the Refiner checks the keys then.
            if not self.encoder_path:
                raise ValueError("engine 'encoder' needs encoder_path (a trained encoder judge folder)")
            return self
        rubric = self.judge.load_rubric()
        for key in (self.drive or []) + list(self.thresholds):
            rubric.dimension(key)
        return self

    def target(self, key: str) -> float:
        return self.thresholds.get(key, self.threshold)


class RoundTrace(BaseModel):
    round: int
    failing: list[str]
    critique: Critique | None = None
    plan: RevisionPlan | None = None
    candidate: str | None = None
    escalation_appended: bool = False
    harm: HarmAssessment | None = None
    judgment: Judgment | None = None
    accepted: bool = False
    reason: str
    diff: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class RefineResult(BaseModel):
    id: str
    system: str | None = None
    context: str
    original: str
    final: str
    initial_judgment: Judgment
    final_judgment: Judgment
    rounds: list[RoundTrace] = Field(default_factory=list)
    stop_reason: str
    risk: RiskAssessment
    escalation_before: EscalationCheck
    escalation_after: EscalationCheck
    escalation_enforced: bool = False
    harm_original: HarmAssessment | None = None
    harm_final: HarmAssessment | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_time_s: float = 0.0
    independent_initial: Judgment | None = None
    independent_final: Judgment | None = None
    fingerprint: str = Field("", description="refine_fingerprint of the settings and input that produced this")

    @property
    def rounds_used(self) -> int:
        return len(self.rounds)


# LLM settings that change how requests are sent, not what comes back: a resume may change them.
_TRANSPORT_FIELDS = {"concurrency", "max_retries", "timeout_s", "cache", "cache_path", "api_key_env", "n_threads",
                     "extra_buffers"}


_LATER_DEFAULTS = {"engine": "llm", "encoder_path": None, "encoder_runtime": "torch", "critic": "llm",
                   "coach": "llm", "revision_max_tokens": 700, "keep_met": False}


def refine_fingerprint(config: RefineConfig, judge_name: str, item: ResponseItem) -> str:
    """What a trace record's result depends on: settings, driving judge and input text (16 hex digits).

    Left out: the parallelism and transport settings, and the independent judge, which only
    measures and is checked separately on resume.
    """
    settings = config.model_dump(mode="json", exclude={
        "concurrency": True, "independent": True, "judge": {"llm": _TRANSPORT_FIELDS}, "agent_llm": _TRANSPORT_FIELDS})
    # Settings added later count only when changed, so traces written before them still resume.
    for key, default in _LATER_DEFAULTS.items():
        if settings.get(key) == default:
            settings.pop(key, None)
    return sha256_json({"config": settings, "judge": judge_name, "context": item.context,
                        "response": item.response})[:16]


def _measured_by(result: RefineResult, judge: Judge) -> bool:
    """Whether the result already carries both judgments of this independent judge (parsed or not)."""
    return all(judgment is not None and judgment.judge == judge.name and judgment.rubric == judge.rubric.name
               for judgment in (result.independent_initial, result.independent_final))


def text_diff(before: str, after: str) -> str:
    """A unified diff by sentence, readable for one-paragraph responses."""
    def sentences(text: str) -> list[str]:
        return [part for part in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if part]

    return "\n".join(difflib.unified_diff(sentences(before), sentences(after), "before", "after", lineterm="", n=1))


def role_context(item: ResponseItem) -> tuple[str, str | None]:
    """What Critic, Coach and Therapist read: the post, or for a turn of a session (meta `history`: the
    conversation before it, `message`: the help-seeker's latest message) that message and its history.
    The judges read item.context either way."""
    if "history" in item.meta:
        return item.meta.get("message", item.context), item.meta["history"] or None
    return item.context, None


class Refiner:
    """Refines responses with a driving judge and role model; usable as a library for one response."""

    def __init__(self, judge: Judge, roles_llm: ChatModel, config: RefineConfig | None = None,
                 second_judge: Judge | None = None, safety: SafetyAssessor | None = None):
        self.judge = judge
        self.safety = safety or default_assessor()
        self.second_judge = second_judge
        self.config = config or RefineConfig()
        self.rubric: Rubric = judge.rubric
        self.drive = self.config.drive or self.rubric.keys
        missing = [key for key in self.drive if key not in self.rubric.keys]
        if missing:
            raise ValueError(f"driving dimensions {missing} are not scored by judge rubric '{self.rubric.name}'")
        for key in list(self.config.thresholds):
            self.rubric.dimension(key)
        self.safety_key = self.rubric.safety_dimension
        # A threshold above the judge's scale (the default 4 for an encoder judge on 0-2) means its top level.
        self.targets = {key: min(self.config.target(key), self.rubric.scale.max) for key in self.drive}
        self.roles = Roles(roles_llm, self.rubric, temperature=self.config.role_temperature, seed=self.config.seed,
                           revision_max_chars=self.config.revision_max_chars,
                           revision_max_tokens=self.config.revision_max_tokens)

    def aggregate(self, judgment: Judgment) -> float:
        values = [judgment.scores[key] for key in self.drive]
        return float(min(values) if self.config.aggregate == "min" else np.mean(values))

    def failing(self, judgment: Judgment, escalation: EscalationCheck) -> list[str]:
        failing = [key for key in self.drive if judgment.scores[key] < self.targets[key]]
        # A missing escalation is a safety failure whatever the judge said.
        if self.config.enforce_escalation and not escalation.satisfied and self.safety_key and self.safety_key not in failing:
            failing.insert(0, self.safety_key)
        return failing

    def _acceptance(self, best: Judgment, candidate: Judgment) -> tuple[bool, str]:
        if not candidate.parse_ok or not candidate.scores:
            return False, "judge could not score the revision"
        if self.safety_key and candidate.scores[self.safety_key] < best.scores[self.safety_key]:
            return False, f"safety dropped ({best.scores[self.safety_key]:g} -> {candidate.scores[self.safety_key]:g})"
        if self.config.keep_met:
            lost = [key for key in self.drive if best.scores[key] >= self.targets[key] > candidate.scores[key]]
            if lost:
                return False, "met target lost: " + ", ".join(
                    f"{key} {best.scores[key]:g} -> {candidate.scores[key]:g}" for key in lost)
        before, after = self.aggregate(best), self.aggregate(candidate)
        if after <= before + self.config.min_improvement:
            return False, f"aggregate did not improve ({before:.2f} -> {after:.2f})"
        return True, f"accepted (aggregate {before:.2f} -> {after:.2f})"

    async def _defend(self, item: ResponseItem, text: str, best: Judgment, candidate: str,
                      reason: str) -> tuple[bool, str]:
        """The optional defences, applied to a revision the driving judge accepted."""
        if self.config.consistency_check:
            cleaned, removed = strip_injection_spans(candidate)
            if removed:
                accepted, why = self._acceptance(best, await self._judge(item, cleaned))
                if not accepted:
                    return False, f"gain disappears without injection-like spans {removed[:2]}: {why}"
        if self.second_judge is not None:
            before, after = [await self.second_judge.score(item.model_copy(update={"response": t}))
                             for t in (text, candidate)]
            if not (before.parse_ok and after.parse_ok and before.scores and after.scores):
                return False, "second judge could not score the revision"
            safety = self.second_judge.rubric.safety_dimension
            if safety and after.scores[safety] < before.scores[safety]:
                return False, f"second judge: safety dropped ({before.scores[safety]:g} -> {after.scores[safety]:g})"
            old, new = np.mean(list(before.scores.values())), np.mean(list(after.scores.values()))
            if new <= old:
                return False, f"second judge sees no gain ({old:.2f} -> {new:.2f})"
        return True, reason

    async def _judge(self, item: ResponseItem, text: str) -> Judgment:
        return await self.judge.score(item.model_copy(update={"response": text}))

    async def refine(self, item: ResponseItem) -> RefineResult:
        started = time.perf_counter()
        # A post cut to fit the model's context is still screened whole.
        risk = self.safety.assess(item.meta.get("full_context", item.context))
        escalation_before = check_escalation(item.response, risk)
        initial = await self._judge(item, item.response)
        best_text, best = item.response, initial
        rounds: list[RoundTrace] = []
        if not initial.parse_ok:
            stop_reason = "initial judgment failed to parse"
        else:
            for round_index in range(1, self.config.max_rounds + 1):
                failing = self.failing(best, check_escalation(best_text, risk))
                if not failing:
                    break
                trace = await self._round(item, best_text, best, failing, risk, round_index)
                rounds.append(trace)
                if trace.accepted:
                    best_text, best = trace.candidate, trace.judgment
            met = not self.failing(best, check_escalation(best_text, risk))
            stop_reason = "thresholds met" if met else "max rounds reached"
        enforced = False
        if self.config.enforce_escalation:
            best_text, enforced = enforce_escalation(best_text, risk, self.config.region)
            if enforced:
                best = await self._judge(item, best_text)
        judgments = [initial, best] + [trace.judgment for trace in rounds if trace.judgment]
        return RefineResult(
            id=item.id, system=item.system, context=item.context, original=item.response, final=best_text,
            initial_judgment=initial, final_judgment=best, rounds=rounds, stop_reason=stop_reason, risk=risk,
            escalation_before=escalation_before, escalation_after=check_escalation(best_text, risk),
            escalation_enforced=enforced, harm_original=self.safety.check_response(item.response),
            harm_final=self.safety.check_response(best_text), fingerprint=refine_fingerprint(self.config, self.judge.name, item),
            prompt_tokens=sum(j.prompt_tokens for j in judgments) + sum(t.prompt_tokens for t in rounds),
            completion_tokens=sum(j.completion_tokens for j in judgments) + sum(t.completion_tokens for t in rounds),
            wall_time_s=time.perf_counter() - started,
        )

    async def _round(self, item: ResponseItem, text: str, judgment: Judgment, failing: list[str],
                     risk: RiskAssessment, round_index: int) -> RoundTrace:
        trace = RoundTrace(round=round_index, failing=failing, reason="")
        calls: list[StructuredResult] = []

        def spend(result: StructuredResult) -> None:
            calls.append(result)
            trace.prompt_tokens = sum(call.prompt_tokens for call in calls)
            trace.completion_tokens = sum(call.completion_tokens for call in calls)

        context, history = role_context(item)
        if self.config.critic == "judge":
            from theraloop.agent._encoder_drive import critique_from_levels

            spans = getattr(self.judge, "spans", {}).get((item.id, text), {})
            critique = critique_from_levels(self.rubric, judgment, failing, spans)
        else:
            result, critique = await self.roles.critic(context, text, judgment, failing, round_index, history=history)
            spend(result)
        if critique is None:
            trace.reason = "critic output did not parse"
            return trace
        trace.critique = critique
        escalation = check_escalation(text, risk).missing if self.config.enforce_escalation else []
        if self.config.coach == "playbook":
            from theraloop.agent._encoder_drive import plan_from_critique

            plan = plan_from_critique(critique, escalation)
        else:
            result, plan = await self.roles.coach(context, text, critique, failing, escalation, round_index,
                                                  history=history)
            spend(result)
        if plan is None:
            trace.reason = "coach output did not parse"
            return trace
        trace.plan = plan
        result, revision = await self.roles.therapist(context, text, plan, round_index, history=history)
        spend(result)
        if revision is None:
            trace.reason = "therapist output did not parse"
            return trace
        candidate = revision.response.strip()
        if self.config.response_safety:
            trace.harm = self.safety.check_response(candidate)
            if trace.harm.flagged:
                trace.candidate = candidate
                trace.diff = text_diff(text, candidate)
                failed = [report.layer for report in trace.harm.layers if not report.ok]
                trace.reason = ("response-safety check flagged the revision: "
                                + (", ".join(trace.harm.categories) or f"layer(s) {', '.join(failed)} failed")
                                + "; rejected whatever the judge's scores")
                return trace
        if self.config.enforce_escalation:
            candidate, trace.escalation_appended = enforce_escalation(candidate, risk, self.config.region)
        trace.candidate = candidate
        trace.diff = text_diff(text, candidate)
        trace.judgment = await self._judge(item, candidate)
        trace.accepted, trace.reason = self._acceptance(judgment, trace.judgment)
        if trace.accepted:
            trace.accepted, trace.reason = await self._defend(item, text, judgment, candidate, trace.reason)
        return trace

    async def refine_many(self, items: Sequence[ResponseItem], trace_path: str | Path | None = None,
                          progress: bool = True, independent: Judge | None = None) -> list[RefineResult]:
        """Refine every item, appending each result to trace_path as it finishes (a rerun resumes).

        A record is reused only when its fingerprint matches the planned item; otherwise this raises
        InputError rather than mixing results of different settings or inputs in one trace. Reused
        records missing scores from `independent` are scored now.
        """
        fingerprints = {item.id: refine_fingerprint(self.config, self.judge.name, item) for item in items}
        appender = JSONLAppender(trace_path) if trace_path else None
        # Every record of the trace, last one per id winning; ids not planned now are kept as they are.
        results: dict[str, RefineResult] = {}
        if appender:
            results.update({record["id"]: RefineResult.model_validate(record) for record in appender.existing})
        stale = [item.id for item in items
                 if item.id in results and results[item.id].fingerprint != fingerprints[item.id]]
        if stale:
            appender.close()
            raise InputError(
                f"{trace_path}: {len(stale)} finished record(s), first id {stale[0]!r}, were refined with other "
                "settings, judge or input text than this run (or before fingerprints were recorded); "
                "write to a new --out instead of resuming into this one")
        resumed = {item.id: results[item.id] for item in items if item.id in results}

        def unmeasured(result: RefineResult) -> bool:
            return independent is not None and not _measured_by(result, independent)

        async def job(item: ResponseItem) -> RefineResult:
            result = resumed.get(item.id) or await self.refine(item)
            if unmeasured(result):
                result.independent_initial = await independent.score(item)
                result.independent_final = await independent.score(item.model_copy(update={"response": result.final}))
            return result

        written = 0

        def finished(_item: ResponseItem, result: RefineResult) -> None:
            nonlocal written
            results[result.id] = result
            if appender:
                appender.write(result)
                written += 1

        todo = [item for item in items if item.id not in resumed or unmeasured(resumed[item.id])]
        try:
            await map_concurrent(todo, job, concurrency=self.config.concurrency, desc="refining",
                                 on_result=finished, progress=progress)
        finally:
            if appender:
                appender.close()
        # Re-scored records were appended again (crash-safe); leave one line per id for readers.
        if appender and len(appender.existing) + written != len(results):
            write_jsonl(appender.path, results.values())
        return [results[item.id] for item in items]
