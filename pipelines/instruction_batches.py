"""Instruction data for fine-tuning: read rows, encode them with the pinned tokenizer, split off a
held-out slice, and cut each epoch into micro-batches (packed, or length-bucketed).

Rows are ``{"messages": [...]} | {"prompt": str, "system"?: str}`` plus ``"answer": str``. A row that
cannot be used is quarantined with its reason, never dropped silently.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmfti.errors import InvalidInputError, LLMFTIError, NotFoundError
from llmfti.llm.tokenization import IGNORE_INDEX, EncodedExample, PinnedTokenizer, row_messages


@dataclass
class InstructionSource:
    """Rows plus where they came from (recorded in the model version's lineage)."""

    rows: list[dict[str, Any]]
    dataset_id: str
    data_versions: dict[str, Any]


@dataclass
class InstructionData:
    train: list[EncodedExample]
    eval: list[EncodedExample]
    dataset_id: str
    data_versions: dict[str, Any]
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    truncated: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "dataset_id": self.dataset_id,
            "train_examples": len(self.train),
            "eval_examples": len(self.eval),
            "train_tokens": sum(len(e.input_ids) for e in self.train),
            "train_answer_tokens": sum(e.answer_tokens for e in self.train),
            "quarantined": len(self.quarantined),
            "truncated_prompts": self.truncated,
        }


def read_source(source: str | Path | Any) -> InstructionSource:
    """Rows from a JSONL/JSON file, a pyarrow Table, or a list of dicts."""
    if hasattr(source, "to_pylist") and hasattr(source, "schema"):  # a pyarrow Table
        rows = source.to_pylist()
        digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
        return InstructionSource(rows, f"table@sha256:{digest[:16]}", {"table_sha256": digest})
    if isinstance(source, list):
        digest = hashlib.sha256(json.dumps(source, sort_keys=True, default=str).encode()).hexdigest()
        return InstructionSource(list(source), f"rows@sha256:{digest[:16]}", {"rows_sha256": digest})
    path = Path(source)
    if not path.is_file():
        raise NotFoundError(
            f"dataset {str(source)!r} is not a file",
            expected="a .jsonl file of {prompt|messages, answer} rows, or a .json list of such rows",
            fix="pass the path of the instruction dataset",
        )
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    text = raw.decode("utf-8")
    rows: list[Any]
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{path} is not valid JSON: {exc}", expected="a JSON list of rows",
                                    fix="write one row object per list item, or use JSONL") from exc
        rows = data if isinstance(data, list) else [data]
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                rows.append({"__invalid__": f"line {number} is not valid JSON: {exc.msg}"})
    return InstructionSource(rows, f"file:{path.name}@sha256:{digest[:16]}",
                             {"path": str(path.resolve()), "sha256": digest})


def _held_out(row: Mapping[str, Any], fraction: float) -> bool:
    """Deterministic split by content: the same row is on the same side in every run."""
    key = json.dumps({k: row.get(k) for k in ("messages", "prompt", "system", "answer")}, sort_keys=True)
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction


def encode_rows(rows: Iterable[Any], tokenizer: PinnedTokenizer, max_length: int
                ) -> tuple[list[tuple[dict, EncodedExample]], list[dict[str, Any]]]:
    """(encoded rows, quarantine records) for ``rows``."""
    good, bad = [], []
    for index, row in enumerate(rows):
        try:
            if not isinstance(row, Mapping):
                raise InvalidInputError(f"row is {type(row).__name__}", expected="an object", fix="fix the row")
            if "__invalid__" in row:
                raise InvalidInputError(row["__invalid__"], fix="fix the JSON on that line")
            example = tokenizer.encode_example(row_messages(row), row.get("answer"), max_length=max_length)
        except LLMFTIError as exc:
            bad.append({"row": index, "reason": str(exc)})
            continue
        good.append((dict(row), example))
    return good, bad


