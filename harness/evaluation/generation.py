"""Generation quality on held-out conversations: greedy answers scored with ROUGE-L and BLEU.

Each example has `.messages` (a list of {role, content}); the last message is the assistant's reference answer,
everything before it is the prompt. The prompt is rendered with the tokenizer's chat template
(`add_generation_prompt=True`) exactly as training renders it (`harness.data.format.encode_prompt`, which falls
back to the plain instruction template for tokenizers without a chat template), decoded greedily, one example at
a time (no padding effects), for at most `max_new_tokens` tokens; the new tokens are decoded without special
tokens.

- `rouge_l`: mean over examples of the ROUGE-L F-measure (rouge-score, Porter stemming on), in [0, 1];
- `bleu`: corpus BLEU of all answers against the references (sacrebleu defaults: 13a tokenisation, exp
  smoothing), in [0, 100].
The model is put in eval mode for the run and its previous mode is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _prompt_and_reference(example: Any) -> tuple[list[dict[str, str]], str]:
    messages = list(example.messages if hasattr(example, "messages") else example["messages"])
    if len(messages) < 2 or messages[-1].get("role") != "assistant":
        raise ValueError("an example needs at least one prompt message followed by the assistant's reference answer")
    return messages[:-1], messages[-1]["content"]


def greedy_answers(
    model: Any, tokenizer: Any, prompts: Sequence[list[dict[str, str]]], max_new_tokens: int
) -> list[str]:
    import torch

    from harness.data.format import encode_prompt

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers = []
    with torch.no_grad():
        for messages in prompts:
            ids = torch.tensor([encode_prompt(messages, tokenizer)], device=device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad_id,
                temperature=None,
                top_p=None,
                top_k=None,
            )
            answers.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return answers


def score_answers(answers: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """{rouge_l, bleu} of answers against references (same order)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(answers) != len(references) or not answers:
        raise ValueError(f"need equally many answers and references (got {len(answers)} and {len(references)})")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [scorer.score(ref, ans)["rougeL"].fmeasure for ans, ref in zip(answers, references)]
    bleu = sacrebleu.corpus_bleu(list(answers), [list(references)]).score
    return {"rouge_l": sum(rouge) / len(rouge), "bleu": float(bleu)}


def generation_metrics(model: Any, tokenizer: Any, examples: Sequence[Any], max_new_tokens: int) -> dict[str, Any]:
    """{rouge_l, bleu, n, max_new_tokens} of greedy answers to `examples` against their reference answers."""
    pairs = [_prompt_and_reference(e) for e in examples]
    if not pairs:
        return {"rouge_l": None, "bleu": None, "n": 0, "max_new_tokens": max_new_tokens}
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        answers = greedy_answers(model, tokenizer, [p for p, _ in pairs], max_new_tokens)
    finally:
        model.train(was_training)
    scores = score_answers(answers, [r for _, r in pairs])
    return {**scores, "n": len(pairs), "max_new_tokens": max_new_tokens}
