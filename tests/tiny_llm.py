"""Tiny, real language-model parts for offline tests: a BPE tokenizer trained with `tokenizers`,
a random-init Llama-architecture model and a small learnable instruction task.

Not a test module (no ``test_`` prefix): test files import it (``from tests.tiny_llm import ...``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "pink", "brown"]
FRUITS = ["cherry", "lime", "blueberry", "banana", "plum", "mango", "olive", "coconut", "peach", "date"]
NOISE = ["please", "tell", "me", "quickly", "now", "friend", "today", "kindly", "answer", "simply", "the", "a"]


def learnable_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Instruction rows whose answer is a fixed function of one word in a noisy prompt.

    A model that learns the mapping generalises to held-out rows (new noise, same mapping), so
    held-out loss measures learning, not memorisation.
    """
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        i = rng.randrange(len(COLORS))
        before = " ".join(rng.choice(NOISE) for _ in range(rng.randint(0, 4)))
        after = " ".join(rng.choice(NOISE) for _ in range(rng.randint(0, 4)))
        prompt = f"{before} which fruit is {COLORS[i]} ? {after}".strip()
        rows.append({"prompt": prompt, "answer": FRUITS[i]})
    return rows


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_tokenizer(path: Path, *, vocab_size: int = 400, extra_text: str = "") -> Path:
    """Train a byte-level BPE on the task's words and save it as a transformers tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [f"{r['prompt']} {r['answer']}" for r in learnable_rows(500, seed=123)]
    corpus += ["<|system|> <|user|> <|assistant|>\n"] * 20 + [extra_text] * 5
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(str(path))
    return path


def build_llama(path: Path, *, vocab_size: int, hidden: int = 64, layers: int = 2, seed: int = 0,
                init_range: float = 0.02) -> Path:
    """Save a random-init Llama-architecture causal LM (about 0.1-0.5 M parameters)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        initializer_range=init_range,
    )
    LlamaForCausalLM(config).save_pretrained(str(path))
    return path
