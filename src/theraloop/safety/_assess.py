"""The layered, fail-closed assessor: rules, then the trained encoder, then (when a model is configured)
LLM triage. The combined tier is the maximum over layers; a layer that raises makes the result at
least HIGH, and every assessment records which layer fired and on what evidence."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from theraloop.safety._encoder import windows
from theraloop.safety._frames import recovered, revealed
from theraloop.safety._rules import harm_signals, normalise, risk_signals
from theraloop.safety._triage import LLMTriage
from theraloop.safety._types import (
    HarmAssessment,
    LayerReport,
    RiskAssessment,
    RiskSignal,
    RiskTier,
)

logger = logging.getLogger(__name__)
FAIL_CLOSED_TIER = RiskTier.HIGH


def _combine(signals: list[RiskSignal], layers: list[LayerReport]) -> RiskAssessment:
    tier = max((signal.tier for signal in signals), default=RiskTier.NONE)
    if any(not report.ok for report in layers):
        tier = max(tier, FAIL_CLOSED_TIER)
    categories = sorted({signal.category for signal in signals
                         if signal.tier >= RiskTier.MODERATE and signal.category != "distress"})
    return RiskAssessment(tier=RiskTier(tier), categories=categories, signals=signals, layers=layers)


def _framed_as_recovered(text: str, signals: list[RiskSignal]) -> list[RiskSignal]:
    """The encoder reads a recovered past ("eight years sober now, ran my first marathon") as the risk it
    once was; the rules' post-level recovered frame (risk placed in the past, the writer well now, nothing
    current, not revealed as being about now) lowers its signals to LOW evidence as it does the rules'.
    Only for posts the encoder reads in one window: a long post can tell a recovered past and a present
    risk in different paragraphs, and there the encoder's window judgment stands."""
    if not signals or len(windows(text)) > 1:
        return signals
    normalised = normalise(text)
    if not recovered(normalised) or revealed(normalised):
        return signals
    return [signal.model_copy(update={"tier": min(signal.tier, RiskTier.LOW), "downgraded": True})
            for signal in signals]


def _layer_tier(signals: list[RiskSignal]) -> RiskTier:
    return RiskTier(max((signal.tier for signal in signals), default=RiskTier.NONE))


class SafetyAssessor:
    """Risk in posts and harm in responses. `encoder=True` loads the shipped encoder (or pass one);
    `triage` adds the LLM layer."""

    def __init__(self, encoder=True, triage: LLMTriage | None = None, encoder_dir: Path | None = None):
        self._encoder = encoder
        self._encoder_dir = encoder_dir
        self.triage = triage

    def _load_encoder(self):
        if self._encoder is True:
            from theraloop.safety._encoder import MODEL_DIR, shared_encoder

            self._encoder = shared_encoder(self._encoder_dir or MODEL_DIR)
        return self._encoder or None

    @property
    def layer_names(self) -> list[str]:
        return ["rules"] + (["encoder"] if self._encoder else []) + (["llm"] if self.triage else [])

    def _run_layer(self, name: str, run: Callable[[], list], size: int) -> tuple[list, LayerReport | None]:
        """Per-item (signals, score) of one layer over a batch, or an error report for every item."""
        try:
            return run(), None
        except Exception as exc:  # noqa: BLE001 - any failure of a layer must escalate, not crash or pass
            logger.warning("safety layer %s failed: %s", name, exc)
            return [([], None) for _ in range(size)], LayerReport(layer=name, ok=False,
                                                                  error=f"{type(exc).__name__}: {exc}")

    def _batch_layers(self, texts: list[str], response_side: bool) -> list[tuple[list, list[LayerReport]]]:
        per_item: list[tuple[list, list[LayerReport]]] = [([], []) for _ in texts]

        def run_rules():
            if response_side:
                return [(found, float(bool(found))) for found in map(harm_signals, texts)]
            return [(found, _layer_tier(found) / RiskTier.IMMINENT) for found in map(risk_signals, texts)]

        layers: list[tuple[str, Callable[[], list]]] = [("rules", run_rules)]
        if self._encoder:
            def run_encoder():
                encoder = self._load_encoder()
                if response_side:
                    return encoder.harm_signals(texts)
                return [(_framed_as_recovered(text, found), score)
                        for text, (found, score) in zip(texts, encoder.risk_signals(texts), strict=True)]
            layers.append(("encoder", run_encoder))
        for name, run in layers:
            results, failure = self._run_layer(name, run, len(texts))
            for index, (found, score) in enumerate(results):
                per_item[index][0].extend(found)
                tier = RiskTier.NONE if response_side else _layer_tier(found)
                per_item[index][1].append(failure or LayerReport(layer=name, tier=tier, score=score))
        return per_item

    def assess_many(self, texts: list[str]) -> list[RiskAssessment]:
        """Rules and encoder over a batch (each text assessed as `assess` would alone); triage, if configured,
        runs per item through `assess_many_async`."""
        if self.triage is not None:
            from theraloop.llm import run_sync

            return run_sync(self.assess_many_async(texts))
        return [_combine(signals, layers) for signals, layers in self._batch_layers(texts, response_side=False)]

    async def assess_many_async(self, texts: list[str], concurrency: int = 4) -> list[RiskAssessment]:
        from theraloop.llm import map_concurrent

        base = self._batch_layers(texts, response_side=False)
        if self.triage is None:
            return [_combine(signals, layers) for signals, layers in base]

        async def triage_one(index: int) -> RiskAssessment:
            signals, layers = base[index]
            try:
                tier, found, _ = await self.triage.triage(texts[index])
                signals, layers = signals + found, [*layers, LayerReport(layer="llm", tier=tier,
                                                                         score=tier / RiskTier.IMMINENT)]
            except Exception as exc:  # noqa: BLE001 - fail closed
                logger.warning("safety layer llm failed: %s", exc)
                layers = [*layers, LayerReport(layer="llm", ok=False, error=f"{type(exc).__name__}: {exc}")]
            return _combine(signals, layers)

        return await map_concurrent(list(range(len(texts))), triage_one, concurrency)

    def assess(self, text: str) -> RiskAssessment:
        return self.assess_many([text])[0]

    def check_responses(self, responses: list[str]) -> list[HarmAssessment]:
        results = []
        for signals, layers in self._batch_layers(responses, response_side=True):
            results.append(HarmAssessment(
                flagged=bool(signals) or any(not report.ok for report in layers),
                categories=sorted({signal.category for signal in signals}), signals=signals, layers=layers))
        return results

    def check_response(self, response: str) -> HarmAssessment:
        return self.check_responses([response])[0]


_DEFAULT: SafetyAssessor | None = None


def default_assessor() -> SafetyAssessor:
    """Rules and the shipped encoder, shared by every caller in the process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = SafetyAssessor()
    return _DEFAULT


def assess_risk(text: str) -> RiskAssessment:
    """The risk a help-seeker's text signals: rules and encoder layers, fail closed."""
    return default_assessor().assess(text)


def check_response(response: str) -> HarmAssessment:
    """Harmful content in a response (method detail, encouragement, dismissal, secrecy, prescribing)."""
    return default_assessor().check_response(response)
