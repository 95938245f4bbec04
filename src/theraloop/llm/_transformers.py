"""transformers backend: a local model folder or GGUF file, an optional LoRA adapter.

JSON-schema output is enforced token by token with llguidance when it is installed; without it
the schema is only stated in the prompt and the output is validated afterwards.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from theraloop.llm._cache import adapter_fingerprint
from theraloop.llm._types import ChatRequest, ChatResponse, LLMUnavailable, Usage


def _load(model_path: Path, adapter: str | None, dtype: str):
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise LLMUnavailable("the transformers backend needs: pip install 'theraloop[train]'") from exc
    if model_path.is_file() and model_path.suffix == ".gguf":
        folder, extra = model_path.parent, {"gguf_file": model_path.name}
    elif model_path.is_dir():
        folder, extra = model_path, {}
    else:
        raise LLMUnavailable(f"model path is neither a folder nor a .gguf file: {model_path}")
    tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype), **extra)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return tokenizer, model


class _GrammarProcessor:
    """A transformers logits processor that masks tokens the JSON schema does not allow next."""

    def __init__(self, matcher: Any, prompt_length: int, vocab_size: int):
        import llguidance.torch as lltorch

        self._lltorch = lltorch
        self.matcher = matcher
        self.prompt_length = prompt_length
        self.mask = lltorch.allocate_token_bitmask(1, vocab_size)

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] > self.prompt_length:
            self.matcher.consume_token(int(input_ids[0, -1]))
        self._lltorch.fill_next_token_bitmask(self.matcher, self.mask, 0)
        self._lltorch.apply_token_bitmask_inplace(scores, self.mask)
        return scores


class TransformersChatModel:
    def __init__(self, model_path: str | Path, adapter: str | None = None, dtype: str = "float32",
                 model_name: str | None = None):
        self.model_path = Path(model_path)
        self.adapter = adapter
        self.tokenizer, self.model = _load(self.model_path, adapter, dtype)
        # The adapter's content hash, not its folder name, keys the completion cache: every trainer
        # saves into a folder called `adapter`, and two different adapters must not share cached replies.
        self._name = model_name or (self.model_path.name + (f"+{adapter_fingerprint(adapter)}" if adapter else ""))
        self._lock = threading.Lock()
        self._lltokenizer = None
        try:
            import llguidance  # noqa: F401

            self._grammar_available = True
        except ImportError:
            self._grammar_available = False

    @property
    def backend(self) -> str:
        return "transformers"

    @property
    def model_id(self) -> str:
        return self._name

    @property
    def supports_json_schema(self) -> bool:
        return self._grammar_available

    def _grammar_processor(self, schema: dict, prompt_length: int) -> _GrammarProcessor:
        import llguidance
        import llguidance.hf

        vocab_size = self.model.config.get_text_config().vocab_size
        if self._lltokenizer is None:
            self._lltokenizer = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=vocab_size)
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
        matcher = llguidance.LLMatcher(self._lltokenizer, grammar)
        if matcher.is_error():
            raise ValueError(f"JSON schema not supported by the grammar engine: {matcher.get_error()}")
        return _GrammarProcessor(matcher, prompt_length, self._lltokenizer.vocab_size)

    def _complete_blocking(self, request: ChatRequest) -> ChatResponse:
        import torch
        from transformers import LogitsProcessorList

        messages = [message.model_dump() for message in request.messages]
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                     return_dict=True)
        prompt_length = encoded["input_ids"].shape[1]
        processors = LogitsProcessorList()
        if request.json_schema is not None and self._grammar_available:
            processors.append(self._grammar_processor(request.json_schema, prompt_length))
        sampling = request.temperature > 0
        generation: dict[str, Any] = {"max_new_tokens": request.max_tokens, "do_sample": sampling,
                                      "logits_processor": processors,
                                      "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id}
        if sampling:
            generation.update(temperature=request.temperature, top_p=request.top_p)
        if request.stop:
            generation["stop_strings"] = request.stop
            generation["tokenizer"] = self.tokenizer
        with self._lock:
            if request.seed is not None:
                torch.manual_seed(request.seed)
            started = time.perf_counter()
            with torch.no_grad():
                output = self.model.generate(**encoded, **generation)
            latency = time.perf_counter() - started
        new_tokens = output[0, prompt_length:]
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        finished = bool(len(new_tokens)) and int(new_tokens[-1]) == self.tokenizer.eos_token_id
        return ChatResponse(text=text, model=self.model_id, backend=self.backend,
                            finish_reason="stop" if finished else "length",
                            usage=Usage(prompt_tokens=prompt_length, completion_tokens=len(new_tokens)),
                            latency_s=latency)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await asyncio.to_thread(self._complete_blocking, request)
