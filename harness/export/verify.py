"""Checks on the files as shipped: every written artifact is reloaded the way a user loads it and compared with the
reference, the cell's base + adapter *unmerged* in fp32 (a full checkpoint: itself, in fp32).

- The HF folder is reloaded by transformers in the dtype it was saved in, and run in that dtype.
- Each GGUF file is loaded by llama.cpp (llama-cpp-python, its own kernels, default settings: F16 KV cache), as
  `LlamaCppLM` scores it and as a llama.cpp / Ollama user runs it.

On `PROMPTS` (fixed, short, medical; chat-templated when the tokenizer has a template) two figures per artifact:

1. **logits**: the max |logit difference| with the reference over every position of the prompt and of the
   reference's `GREEDY_TOKENS`-token greedy continuation, fed as the same token ids (teacher forcing);
2. **greedy**: the artifact's own greedy continuation of `GREEDY_TOKENS` tokens, and how many of its tokens agree
   with the reference's before the first divergence (with the reference's top-1 / top-2 margin there: a divergence
   at a near-tie, margin < 2 × tolerance, is within the logit tolerance by construction). The texts are recorded:
   fluent vs nonsense shows here even where a few hundred multiple-choice items do not.

Tolerances (`tolerance_for`), stated in every record:

- **HF folder (gated)**: `max(MERGE_ATOL, u × max |reference logit|)` with `u` the unit roundoff of the dtype the
  folder is stored and run in (fp32 2^-24, fp16 2^-11, bf16 2^-8). The second term is what rounding the reference's
  own largest logit to that dtype costs: the file may differ from base + adapter by no more than its dtype can
  resolve of the answer itself. A larger difference is the weights' rounding propagated through the layers: the file
  then computes a measurably different function from the one that was checked, and the check fails (the export then
  falls back to fp32, where the bound is MERGE_ATOL, the merge's own fp32 rounding). `MERGE_ATOL` (1e-3) is the
  floor because two fp32 computations of the same function in another order (merged vs unmerged) differ by ~1e-4 on
  logits of magnitude ~10. Measured on SmolLM2-135M-Instruct (max |logit| 39.6): fp32 folder 0 (no adapter) to
  ~1e-4; bf16 folder run in bf16 1.25 against a bf16 bound of 0.15, greedy agreeing 23 of 32 tokens: fails.
- **GGUF files, F16 included: reported, not gated.** llama.cpp computes with an F16 KV cache and rounds the
  activations to fp16 before F16 / quantized matrix products, so its own arithmetic on *exact* weights is not within
  the fp16 bound of the torch reference: an F32 GGUF of SmolLM2-135M-Instruct differs by 0.040 (max |logit| 39.6),
  above the fp16 weight bound of 0.019, and its F16 file by 0.095 (greedy 32 of 32 tokens). Quantized files round
  their weights per block of 32 or 256 to a step set by the block's range, with a per-tensor mix of types (K-quants
  fall back to Q5_0 / Q6_K / Q8_0 where rows are not a multiple of 256): no bound on the logits follows that is not
  vacuous after dozens of layers (measured on the same model: Q8_0 2.5, greedy 28 / 32; Q4_K_M 8.7, greedy 2 / 32).
  Their figures and greedy texts are recorded and shown beside their paired scores against the cell (exact
  intervals), which judge them; `passed` is null, not true.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROMPTS = (
    "What are the common symptoms of iron-deficiency anaemia?",
    "How does metformin lower blood glucose in type 2 diabetes?",
    "Name two contraindications to giving ibuprofen.",
)
GREEDY_TOKENS = 32
EXCERPT_CHARS = 80

# unit roundoff (2^-p, p = significand bits including the implicit one) of each storage dtype
UNIT_ROUNDOFF = {"fp32": 2.0**-24, "fp16": 2.0**-11, "bf16": 2.0**-8}

TOLERANCE_RULE = (
    "max(1e-3, u × max |reference logit|), u = unit roundoff of the stored dtype (fp32 2^-24, fp16 2^-11, "
    "bf16 2^-8): the file may differ from base + adapter by no more than its dtype can resolve of the reference's "
    "largest logit; 1e-3 is the fp32 noise of computing the same function in another order"
)
NOT_GATED_RULE = (
    "reported, not gated: llama.cpp's own arithmetic (F16 KV cache, fp16 activations) already exceeds the fp16 "
    "bound on exact weights, and block quantization gives no non-vacuous bound on the logits; the paired scores "
    "vs the cell judge the file"
)


@dataclass
class Reference:
    """The reference outputs on the fixed prompts: base + adapter unmerged, fp32."""

    prompts: list[str]  # as written (PROMPTS)
    prompt_ids: list[list[int]]  # chat-templated and tokenized, no special tokens added
    greedy_ids: list[list[int]]  # the reference's greedy continuation of each prompt
    greedy_text: list[str]
    logits: list[Any] = field(repr=False)  # numpy float32 [len(prompt) + GREEDY_TOKENS, vocab], teacher-forced
    what: str = "base + adapter, unmerged, fp32 (transformers)"

    @property
    def max_abs_logit(self) -> float:
        return float(max(abs(lg).max() for lg in self.logits))

    def sequences(self) -> list[list[int]]:
        return [p + g for p, g in zip(self.prompt_ids, self.greedy_ids)]


def prompt_ids(tokenizer: Any) -> list[list[int]]:
    out = []
    for p in PROMPTS:
        text = p
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
        out.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return out


def decode(tokenizer: Any, ids: list[int]) -> str:
    """The continuation as text, up to the first end-of-sequence token."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None and eos in ids:
        ids = ids[: ids.index(eos)]
    return tokenizer.decode(ids, skip_special_tokens=True)


