"""The pinned tokenizer: fingerprint, chat template, answer-only labels, refusal of a swapped tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfti.errors import InvalidInputError, TokenizerMismatchError
from llmfti.llm.tokenization import (
    DEFAULT_CHAT_TEMPLATE,
    IGNORE_INDEX,
    load_pinned_tokenizer,
    load_tokenizer,
    row_messages,
)
from tests.tiny_llm import build_tokenizer


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")


def test_default_template_and_stable_fingerprint(tok_dir: Path, tmp_path: Path) -> None:
    pinned = load_tokenizer(tok_dir)
    assert pinned.tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE
    assert pinned.fingerprint.startswith("sha256:") and len(pinned.fingerprint) == 7 + 64
    text = pinned.render([{"role": "user", "content": "which fruit is red ?"}])
    assert text == "<s><|user|>\nwhich fruit is red ?</s><|assistant|>\n"
    saved = pinned.save(tmp_path / "pinned")
    assert (saved / "fingerprint.txt").read_text().strip() == pinned.fingerprint
    again = load_pinned_tokenizer(saved, pinned.fingerprint, what="test model")
    assert again.fingerprint == pinned.fingerprint
    assert again.render([{"role": "user", "content": "x"}]) == pinned.render([{"role": "user", "content": "x"}])


def test_answer_only_labels_and_prompt_identity(tok_dir: Path) -> None:
    pinned = load_tokenizer(tok_dir)
    messages = row_messages({"system": "be brief", "prompt": "which fruit is red ?"})
    example = pinned.encode_example(messages, "cherry", max_length=128)
    prompt_ids = pinned.encode_prompt(messages)
    # the training prompt is token-for-token what inference feeds the model
    assert example.input_ids[: len(prompt_ids)] == prompt_ids
    assert example.labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    answer = example.input_ids[len(prompt_ids):]
    assert example.labels[len(prompt_ids):] == answer
    assert answer[-1] == pinned.tokenizer.eos_token_id  # the model learns to stop
    assert pinned.decode(answer) == "cherry"
    assert pinned.tokenizer.eos_token_id in pinned.stop_token_ids


def test_long_prompt_cut_from_the_left_and_bad_rows_refused(tok_dir: Path) -> None:
    pinned = load_tokenizer(tok_dir)
    long = row_messages({"prompt": "please tell me " * 100 + "which fruit is red ?"})
    example = pinned.encode_example(long, "cherry", max_length=32)
    assert len(example.input_ids) == 32 and example.truncated
    assert pinned.decode(example.input_ids[-example.answer_tokens:]) == "cherry"
    with pytest.raises(InvalidInputError, match="answer is empty"):
        pinned.encode_example(long, " ", max_length=32)
    with pytest.raises(InvalidInputError, match="sequence limit is 16"):
        pinned.encode_example(long, "cherry " * 40, max_length=16)
    with pytest.raises(InvalidInputError, match="role"):
        row_messages({"messages": [{"role": "robot", "content": "x"}]})
    with pytest.raises(InvalidInputError, match="prompt"):
        row_messages({"answer": "x"})


def test_swapped_tokenizer_or_template_is_refused_naming_both(tok_dir: Path, tmp_path: Path) -> None:
    trained = load_tokenizer(tok_dir)
    other_dir = build_tokenizer(tmp_path / "other", vocab_size=380)
    other = load_tokenizer(other_dir)
    assert other.fingerprint != trained.fingerprint
    with pytest.raises(TokenizerMismatchError) as err:
        load_pinned_tokenizer(other_dir, trained.fingerprint, what="model version assistant:v1")
    message = str(err.value)
    assert trained.fingerprint in message and other.fingerprint in message and "assistant:v1" in message

    # same vocabulary, different chat template: also a different fingerprint, also refused
    templated = load_tokenizer(tok_dir, chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert templated.fingerprint != trained.fingerprint
    templated.save(tmp_path / "templated")
    with pytest.raises(TokenizerMismatchError, match=templated.fingerprint):
        load_pinned_tokenizer(tmp_path / "templated", trained.fingerprint, what="model version assistant:v1")
