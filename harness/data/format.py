"""Conversation -> token ids and labels.

With a chat template the conversation is rendered by the tokenizer's `apply_chat_template`; without one, by the
plain template below. Labels are -100 everywhere except the response tokens and the end-of-turn token that closes
the response (e.g. `<|im_end|>`): the model must learn to stop. Labels are built explicitly because many small
models use pad == eos (SmolLM2), and masking pad tokens would also mask the end of turn.

The prompt/response boundary: the full conversation and the prompt (all messages but the last, with the generation
prompt) are rendered and tokenized; the prompt's tokens must be a prefix of the conversation's tokens. Where a
tokenizer merges tokens across the boundary, the response text is tokenized on its own after the prompt's tokens,
which is what the model sees when it generates, and the example is counted as `boundary_retokenized`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.data.examples import DataError, Example

IGNORE_INDEX = -100
PLAIN_INSTRUCTION = "### Instruction:\n"
PLAIN_RESPONSE = "### Response:\n"
# Tokens that end an assistant turn in common chat templates, besides the tokenizer's eos token.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return ids


def _ids(encoded: Any) -> list[int]:
    """Token ids from whatever `apply_chat_template(tokenize=True)` returned (a list or a BatchEncoding)."""
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


# ---------------------------------------------------------------------------------------------------- plain template


def render_plain_prompt(messages: list[dict[str, str]]) -> str:
    """The plain template up to and including "### Response:\\n"; `messages` ends with a user turn."""
    parts = [m["content"].strip() + "\n\n" for m in messages if m["role"] == "system"]
    for m in messages:
        if m["role"] == "user":
            parts.append(f"{PLAIN_INSTRUCTION}{m['content'].strip()}\n\n")
        elif m["role"] == "assistant":
            parts.append(f"{PLAIN_RESPONSE}{m['content'].strip()}\n\n")
    parts.append(PLAIN_RESPONSE)
    return "".join(parts)


def _plain_eos(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise DataError(
            "the tokenizer has no chat template and no eos token: the end of a response cannot be learned; "
            "give the model a chat_template"
        )
    return int(tokenizer.eos_token_id)


# ---------------------------------------------------------------------------------------------------- prompts


def encode_prompt(messages: list[dict[str, str]], tokenizer: Any) -> list[int]:
    """Token ids of the prompt to generate a response from, with the same template as training.

    `messages` may end with the assistant's response (an `Example`'s messages); it is left out.
    """
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if has_chat_template(tokenizer):
        return _ids(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True))
    return list(tokenizer(render_plain_prompt(messages), add_special_tokens=True)["input_ids"])


# ---------------------------------------------------------------------------------------------------- examples


@dataclass
class EncodeReport:
    boundary_retokenized: int = 0  # prompt tokens were not a prefix of the conversation's tokens
    eos_appended: int = 0  # the template emitted no end-of-turn token after the response; eos was appended
    template: str = "chat"  # "chat" or "plain"


def encode_examples(examples: list[Example], tokenizer: Any) -> tuple[list[dict[str, list[int]]], EncodeReport]:
    """{"input_ids", "labels"} for every example, in order (no truncation here). Conversations go through the chat
    (or plain) template; a task's own prompt -> answer (`Example.raw`) is plain text, as lm-eval scores it."""
    template = "chat" if has_chat_template(tokenizer) else "plain"
    if not examples:
        return [], EncodeReport(template=template)
    raw = [i for i, ex in enumerate(examples) if ex.raw]
    talk = [i for i, ex in enumerate(examples) if not ex.raw]
    out: list[dict[str, list[int]]] = [{}] * len(examples)
    report = EncodeReport(template=template if talk else "raw")
    if talk:
        encode = _encode_chat if template == "chat" else _encode_plain
        encoded, report = encode([examples[i] for i in talk], tokenizer)
        for i, enc in zip(talk, encoded):
            out[i] = enc
    if raw:
        for i, enc in zip(raw, _encode_raw([examples[i] for i in raw], tokenizer)):
            out[i] = enc
        report.template += "+raw" if talk else ""
    return out, report