def prepare(
    source: InstructionSource,
    tokenizer: PinnedTokenizer,
    *,
    max_length: int,
    eval_fraction: float,
    max_eval_examples: int,
    eval_source: InstructionSource | None = None,
) -> InstructionData:
    """Encode rows and split off the held-out slice (or use ``eval_source`` as the held-out set)."""
    encoded, quarantined = encode_rows(source.rows, tokenizer, max_length)
    if eval_source is not None:
        eval_encoded, eval_bad = encode_rows(eval_source.rows, tokenizer, max_length)
        quarantined += [{**q, "split": "eval"} for q in eval_bad]
        train = [e for _, e in encoded]
        held = [e for _, e in eval_encoded]
    else:
        train = [e for row, e in encoded if not _held_out(row, eval_fraction)]
        held = [e for row, e in encoded if _held_out(row, eval_fraction)]
    if not train:
        raise InvalidInputError(
            f"no usable training rows in {source.dataset_id} ({len(quarantined)} quarantined"
            + (f", first reason: {quarantined[0]['reason']}" if quarantined else "") + ")",
            expected="rows with 'prompt' or 'messages' and a non-empty 'answer'",
            fix="fix the dataset; see the quarantine records",
        )
    return InstructionData(
        train=train,
        eval=held[:max_eval_examples],
        dataset_id=source.dataset_id,
        data_versions=source.data_versions,
        quarantined=quarantined,
        truncated=sum(e.truncated for e in train),
    )


def collate(rows: list[list[EncodedExample]], *, pad_id: int, packed: bool) -> dict[str, Any]:
    """Tensors for one micro-batch; each row is one example, or several packed ones."""
    import torch

    width = max(sum(len(e.input_ids) for e in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for example in row:
            n = len(example.input_ids)
            input_ids[r, at:at + n] = torch.tensor(example.input_ids)
            labels[r, at:at + n] = torch.tensor(example.labels)
            positions[r, at:at + n] = torch.arange(n)
            mask[r, at:at + n] = 1
            at += n
        # padding continues as its own "sequence" (positions restart), so packed masks stay block-diagonal
        positions[r, at:] = torch.arange(width - at)
    batch = {"input_ids": input_ids, "labels": labels, "position_ids": positions}
    # Packed rows: no attention mask, so transformers derives a block-diagonal causal mask from the
    # restarting position_ids (each example attends only to itself). Bucketed rows: a padding mask.
    batch["attention_mask"] = None if packed else mask
    batch["real_tokens"] = int(mask.sum())
    batch["label_tokens"] = int((labels[:, 1:] != IGNORE_INDEX).sum())
    return batch


def _pack(examples: list[EncodedExample], max_length: int, window: int = 2048) -> list[list[EncodedExample]]:
    """Best-fit-decreasing packing into rows of at most ``max_length`` tokens (examples never split).

    Works on windows of ``window`` examples so packing stays local to the shuffled order; fills rows
    far better than greedy sequential packing when examples are long relative to a row.
    """
    rows: list[list[EncodedExample]] = []
    for start in range(0, len(examples), window):
        chunk = sorted(examples[start:start + window], key=lambda e: len(e.input_ids), reverse=True)
        bins: list[list[EncodedExample]] = []
        free: list[tuple[int, int]] = []  # sorted (free tokens, bin index)
        for example in chunk:
            n = len(example.input_ids)
            at = bisect.bisect_left(free, (n, -1))
            if at == len(free):
                bins.append([example])
                bisect.insort(free, (max_length - n, len(bins) - 1))
            else:
                room, index = free.pop(at)
                bins[index].append(example)
                bisect.insort(free, (room - n, index))
        rows += bins
    return rows


def epoch_plan(
    examples: list[EncodedExample],
    *,
    micro_batch_size: int,
    max_length: int,
    packing: bool,
    seed: int,
    epoch: int,
) -> list[list[list[EncodedExample]]]:
    """The micro-batches of one epoch (rows of examples, not yet tensors), in an order fixed by
    ``seed`` and ``epoch``. Turn one into tensors with :func:`collate`."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(examples)
    rng.shuffle(order)
    if packing:
        rows = _pack(order, max_length)
        rng.shuffle(rows)
        groups = [rows[i:i + micro_batch_size] for i in range(0, len(rows), micro_batch_size)]
    else:
        # length bucketing: sort within windows of 64 micro-batches, then shuffle the batches
        window = micro_batch_size * 64
        groups = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start:start + window], key=lambda e: len(e.input_ids))
            groups += [[[e] for e in chunk[i:i + micro_batch_size]] for i in range(0, len(chunk), micro_batch_size)]
        rng.shuffle(groups)
    return groups


def eval_batches(examples: list[EncodedExample], *, micro_batch_size: int, pad_id: int) -> list[dict[str, Any]]:
    """Held-out micro-batches (one example per row, padded, fixed order)."""
    ordered = sorted(examples, key=lambda e: len(e.input_ids))
    return [collate([[e] for e in ordered[i:i + micro_batch_size]], pad_id=pad_id, packed=False)
            for i in range(0, len(ordered), micro_batch_size)]
