"""Rationale spans for the encoder judge: where human rationales (EPITOME ships them, the response spans
behind each level) sit in a response, as character ranges and as per-token labels for the span head;
and the way back, from the span head's per-token probabilities to quoted response spans.

Pure functions on strings, offsets and arrays; tested on hand-made cases.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

# A rationale was copied out of the response by annotators; whitespace may differ (the ER file's texts
# had whitespace changed), so a literal search falls back to one that lets any whitespace run match any.
_WHITESPACE = re.compile(r"\s+")


def span_char_ranges(response: str, rationales: Sequence[str]) -> list[tuple[int, int]]:
    """Character ranges [start, end) of each rationale found in `response` (first occurrence; a rationale
    not found is skipped). Case and whitespace differences are tolerated."""
    ranges = []
    lowered = response.lower()
    for rationale in rationales:
        text = rationale.strip()
        if not text:
            continue
        start = lowered.find(text.lower())
        if start >= 0:
            ranges.append((start, start + len(text)))
            continue
        pattern = r"\s+".join(re.escape(part) for part in _WHITESPACE.split(text) if part)
        match = re.search(pattern, response, flags=re.IGNORECASE) if pattern else None
        if match:
            ranges.append((match.start(), match.end()))
    return ranges


def token_labels(offsets: Sequence[tuple[int, int] | None], ranges: Sequence[tuple[int, int]]) -> list[float]:
    """1.0 for each token whose character offsets overlap a range, 0.0 otherwise; None offsets (tokens
    outside the response: the context, special tokens, padding) get 0.0 and are masked by the caller."""
    labels = []
    for offset in offsets:
        inside = offset is not None and offset[1] > offset[0] and any(
            offset[0] < end and start < offset[1] for start, end in ranges)
        labels.append(1.0 if inside else 0.0)
    return labels


def extract_spans(response: str, offsets: Sequence[tuple[int, int] | None], probabilities: Sequence[float],
                  threshold: float = 0.5, fallback: bool = False, max_spans: int = 3) -> list[str]:
    """Quoted response spans from per-token probabilities: runs of response tokens above `threshold`
    (a gap of one token below it is bridged), widened to whole words, most probable first. With
    `fallback`, when no token passes, the run around the most probable token (tokens above half of its
    probability) is returned, so a level above the minimum always names the words behind it."""
    probs = np.asarray(probabilities, dtype=float)
    positions = [index for index, offset in enumerate(offsets) if offset is not None and offset[1] > offset[0]
                 and index < len(probs)]
    if not positions:
        return []
    chosen = [index for index in positions if probs[index] > threshold]
    if not chosen and fallback:
        top = max(positions, key=lambda index: probs[index])
        chosen = [index for index in positions if probs[index] >= probs[top] / 2]
        chosen = _run_around(chosen, top, positions)
    runs: list[list[int]] = []
    order = {index: rank for rank, index in enumerate(positions)}
    for index in chosen:
        if runs and order[index] - order[runs[-1][-1]] <= 2:  # bridge a single-token gap
            runs[-1].append(index)
        else:
            runs.append([index])
    spans = []
    for run in runs:
        start, end = offsets[run[0]][0], offsets[run[-1]][1]  # type: ignore[index]
        while start > 0 and not response[start - 1].isspace():
            start -= 1
        while end < len(response) and not response[end].isspace():
            end += 1
        text = response[start:end].strip()
        if text:
            spans.append((float(probs[run].mean()), text))
    spans.sort(key=lambda pair: -pair[0])
    seen, result = set(), []
    for _, text in spans:
        if text not in seen:
            seen.add(text)
            result.append(text)
    return result[:max_spans]


def _run_around(chosen: list[int], top: int, positions: list[int]) -> list[int]:
    """The contiguous (in response-token order) members of `chosen` around `top`."""
    rank = {index: position for position, index in enumerate(positions)}
    members = set(chosen)
    run = [top]
    position = rank[top] - 1
    while position >= 0 and positions[position] in members:
        run.insert(0, positions[position])
        position -= 1
    position = rank[top] + 1
    while position < len(positions) and positions[position] in members:
        run.append(positions[position])
        position += 1
    return run


def rationale_text(name: str, level: int, minimum: int, spans: Sequence[str]) -> str:
    """One dimension's rationale, e.g. 'Explorations: "what happened next?"'."""
    if level <= minimum:
        return f"{name}: none found"
    if not spans:
        return f"{name}: level {level}, no span singled out"
    return f"{name}: " + "; ".join(f'"{span}"' for span in spans)


__all__ = ["extract_spans", "rationale_text", "span_char_ranges", "token_labels"]
