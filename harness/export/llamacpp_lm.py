"""An lm-eval model whose log-likelihoods come from llama.cpp's own kernels (llama-cpp-python), for GGUF files.

Tokenization is the source's Hugging Face tokenizer, split exactly as lm-eval's HFLM splits context and continuation
(`TemplateLM._encode_pair`), so the same token ids reach llama.cpp as reach transformers in the cell's evaluation:
a difference in score then comes from the GGUF's weights and llama.cpp's kernels (what a llama.cpp / Ollama user
gets), not from tokenization (the tokenizer round trip is checked separately). Multiple-choice (log-likelihood)
tasks only. Consecutive requests share their context, so the KV cache of the longest common prefix is kept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lm_eval.api.model import TemplateLM


class LlamaCppLM(TemplateLM):
    def __init__(self, gguf_file: str | Path, tokenizer: Any, *, n_ctx: int = 2048, threads: int | None = None):
        super().__init__()
        from harness.export.gguf import require_llama_cpp

        llama_cpp = require_llama_cpp()
        self.tokenizer = tokenizer
        self.n_ctx = n_ctx
        threads = threads or os.cpu_count() or 1
        self.llm = llama_cpp.Llama(
            model_path=str(gguf_file),
            n_ctx=n_ctx,
            n_batch=min(n_ctx, 512),
            logits_all=True,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            verbose=False,
        )
        self.batch_size_per_gpu = None  # llama.cpp evaluates one sequence at a time
        self._cached: list[int] = []

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        if add_special_tokens is None:
            return self.tokenizer.encode(string)
        return self.tokenizer.encode(string, add_special_tokens=add_special_tokens)

    def _eval(self, tokens: list[int]) -> None:
        """Evaluate `tokens`, reusing the KV cache of the common prefix with the previous sequence."""
        prefix = 0
        for a, b in zip(self._cached, tokens):
            if a != b:
                break
            prefix += 1
        prefix = min(prefix, len(tokens) - 1)  # at least one token is evaluated, so its logits are fresh
        ctx = getattr(self.llm, "_ctx", None)
        if prefix > 0 and ctx is not None and hasattr(ctx, "kv_cache_seq_rm") and ctx.kv_cache_seq_rm(-1, prefix, -1):
            self.llm.n_tokens = prefix
        else:
            self.llm.reset()
            prefix = 0
        self.llm.eval(tokens[prefix:])
        self._cached = list(tokens)

    def _loglikelihood_tokens(
        self, requests: list[Any], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        import numpy as np
        from tqdm import tqdm

        out = []
        for _key, context_enc, continuation_enc in tqdm(requests, disable=disable_tqdm, desc="llama.cpp"):
            tokens = (context_enc + continuation_enc)[-self.n_ctx :]
            n_cont = len(continuation_enc)
            self._eval(tokens)
            scores = np.asarray(self.llm.scores[: len(tokens)], dtype=np.float64)
            # row i holds the logits that predict token i + 1
            rows = scores[len(tokens) - n_cont - 1 : len(tokens) - 1]
            rows = rows - rows.max(axis=1, keepdims=True)
            logprobs = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
            cont = tokens[len(tokens) - n_cont :]
            ll = float(sum(logprobs[j, t] for j, t in enumerate(cont)))
            greedy = bool(all(int(np.argmax(logprobs[j])) == t for j, t in enumerate(cont)))
            out.append((ll, greedy))
            self.cache_hook.add_partial("loglikelihood", _key, (ll, greedy))
        return out

    def loglikelihood_rolling(self, requests: Any, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError("LlamaCppLM scores multiple-choice (log-likelihood) tasks only")

    def generate_until(self, requests: Any, disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError("LlamaCppLM scores multiple-choice (log-likelihood) tasks only")
