"""Templates and label masks with the real SmolLM2 tokenizer (ChatML, pad == eos == <|im_end|>)."""

from __future__ import annotations

import copy

import pytest

from harness.data import DataError, Example, encode_prompt
from harness.data.format import IGNORE_INDEX, encode_examples


@pytest.fixture
def plain_tokenizer(smol_tokenizer):
    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = None
    return tok


def conversation(*turns: tuple[str, str]) -> Example:
    return Example(messages=[{"role": r, "content": c} for r, c in turns], source="t", record_id="0")


EXAMPLES = [
    conversation(("user", "What lowers a fever?"), ("assistant", "Paracetamol or ibuprofen, rest and fluids.")),
    conversation(
        ("system", "You are a careful clinician."),
        ("user", "Is 37.2 C a fever?"),
        ("assistant", "No, 37.2 C is within the normal range for most adults."),
    ),
    conversation(
        ("user", "I twisted my knee."),
        ("assistant", "Does it swell?"),
        ("user", "Yes, a lot."),
        ("assistant", "Rest it, use ice, and see a doctor if you cannot bear weight."),
    ),
]


def labelled(enc):
    return [i for i, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE_INDEX]


def boundary(enc):
    return next(i for i, lab in enumerate(enc["labels"]) if lab != IGNORE_INDEX)


@pytest.mark.parametrize("which", range(len(EXAMPLES)))
def test_chat_labels_are_exactly_the_response_and_end_of_turn(smol_tokenizer, which):
    tok = smol_tokenizer
    ex = EXAMPLES[which]
    (enc,), report = encode_examples([ex], tok)
    assert report.template == "chat" and report.boundary_retokenized == 0 and report.eos_appended == 0
    ids, labels = enc["input_ids"], enc["labels"]
    start = boundary(enc)
    end = max(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
    # one contiguous labelled span, labels equal to the tokens there
    assert all(labels[i] == ids[i] for i in range(start, end + 1))
    assert tok.decode(labelled(enc)) == ex.response + "<|im_end|>"
    assert ids[end] == tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id == tok.pad_token_id
    # everything before is the prompt with the generation prompt; after the end of turn only the template's newline
    assert tok.decode(ids[:start]) == tok.apply_chat_template(
        ex.messages[:-1], tokenize=False, add_generation_prompt=True
    )
    assert tok.decode(ids[:start]).endswith("<|im_start|>assistant\n")
    assert tok.decode(ids[end + 1 :]) == "\n"
    # the whole sequence is what the template renders
    assert tok.decode(ids) == tok.apply_chat_template(ex.messages, tokenize=False)


def test_multi_turn_learns_only_the_last_answer(smol_tokenizer):
    (enc,), _ = encode_examples([EXAMPLES[2]], smol_tokenizer)
    text = smol_tokenizer.decode(labelled(enc))
    assert "Does it swell?" not in text and text.startswith("Rest it")


def test_encode_prompt_is_the_unlabelled_prefix(smol_tokenizer):
    encoded, _ = encode_examples(EXAMPLES, smol_tokenizer)
    for ex, enc in zip(EXAMPLES, encoded):
        assert encode_prompt(ex.messages, smol_tokenizer) == enc["input_ids"][: boundary(enc)]
        assert encode_prompt(ex.messages[:-1], smol_tokenizer) == enc["input_ids"][: boundary(enc)]


def test_batched_encoding_equals_one_by_one(smol_tokenizer):
    together, _ = encode_examples(EXAMPLES, smol_tokenizer)
    alone = [encode_examples([ex], smol_tokenizer)[0][0] for ex in EXAMPLES]
    assert together == alone


def test_plain_template_without_chat_template(plain_tokenizer):
    tok = plain_tokenizer
    (enc, enc_sys), report = encode_examples(EXAMPLES[:2], tok)
    assert report.template == "plain"
    start = boundary(enc)
    assert tok.decode(enc["input_ids"][:start]) == "### Instruction:\nWhat lowers a fever?\n\n### Response:\n"
    assert tok.decode(labelled(enc)) == EXAMPLES[0].response + tok.eos_token
    assert enc["input_ids"][-1] == tok.eos_token_id and enc["labels"][-1] == tok.eos_token_id
    assert all(lab == IGNORE_INDEX for lab in enc["labels"][:start])
    assert tok.decode(enc_sys["input_ids"][: boundary(enc_sys)]) == (
        "You are a careful clinician.\n\n### Instruction:\nIs 37.2 C a fever?\n\n### Response:\n"
    )
    assert encode_prompt(EXAMPLES[0].messages, tok) == enc["input_ids"][:start]


def test_plain_template_multi_turn(plain_tokenizer):
    (enc,), _ = encode_examples([EXAMPLES[2]], plain_tokenizer)
    prompt = plain_tokenizer.decode(enc["input_ids"][: boundary(enc)])
    assert prompt == (
        "### Instruction:\nI twisted my knee.\n\n### Response:\nDoes it swell?\n\n"
        "### Instruction:\nYes, a lot.\n\n### Response:\n"
    )


def test_plain_template_needs_an_eos_token(plain_tokenizer):
    tok = copy.deepcopy(plain_tokenizer)
    tok.eos_token = None
    with pytest.raises(DataError, match="no chat template and no eos token"):
        encode_examples(EXAMPLES[:1], tok)


def test_template_without_end_token_gets_eos_appended_and_boundary_retokenized(smol_tokenizer):
    tok = copy.deepcopy(smol_tokenizer)
    # no end-of-turn token, and the generation prompt ends with a space that merges into the answer's first token
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    (enc,), report = encode_examples(EXAMPLES[:1], tok)
    assert report.eos_appended == 1 and report.boundary_retokenized == 1
    assert tok.decode(enc["input_ids"][: boundary(enc)]) == "user: What lowers a fever?\nassistant: "
    assert tok.decode(labelled(enc)) == EXAMPLES[0].response + "\n<|im_end|>"


def test_template_whose_prompt_is_not_a_prefix_is_an_error(smol_tokenizer):
    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|im_end|>{% endfor %}"
        "{% if add_generation_prompt %}assistant (thinking):{% endif %}"
    )
    ex = Example(messages=EXAMPLES[0].messages, source="file.jsonl", record_id="17")
    with pytest.raises(DataError, match=r"file\.jsonl: record 17: the chat template renders the prompt"):
        encode_examples([ex], tok)
