"""The pinned tokenizer: the one model-dependent transformation, shared by training and inference.

A :class:`PinnedTokenizer` wraps a Hugging Face tokenizer and its chat template. Its
**fingerprint** is the sha256 of the tokenizer's ``tokenizer.json`` content (vocabulary, merges,
normalisation, added tokens; runtime truncation/padding settings excluded), its special tokens and
its chat template. Training stores the fingerprint with every model version; inference loads the
tokenizer through :func:`load_pinned_tokenizer`, which refuses a different fingerprint, so a model
is never served with a tokenizer or prompt format other than the one it was trained with.

Messages are rendered with the tokenizer's own chat template. A tokenizer without one (a freshly
trained BPE, a base model) gets :data:`DEFAULT_CHAT_TEMPLATE`::

    <bos><|system|>\\n{system}<eos><|user|>\\n{question}<eos><|assistant|>\\n{answer}<eos>

``transformers`` is imported only inside the functions that load a tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmfti.errors import InvalidInputError, NotFoundError, TokenizerMismatchError

DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token or '' }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""Chat template given to tokenizers that have none. Each turn ends with the eos token, so the model
learns to stop; the generation prompt is ``<|assistant|>\\n``."""

ROLES = ("system", "user", "assistant")
IGNORE_INDEX = -100
"""Label value that excludes a position from the loss (prompt tokens, padding)."""


@dataclass(frozen=True)
class EncodedExample:
    """One training example: ``labels`` is ``IGNORE_INDEX`` on every prompt token."""

    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int
    truncated: bool

    @property
    def answer_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