def _encode_raw(examples: list[Example], tokenizer: Any) -> list[dict[str, list[int]]]:
    """A task's prompt -> continuation split exactly as lm-eval's loglikelihood splits it (HFLM): trailing spaces of
    the context move to the continuation, the context is tokenized alone, the continuation is what the whole text's
    tokens hold after it; no special tokens; eos after the continuation, so that the model learns to stop."""
    eos = _plain_eos(tokenizer)
    contexts, continuations = [], []
    for ex in examples:
        context, continuation = ex.messages[-2]["content"], ex.response
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        contexts.append(context)
        continuations.append(continuation)
    context_ids = tokenizer(contexts, add_special_tokens=False)["input_ids"]
    whole_ids = tokenizer([c + x for c, x in zip(contexts, continuations)], add_special_tokens=False)["input_ids"]
    out = []
    for ex, ctx, whole in zip(examples, context_ids, whole_ids):
        answer = list(whole[len(ctx) :])
        if not answer:
            raise DataError(f"{ex.source}: record {ex.record_id}: the answer has no tokens")
        answer.append(eos)
        out.append({"input_ids": list(ctx) + answer, "labels": [IGNORE_INDEX] * len(ctx) + answer})
    return out


def _encode_plain(examples: list[Example], tokenizer: Any) -> tuple[list[dict[str, list[int]]], EncodeReport]:
    eos = _plain_eos(tokenizer)
    prompts = [render_plain_prompt(ex.messages[:-1]) for ex in examples]
    # the response is tokenized on its own: exactly the continuation of the prompt the model sees at generation
    responses = [ex.response.strip() for ex in examples]
    prompt_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
    out = []
    for p, r in zip(prompt_ids, response_ids):
        r = list(r) + [eos]
        out.append({"input_ids": list(p) + r, "labels": [IGNORE_INDEX] * len(p) + r})
    return out, EncodeReport(template="plain")


def _encode_chat(examples: list[Example], tokenizer: Any) -> tuple[list[dict[str, list[int]]], EncodeReport]:
    report = EncodeReport(template="chat")
    eot = end_of_turn_ids(tokenizer)
    full_texts, prompt_texts = [], []
    for ex in examples:
        full = tokenizer.apply_chat_template(ex.messages, tokenize=False)
        prompt = tokenizer.apply_chat_template(ex.messages[:-1], tokenize=False, add_generation_prompt=True)
        if not full.startswith(prompt):
            raise DataError(
                f"{ex.source}: record {ex.record_id}: the chat template renders the prompt (with the "
                f"generation prompt) differently from the start of the full conversation, so the response "
                f"cannot be located; use a template whose generation prompt is a prefix of the "
                f"conversation"
            )
        full_texts.append(full)
        prompt_texts.append(prompt)
    # apply_chat_template(tokenize=True) renders, then tokenizes without special tokens: the same, but batched here
    full_ids = tokenizer(full_texts, add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(prompt_texts, add_special_tokens=False)["input_ids"]
    retokenize = [i for i, (f, p) in enumerate(zip(full_ids, prompt_ids)) if list(f[: len(p)]) != list(p)]
    if retokenize:
        suffixes = [full_texts[i][len(prompt_texts[i]) :] for i in retokenize]
        for i, s in zip(retokenize, tokenizer(suffixes, add_special_tokens=False)["input_ids"]):
            full_ids[i] = list(prompt_ids[i]) + list(s)
        report.boundary_retokenized = len(retokenize)

    out = []
    for ex, f, p in zip(examples, full_ids, prompt_ids):
        ids, start = list(f), len(p)
        end = next((j for j in range(start, len(ids)) if ids[j] in eot), None)
        if end is None:
            if tokenizer.eos_token_id is None:
                raise DataError(
                    f"{ex.source}: record {ex.record_id}: the chat template emits no end-of-turn token "
                    f"after the response and the tokenizer has no eos token"
                )
            ids.append(int(tokenizer.eos_token_id))
            end = len(ids) - 1
            report.eos_appended += 1
        if end == start:
            raise DataError(f"{ex.source}: record {ex.record_id}: the response has no tokens")
        labels = [IGNORE_INDEX] * len(ids)
        labels[start : end + 1] = ids[start : end + 1]
        out.append({"input_ids": ids, "labels": labels})
    return out, report