# ---------------------------------------------------------------------------------------------------- engines


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch on `n` threads for a while. The checks run one short sequence at a time: single-token steps gain
    nothing from more threads, and on a busy machine torch's threads spin (measured on a loaded 2-core box: 32 greedy
    steps of SmolLM2-135M take 39 s on 2 threads, 3.8 s on 1). Nothing here is timed."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchRunner:
    """A transformers model (or a PeftModel) run as loaded, on the CPU."""

    def __init__(self, model: Any, threads: int = 1):
        self.model, self.threads = model, threads

    def logits(self, ids: list[int]) -> Any:
        import torch

        with torch.no_grad(), _torch_threads(self.threads):
            return self.model(input_ids=torch.tensor([ids])).logits[0].float().numpy()

    def greedy(self, ids: list[int], n: int) -> list[int]:
        """Exactly `n` argmax tokens (no stop at end-of-sequence), with the KV cache."""
        import torch

        got: list[int] = []
        with torch.no_grad(), _torch_threads(self.threads):
            out = self.model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1)
            for _ in range(n):
                tok = int(out.logits[0, -1].float().argmax())
                got.append(tok)
                if len(got) == n:
                    break
                out = self.model(input_ids=torch.tensor([[tok]]), cache=out.cache, use_cache=True, logits_to_keep=1)
        return got


class LlamaCppRunner:
    """A GGUF file through llama.cpp's kernels (llama-cpp-python), default settings (F16 KV cache)."""

    def __init__(self, gguf_file: Path, *, threads: int | None = None, n_ctx: int = 512):
        from harness.export.gguf import require_llama_cpp

        llama_cpp = require_llama_cpp()
        threads = threads or os.cpu_count() or 1
        self.llm = llama_cpp.Llama(
            model_path=str(gguf_file),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            logits_all=True,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            verbose=False,
        )

    def logits(self, ids: list[int]) -> Any:
        import numpy as np

        self.llm.reset()
        self.llm.eval(ids)
        return np.asarray(self.llm.scores[: len(ids)], dtype=np.float32)

    def greedy(self, ids: list[int], n: int) -> list[int]:
        import numpy as np

        self.llm.reset()
        self.llm.eval(ids)
        got: list[int] = []
        for _ in range(n):
            tok = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
            got.append(tok)
            if len(got) == n:
                break
            self.llm.eval([tok])
        return got

    def close(self) -> None:
        close = getattr(self.llm, "close", None)
        if close is not None:
            close()
        del self.llm


def make_reference(model: Any, tokenizer: Any) -> Reference:
    """The reference outputs of `model` (base + adapter unmerged in fp32, in eval mode) on the fixed prompts."""
    run = TorchRunner(model)
    ids = prompt_ids(tokenizer)
    greedy = [run.greedy(p, GREEDY_TOKENS) for p in ids]
    logits = [run.logits(p + g) for p, g in zip(ids, greedy)]
    return Reference(
        prompts=list(PROMPTS),
        prompt_ids=ids,
        greedy_ids=greedy,
        greedy_text=[decode(tokenizer, g) for g in greedy],
        logits=logits,
    )


# ---------------------------------------------------------------------------------------------------- comparison


def tolerance_for(reference: Reference, dtype: str | None) -> float | None:
    """The gate of an artifact stored in `dtype` (module doc); None: reported, not gated."""
    from harness.export import MERGE_ATOL

    if dtype is None:
        return None
    return max(MERGE_ATOL, UNIT_ROUNDOFF[dtype] * reference.max_abs_logit)