class PinnedTokenizer:
    """A tokenizer plus chat template, identified by :attr:`fingerprint`."""

    def __init__(self, tokenizer: Any, *, source: str):
        if tokenizer.eos_token is None:
            raise InvalidInputError(
                f"tokenizer {source!r} has no eos token",
                expected="a tokenizer with eos_token set (the model must learn where an answer ends)",
                fix="set eos_token in its tokenizer_config.json or pass a tokenizer that defines one",
            )
        if tokenizer.chat_template is None:
            tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.source = source
        self.fingerprint = tokenizer_fingerprint(tokenizer)

    # -- rendering -------------------------------------------------------------------------------

    def render(self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` in this tokenizer's chat template."""
        checked = normalize_messages(messages)
        return self.tokenizer.apply_chat_template(
            checked, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def encode_text(self, text: str) -> list[int]:
        """Token ids of already rendered text (special tokens in the text are honoured, none added)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_prompt(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Token ids of the prompt the model continues: exactly what training fed before an answer."""
        return self.encode_text(self.render(messages, add_generation_prompt=True))

    def split_answer(self, messages: Sequence[Mapping[str, str]], answer: str) -> tuple[str, str]:
        """(prompt text, completion text): the completion is the answer plus the template's end of turn."""
        prompt = self.render(messages, add_generation_prompt=True)
        full = self.render([*normalize_messages(messages), {"role": "assistant", "content": answer}],
                           add_generation_prompt=False)
        if not full.startswith(prompt):
            raise InvalidInputError(
                f"the chat template of tokenizer {self.source!r} does not render the prompt as a prefix "
                "of the conversation with its answer",
                expected="render(messages, add_generation_prompt=True) to be a prefix of "
                "render(messages + [assistant answer])",
                fix="use a chat template without answer-dependent prompt changes (e.g. no reasoning blocks), "
                "or pass --chat-template",
            )
        return prompt, full[len(prompt):]

    def encode_example(
        self, messages: Sequence[Mapping[str, str]], answer: str, *, max_length: int
    ) -> EncodedExample:
        """input_ids + labels with the loss on the answer (and its end-of-turn tokens) only.

        Prompt and completion are tokenized separately, so the prompt ids are exactly those
        :meth:`encode_prompt` gives at inference. Over ``max_length``, the prompt is cut from the
        left (the answer is kept); an answer that alone does not fit is an error.
        """
        if not isinstance(answer, str) or not answer.strip():
            raise InvalidInputError("answer is empty", expected="a non-empty string", fix="drop or fix the row")
        prompt, completion = self.split_answer(messages, answer)
        prompt_ids = self.encode_text(prompt)
        answer_ids = self.encode_text(completion)
        if len(answer_ids) >= max_length:
            raise InvalidInputError(
                f"answer is {len(answer_ids)} tokens, the sequence limit is {max_length}",
                expected=f"answers shorter than max_length={max_length} tokens",
                fix="raise max_length in the training config or shorten the answer",
            )
        truncated = len(prompt_ids) + len(answer_ids) > max_length
        if truncated:
            prompt_ids = prompt_ids[len(prompt_ids) + len(answer_ids) - max_length:]
        return EncodedExample(
            input_ids=prompt_ids + answer_ids,
            labels=[IGNORE_INDEX] * len(prompt_ids) + answer_ids,
            prompt_tokens=len(prompt_ids),
            truncated=truncated,
        )

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    # -- identity --------------------------------------------------------------------------------

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def stop_token_ids(self) -> list[int]:
        """Ids that end an answer: eos and the template's end-of-turn special token, if different."""
        ids = [int(self.tokenizer.eos_token_id)]
        _, completion = self.split_answer([{"role": "user", "content": "x"}], "\x00")
        special = set(self.tokenizer.all_special_ids) | {
            i for i, t in self.tokenizer.added_tokens_decoder.items() if t.special
        }
        for token_id in self.encode_text(completion.split("\x00", 1)[-1]):
            if token_id in special:
                if token_id not in ids:
                    ids.append(int(token_id))
                break
        return ids

    def verify(self, expected: str, *, what: str) -> None:
        """Raise :class:`TokenizerMismatchError` unless this tokenizer has fingerprint ``expected``."""
        if self.fingerprint != expected:
            raise TokenizerMismatchError(
                f"{what} was trained with tokenizer fingerprint {expected}, but the tokenizer "
                f"{self.source!r} has fingerprint {self.fingerprint} (vocabulary, special tokens or chat "
                "template differ)",
                expected=f"tokenizer fingerprint {expected}",
                fix="load the tokenizer pinned in the model version's artifact folder, or retrain the model "
                "with this tokenizer",
            )

    def save(self, path: Path) -> Path:
        """Write tokenizer.json, tokenizer_config.json and the chat template to ``path``."""
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(path))
        (path / "fingerprint.txt").write_text(self.fingerprint + "\n", encoding="utf-8")
        return path


def normalize_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Validated ``[{"role", "content"}]`` (roles system/user/assistant, contents strings)."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence) or not messages:
        raise InvalidInputError(
            "messages must be a non-empty list of {role, content} objects",
            expected='[{"role": "user", "content": "..."}]',
            fix="give 'messages' as a list, or a 'prompt' string",
        )
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidInputError(f"messages[{i}] is {type(message).__name__}, not an object",
                                    expected="{role, content}", fix="give each message as an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise InvalidInputError(f"messages[{i}].role is {role!r}", expected=f"one of {ROLES}",
                                    fix="use a supported role")
        if not isinstance(content, str):
            raise InvalidInputError(f"messages[{i}].content is {type(content).__name__}", expected="a string",
                                    fix="give the content as text")
        out.append({"role": role, "content": content})
    return out


def row_messages(row: Mapping[str, Any]) -> list[dict[str, str]]:
    """The prompt messages of an instruction row: ``messages``, or ``prompt`` (+ optional ``system``)."""
    if row.get("messages") is not None:
        messages = row["messages"]
        if isinstance(messages, str):
            try:
                messages = json.loads(messages)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"messages is not valid JSON: {exc}", expected="a JSON list",
                                        fix="store messages as a list of {role, content}") from exc
        return normalize_messages(messages)
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInputError(
            "row has neither 'messages' nor a non-empty 'prompt'",
            expected="a 'messages' list or a 'prompt' string, plus 'answer'",
            fix="add the question as 'prompt' or 'messages'",
        )
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    return normalize_messages([*messages, {"role": "user", "content": prompt}])


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 over tokenizer.json content, special tokens and chat template (see module docstring)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
    else:  # a tokenizer without a tokenizers backend: its vocabulary stands in for tokenizer.json
        spec = {"vocab": sorted(tokenizer.get_vocab().items())}
    template = tokenizer.chat_template
    identity = {
        "tokenizer_json": spec,
        "special_tokens": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "chat_template": template,
    }
    blob = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()


def load_tokenizer(path_or_id: str | Path, *, chat_template: str | None = None) -> PinnedTokenizer:
    """Load a tokenizer from a local folder or a hub id (offline cache honoured).

    ``chat_template`` (a Jinja string or a path to a ``.jinja`` file) replaces the tokenizer's own.
    """
    from transformers import AutoTokenizer

    source = str(path_or_id)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise NotFoundError(
            f"cannot load a tokenizer from {source!r}: {exc}",
            expected="a folder with tokenizer.json / tokenizer_config.json, or a cached hub id",
            fix="check the path, or download the model first (runs here are offline)",
        ) from exc
    if chat_template is not None:
        template_path = Path(chat_template)
        if chat_template.endswith(".jinja") and template_path.is_file():
            chat_template = template_path.read_text(encoding="utf-8")
        tokenizer.chat_template = chat_template
    return PinnedTokenizer(tokenizer, source=source)


def load_pinned_tokenizer(path_or_id: str | Path, expected_fingerprint: str, *, what: str) -> PinnedTokenizer:
    """Load a tokenizer and refuse it unless its fingerprint is ``expected_fingerprint``."""
    pinned = load_tokenizer(path_or_id)
    pinned.verify(expected_fingerprint, what=what)
    return pinned


# -- checking a remote tokenizer (vLLM's POST /tokenize) ----------------------------------------

PROBE_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "naïve café, Straße, 東京, émoji 🙂 and Ελληνικά",
    "  leading spaces,\ttabs\tand\n\nblank lines\n",
    "x = f(3) + 4**2  # code and numbers 1234567890 3.14159",
    "which fruit is red ? please tell me quickly",
)
"""Texts whose ids must match exactly: ascii, unicode, whitespace, code/digits, the training task's words."""

PROBE_MESSAGES = (
    {"role": "system", "content": "Answer from the passages and cite them as [1]."},
    {"role": "user", "content": "Which fruit is red?\n\n[1] Cherries are red."},
    {"role": "assistant", "content": "cherry [1]"},
    {"role": "user", "content": "And which one is green?"},
)
"""A conversation rendered by the chat template on both sides (generation prompt included)."""


@dataclass(frozen=True)
class TokenizerProbe:
    """One ``/tokenize`` request (without ``model``) and the ids the pinned tokenizer gives for it."""

    name: str
    body: dict[str, Any]
    expected: list[int]


def tokenizer_probes(pinned: PinnedTokenizer) -> list[TokenizerProbe]:
    """The fixed probe set: each text without special tokens, and the rendered chat template."""
    probes = [TokenizerProbe(f"text {i}", {"prompt": text, "add_special_tokens": False}, pinned.encode_text(text))
              for i, text in enumerate(PROBE_TEXTS)]
    messages = [dict(m) for m in PROBE_MESSAGES]
    probes.append(TokenizerProbe("chat template", {"messages": messages, "add_generation_prompt": True,
                                                   "add_special_tokens": False}, pinned.encode_prompt(messages)))
    return probes


def probe_differences(probes: Sequence[TokenizerProbe], remote: Sequence[Sequence[int]]) -> list[str]:
    """Where the remote ids differ from the pinned ones: ``"<probe>: first difference at token i (a vs b)"``."""
    out = []
    for probe, ids in zip(probes, remote, strict=True):
        ids = [int(i) for i in ids]
        if ids == probe.expected:
            continue
        at = next((i for i, (a, b) in enumerate(zip(probe.expected, ids, strict=False)) if a != b),
                  min(len(ids), len(probe.expected)))
        pinned_id = probe.expected[at] if at < len(probe.expected) else "end"
        remote_id = ids[at] if at < len(ids) else "end"
        out.append(f"{probe.name}: first difference at token {at} (pinned {pinned_id}, remote {remote_id}; "
                   f"{len(probe.expected)} vs {len(ids)} tokens)")
    return out
