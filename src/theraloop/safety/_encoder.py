"""The encoder layer: a fine-tuned MiniLM classifier on ONNX Runtime (no torch), shipped in
safety/model/ with the thresholds chosen on its development split (safety.json).

Long posts are scored in windows of a few sentences as well as whole, and each head takes
its maximum over them, so risk in the middle of a long post is neither truncated away nor diluted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from theraloop._onnx_sessions import SessionPool
from theraloop.safety._types import (
    HARM_CATEGORIES,
    HEADS,
    RISK_CATEGORIES,
    HarmSignal,
    RiskSignal,
    RiskTier,
)

MODEL_DIR = Path(__file__).parent / "model"
MAX_TOKENS = 256
_SENTENCE_END = re.compile(r"(?<=[.!?\n])\s+")


def windows(text: str, sentences: int = 4, stride: int = 3, max_windows: int = 16) -> list[str]:
    """The text whole, plus windows of `sentences` sentences every `stride` sentences when it is longer
    (the last window ends at the last sentence). Four-sentence windows every three sentences found as much
    risk on the development posts as three-sentence windows every sentence, with a third fewer windows and
    fewer false alarms."""
    parts = [part.strip() for part in _SENTENCE_END.split(text.strip()) if part.strip()]
    if len(parts) <= sentences:
        return [text.strip() or text]
    starts = list(range(0, len(parts) - sentences + 1, stride))
    if starts[-1] != len(parts) - sentences:
        starts.append(len(parts) - sentences)
    if len(starts) > max_windows:
        starts = sorted({starts[round(index * (len(starts) - 1) / (max_windows - 1))] for index in range(max_windows)})
    return [text.strip()] + [" ".join(parts[start:start + sentences]) for start in starts]


def _quote(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass(frozen=True)
class Thresholds:
    risk: float = 0.5
    severe: float = 0.5
    imminent: float = 0.5
    category: float = 0.5
    harm: float = 0.5
    harm_category: float = 0.5


class SafetyEncoder:
    """Per-head probabilities for posts (risk, severity, categories) and responses (harms).

    Each window is scored alone by default: int8 dynamic quantisation scales activations per batch, so in a
    padded batch a window's probabilities depended on its batch-mates (by up to 0.35 on one window's risk;
    9 of 651 windows of a held-out set crossed the risk threshold). Alone, a text scores the same in
    `assess_risk` as in a batch screen, and with two sessions it is also faster than batches of 32."""

    def __init__(self, model_dir: Path = MODEL_DIR, threads: int | None = None, batch_size: int = 1):
        from tokenizers import Tokenizer

        card = json.loads((model_dir / "safety.json").read_text(encoding="utf-8"))
        if tuple(card["heads"]) != HEADS:
            raise ValueError(f"{model_dir}: the model's heads {card['heads']} are not this version's {list(HEADS)}")
        self.thresholds = Thresholds(**card["thresholds"])
        self.card = card
        self._sessions = SessionPool(model_dir / "safety.onnx", threads)
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self.batch_size = batch_size

    def _feed(self, texts: list[str]) -> dict[str, np.ndarray]:
        encodings = self._tokenizer.encode_batch(texts)
        width = max(len(encoding.ids) for encoding in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, :len(encoding.ids)] = encoding.ids
            mask[row, :len(encoding.ids)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Sigmoid outputs, one row per text, one column per head (HEADS order)."""
        out = np.zeros((len(texts), len(HEADS)), dtype=np.float32)
        # Sorting by length keeps padding small within a batch.
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        chunks = [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        outputs = self._sessions.map(lambda chunk: self._feed([texts[index] for index in chunk]), chunks)
        for chunk, (logits,) in zip(chunks, outputs, strict=True):
            out[chunk] = 1.0 / (1.0 + np.exp(-logits))
        return out

    def windowed(self, texts: list[str]) -> tuple[np.ndarray, list[str]]:
        """Per text, each head's maximum over the text's windows, and the window where risk peaked."""
        pieces = [windows(text) for text in texts]
        flat = [window for group in pieces for window in group]
        probabilities = self.probabilities(flat) if flat else np.zeros((0, len(HEADS)))
        peaks = np.zeros((len(texts), len(HEADS)), dtype=np.float32)
        evidence = []
        offset = 0
        risk = HEADS.index("risk")
        for index, group in enumerate(pieces):
            block = probabilities[offset:offset + len(group)]
            peaks[index] = block.max(axis=0)
            evidence.append(group[int(block[:, risk].argmax())])
            offset += len(group)
        return peaks, evidence

    def risk_signals(self, texts: list[str]) -> list[tuple[list[RiskSignal], float]]:
        """Per text, the signals above threshold and the risk probability itself."""
        peaks, evidence = self.windowed(texts)
        return [(self._risk_from(row, quote), float(row[HEADS.index("risk")]))
                for row, quote in zip(peaks, evidence, strict=True)]

    def _risk_from(self, row: np.ndarray, quote: str) -> list[RiskSignal]:
        limits = self.thresholds
        risk = float(row[HEADS.index("risk")])
        if risk < limits.risk:
            return []
        tier = RiskTier.HIGH if row[HEADS.index("severe")] >= limits.severe else RiskTier.MODERATE
        category_probability = {category: float(row[HEADS.index(category)]) for category in RISK_CATEGORIES}
        if category_probability["medical_emergency"] >= limits.imminent:
            tier = RiskTier.IMMINENT
        categories = [category for category, p in category_probability.items() if p >= limits.category]
        if not categories:
            categories = [max(category_probability, key=category_probability.get)]
        return [RiskSignal(category=category, tier=tier, layer="encoder", evidence=_quote(quote),
                           probability=round(max(risk, category_probability[category]), 4))
                for category in categories]

    def harm_signals(self, responses: list[str]) -> list[tuple[list[HarmSignal], float]]:
        """Per response, the harm signals above threshold and the probability of any harm."""
        peaks, _ = self.windowed(responses)
        limits = self.thresholds
        results = []
        for row, response in zip(peaks, responses, strict=True):
            harm = float(row[HEADS.index("harm")])
            if harm < limits.harm:
                results.append(([], harm))
                continue
            harms = {harm: float(row[HEADS.index(harm)]) for harm in HARM_CATEGORIES}
            named = [harm for harm, p in harms.items() if p >= limits.harm_category] or [max(harms, key=harms.get)]
            results.append(([HarmSignal(category=name, layer="encoder", evidence=_quote(response),
                                        probability=round(harms[name], 4))
                             for name in named], harm))
        return results


@lru_cache(maxsize=4)
def shared_encoder(model_dir: Path = MODEL_DIR, threads: int | None = None) -> SafetyEncoder:
    return SafetyEncoder(model_dir, threads=threads)
