"""ONNX Runtime sessions for the small CPU encoders (safety classifier, encoder judge, reward models).

Batches of a few dozen short texts are too small for one session to split well across cores: on 2 cores,
two single-threaded sessions taking batches in turn score more per second than one session with both
threads (bench/crisis_detection.py, bench/epitome_judge.py), with identical outputs.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


class SessionPool:
    """Sessions of one model; `map` runs batches on them concurrently and yields outputs in input order."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime

        threads = threads or min(os.cpu_count() or 1, 4)
        count = 2 if threads >= 2 else 1
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads // count
        options.inter_op_num_threads = 1
        self.sessions = [onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                         for _ in range(count)]
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        for session in self.sessions:
            self._idle.put(session)

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        session = self._idle.get()
        try:
            return session.run(None, feed)
        finally:
            self._idle.put(session)

    def map(self, function: Callable[[Any], dict[str, np.ndarray]], batches: Iterable[Any]) -> Iterator[list[np.ndarray]]:
        """Outputs of run(function(batch)) for each batch, in order; `function` builds the feed (tokenising)
        in the worker thread too. ONNX Runtime and the tokenizers release the GIL while they work."""
        batches = list(batches)
        if len(self.sessions) == 1 or len(batches) <= 1:
            yield from (self.run(function(batch)) for batch in batches)
            return
        with ThreadPoolExecutor(len(self.sessions)) as pool:
            yield from pool.map(lambda batch: self.run(function(batch)), batches)

    def input_names(self) -> list[str]:
        return [node.name for node in self.sessions[0].get_inputs()]


__all__ = ["SessionPool"]
