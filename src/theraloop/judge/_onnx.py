"""ONNX Runtime scoring for the (context, response) pair models: the encoder judge and the reward
models. A torch module is exported once into the model's folder, by default with int8 dynamic
quantisation of its weight matrices; scoring then runs in ONNX Runtime, several times faster on CPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from theraloop._onnx_sessions import SessionPool
from theraloop.io import InputError

if TYPE_CHECKING:
    from torch import nn

Runtime = Literal["torch", "onnx"]
RUNTIMES: tuple[str, ...] = ("torch", "onnx")
ONNX_FILE = "model.onnx"
OPSET = 17
# int8 dynamic quantisation scales activations per batch, so in a padded batch a response's scores depend
# on its batch-mates; scored one at a time they do not, agree better with torch (EPITOME test, final
# judge: mean macro-F1 +0.002 against torch, +0.008 in batches of 32) and, on two sessions, run faster.
ONNX_BATCH_SIZE = 1
INT8 = "int8-dynamic-per-channel"


def check_runtime(runtime: str) -> Runtime:
    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}: use {' or '.join(RUNTIMES)}")
    return runtime  # type: ignore[return-value]


def export_pair_model(module: nn.Module, pair_tokenizer: Any, folder: str | Path, output_names: Sequence[str],
                      quantize: bool = True) -> dict[str, Any]:
    """Write `module` (called as module(input_ids, attention_mask[, token_type_ids])) to folder/model.onnx
    with dynamic batch and length axes; returns the description to store in the model's spec."""
    import torch

    folder = Path(folder)
    target = folder / ONNX_FILE
    fp32 = folder / "model.fp32.onnx"
    # Two pairs of different lengths, so padding and the attention mask are traced as they are used.
    example = pair_tokenizer.collate(pair_tokenizer.encode(["an example post", "another, longer example post here"],
                                                           ["a reply", "a somewhat longer reply to it"]))
    input_names = list(example)
    module.eval()
    # Eager attention exports as plain MatMul/Softmax, which ONNX Runtime folds into FusedMatMul + Softmax;
    # the sdpa export runs slower (MiniLM judge: 35 vs 29 responses per CPU-second, int8).
    backbones = [part for part in module.modules() if hasattr(part, "set_attn_implementation")]
    previous = [part.config._attn_implementation for part in backbones]
    for part in backbones:
        part.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            torch.onnx.export(module, tuple(example.values()), str(fp32), input_names=input_names,
                              output_names=list(output_names), opset_version=OPSET, dynamo=False,
                              dynamic_axes={**{name: {0: "batch", 1: "tokens"} for name in input_names},
                                            **{name: {0: "batch", 1: "tokens"} if name.startswith("span") else {0: "batch"}
                                               for name in output_names}})
    finally:
        for part, implementation in zip(backbones, previous, strict=True):
            part.set_attn_implementation(implementation)
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # One scale per output channel: per-tensor scales moved a MiniLM judge's expected levels by
        # 0.044 on average on EPITOME, per-channel by 0.013.
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True)
        fp32.unlink()
    else:
        fp32.replace(target)
    return {"file": ONNX_FILE, "quantization": INT8 if quantize else "none", "opset": OPSET,
            "inputs": input_names, "outputs": list(output_names),
            "sha256": hashlib.sha256(target.read_bytes()).hexdigest()}


def runtime_tag(onnx_spec: dict[str, Any]) -> str:
    """Marks names and fingerprints of ONNX-scored models: int8 scores differ slightly from torch's,
    so caches keyed by them must not mix the two."""
    return "+onnx-int8" if onnx_spec["quantization"].startswith("int8") else "+onnx"


class OnnxPairModel:
    """An exported pair model in ONNX Runtime sessions; `map` runs batches (PairTokenizer.collate_numpy
    output) on the sessions concurrently."""

    def __init__(self, folder: str | Path, onnx_spec: dict[str, Any], threads: int | None = None):
        path = Path(folder) / onnx_spec["file"]
        if not path.is_file():
            raise InputError(f"{folder}: its spec names {onnx_spec['file']} but the file is missing; export again")
        self.sessions = SessionPool(path, threads)
        # The exporter drops inputs the graph never reads (token_type_ids of some backbones).
        self.input_names = self.sessions.input_names()
        self.spec = onnx_spec

    def _feed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: inputs[name] for name in self.input_names}

    def map(self, collate: Callable[[Any], dict[str, np.ndarray]], batches: Iterable[Any]) -> Iterator[list[np.ndarray]]:
        """Outputs per batch in order, `collate(batch)` giving its inputs."""
        return self.sessions.map(lambda batch: self._feed(collate(batch)), batches)


__all__ = ["INT8", "ONNX_BATCH_SIZE", "ONNX_FILE", "RUNTIMES", "OnnxPairModel", "Runtime", "check_runtime", "export_pair_model", "runtime_tag"]