def _agree(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def compare(reference: Reference, runner: Any, tokenizer: Any, *, dtype: str | None, loaded_as: str) -> dict[str, Any]:
    """Both figures of one artifact against the reference, and the verdict (None where not gated)."""
    import numpy as np

    tol = tolerance_for(reference, dtype)
    per_prompt = []
    worst = 0.0
    for i, prompt in enumerate(reference.prompts):
        seq = reference.prompt_ids[i] + reference.greedy_ids[i]
        got = runner.logits(seq)
        ref = reference.logits[i]
        if got.shape != ref.shape:
            raise ValueError(f"logits of shape {got.shape} where the reference has {ref.shape}")
        err = np.abs(got - ref).max(axis=1)
        diff, at = float(err.max()), int(err.argmax())
        worst = max(worst, diff)
        greedy = runner.greedy(reference.prompt_ids[i], GREEDY_TOKENS)
        agree = _agree(greedy, reference.greedy_ids[i])
        margin = None
        if agree < len(reference.greedy_ids[i]):
            row = ref[len(reference.prompt_ids[i]) - 1 + agree]
            top2 = np.sort(row)[-2:]
            margin = round(float(top2[1] - top2[0]), 4)
        per_prompt.append(
            {
                "prompt": prompt,
                "tokens": len(seq),
                "logits_max_abs_diff": diff,
                # where: position in prompt + continuation; >= prompt_tokens is in the greedy continuation
                "worst_position": at,
                "prompt_tokens": len(reference.prompt_ids[i]),
                "greedy_agree": agree,
                "greedy_of": len(reference.greedy_ids[i]),
                "reference_margin_at_divergence": margin,
                "text": decode(tokenizer, greedy),
                "reference_text": reference.greedy_text[i],
            }
        )
    out: dict[str, Any] = {
        "what": f"the file as written, reloaded by {loaded_as}, vs {reference.what}, on {len(reference.prompts)} "
        f"fixed prompts: max |logit difference| over each prompt and the reference's {GREEDY_TOKENS}-token greedy "
        "continuation (same token ids), and the file's own greedy continuation (tokens agreeing before the first "
        "divergence)",
        "loaded_as": loaded_as,
        "dtype": dtype,
        "logits_max_abs_diff": worst,
        "greedy_agree_min": min(p["greedy_agree"] for p in per_prompt),
        "greedy_tokens": GREEDY_TOKENS,
        "reference_max_abs_logit": round(reference.max_abs_logit, 4),
        "tolerance": tol,
        "tolerance_rule": TOLERANCE_RULE if tol is not None else NOT_GATED_RULE,
        "gated": tol is not None,
        "passed": (worst <= tol) if tol is not None else None,
        "prompts": per_prompt,
    }
    return out


def check_hf_folder(reference: Reference, folder: Path, dtype: str, tokenizer: Any) -> dict[str, Any]:
    """The saved HF folder reloaded by transformers in its saved dtype and run in it."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness.export import DTYPES

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, DTYPES[dtype])).eval()
    try:
        return compare(
            reference,
            TorchRunner(model),
            tokenizer,
            dtype=dtype,
            loaded_as=f"transformers from_pretrained, run in {DTYPES[dtype]} as saved",
        )
    finally:
        del model


def check_gguf_file(reference: Reference, path: Path, fmt: str, tokenizer: Any, threads: int = 1) -> dict[str, Any]:
    """A GGUF file through llama.cpp's kernels (one thread by default, as `_torch_threads` says: nothing here is
    timed, and on a busy machine one thread is several times faster: 6.5 s against 43 s for SmolLM2-135M Q8_0)."""
    from harness.export.gguf import llama_cpp_version

    n_ctx = max(512, max(len(s) for s in reference.sequences()) + 8)
    runner = LlamaCppRunner(path, threads=threads, n_ctx=n_ctx)
    try:
        return compare(
            reference,
            runner,
            tokenizer,
            dtype=None,
            loaded_as=f"llama.cpp (llama-cpp-python {llama_cpp_version()}), its CPU kernels, default F16 KV cache",
        )
    finally:
        runner.close()


def summary(check: dict[str, Any] | None) -> str:
    """One line for logs and the report: figure vs tolerance, greedy agreement."""
    if not check:
        return "–"
    tol = check.get("tolerance")
    verdict = {True: "passed", False: "FAILED", None: "reported, not gated"}[check.get("passed")]
    lim = f" (tolerance {tol:.2g})" if tol is not None else ""
    return (
        f"max |Δlogit| {check['logits_max_abs_diff']:.3g}{lim}, greedy agrees {check['greedy_agree_min']}/"
        f"{check['greedy_tokens']} tokens (worst prompt): {verdict}"
    )
