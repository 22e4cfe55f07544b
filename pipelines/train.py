"""The fine-tuning pipeline: LoRA (peft) on any causal LM, loss on answer tokens only.

``resolve_runtime`` picks device and precision; ``fit`` is the training loop (packing or
length bucketing, gradient accumulation, checkpoints + resume, seeded); ``train`` writes the run
folder; ``train_and_register`` records the result in the model registry, coupled to the index
version it will be served with. The config lives in ``train_config``, checkpoints in ``train_checkpoints``.

Run folder (``data_dir/train_runs/<run>`` unless given)::

    adapter/            peft adapter (adapter_config.json + weights)
    tokenizer/          the pinned tokenizer (fingerprint.txt)
    checkpoints/step-N  trainable weights, optimizer, scheduler, RNG states, loop state
    train_config.json   the resolved config; metrics.json  losses, tokens/s, learning curve
    quarantine.jsonl    rows that could not be used, with the reason

Command line: ``llmfti train --base PATH_OR_ID --dataset rows.jsonl [--config configs/train/x.yaml]``
(or ``python -m pipelines.train`` with the same flags).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmfti.config import Settings
from llmfti.errors import InvalidInputError, NotFoundError
from llmfti.llm.tokenization import IGNORE_INDEX, PinnedTokenizer, load_tokenizer
from llmfti.tracing import span, traced
from pipelines.instruction_batches import (
    InstructionData,
    InstructionSource,
    collate,
    epoch_plan,
    eval_batches,
    prepare,
    read_source,
)
from pipelines.train_checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from pipelines.train_config import Runtime, TrainConfig, load_train_config, resolve_runtime

__all__ = ["Runtime", "TrainConfig", "TrainResult", "add_lora", "fit", "latest_checkpoint", "load_train_config",
           "register_run", "resolve_runtime", "train", "train_and_register"]


def base_model_revision(base: str) -> str | None:
    """A local base model's identity (sha256 of its config.json); None for hub ids."""
    config = Path(base) / "config.json"
    if config.is_file():
        return "config-sha256:" + hashlib.sha256(config.read_bytes()).hexdigest()[:16]
    return None


def load_base_model(base: str | Path, runtime: Runtime) -> Any:
    """A causal LM from a local folder or a (cached) hub id, in the run's precision."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.bfloat16 if runtime.bf16 else torch.float32)
    except OSError as exc:
        raise NotFoundError(f"cannot load base model {str(base)!r}: {exc}",
                            expected="a local model folder or a cached hub id",
                            fix="check --base (runs here are offline)") from exc


def add_lora(model: Any, config: TrainConfig, runtime: Runtime) -> Any:
    """Wrap ``model`` with fresh LoRA adapters (seeded), on the run's device. Mutates ``model``."""
    import torch
    from peft import LoraConfig, get_peft_model

    model.config.use_cache = False
    torch.manual_seed(config.seed)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    if runtime.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model.to(runtime.device)


def load_lora_model(base: str | Path, tokenizer: PinnedTokenizer, config: TrainConfig, runtime: Runtime) -> Any:
    """The base causal LM, checked against the tokenizer, wrapped with fresh LoRA adapters."""
    model = load_base_model(base, runtime)
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer.tokenizer) > vocab:
        raise InvalidInputError(
            f"tokenizer {tokenizer.source!r} has {len(tokenizer.tokenizer)} tokens, the model's embedding {vocab}",
            expected="a tokenizer made for this base model", fix="pass the base model's own tokenizer")
    return add_lora(model, config, runtime)


def answer_loss_sum(model: Any, batch: dict[str, Any], device: str) -> Any:
    """Summed cross-entropy over answer tokens. The output head runs only on answer positions."""
    import torch.nn.functional as F

    input_ids = batch["input_ids"].to(device, non_blocking=True)
    labels = batch["labels"].to(device, non_blocking=True)
    mask = batch["attention_mask"]
    kwargs = {"input_ids": input_ids, "position_ids": batch["position_ids"].to(device, non_blocking=True),
              "attention_mask": None if mask is None else mask.to(device, non_blocking=True)}
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = inner.config
    plain_head = not any(getattr(cfg, k, None) for k in ("final_logit_softcapping", "logits_scaling"))
    decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    target = labels[:, 1:]
    keep = target != IGNORE_INDEX
    if plain_head and decoder is not None:
        hidden = decoder(**kwargs).last_hidden_state[:, :-1]
        logits = inner.get_output_embeddings()(hidden[keep]).float()
    else:  # models with a special head: full forward
        logits = model(**kwargs).logits[:, :-1][keep].float()
    return F.cross_entropy(logits, target[keep], reduction="sum")


def _lr_lambda(config: TrainConfig, total_steps: int):  # noqa: ANN202
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        if config.lr_schedule == "constant":
            return 1.0
        progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
        progress = min(1.0, progress)
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if config.lr_schedule == "cosine" else 1 - progress
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * shape

    return factor


class _Batches:
    """Deterministic stream of micro-batches: epoch e is shuffled with (seed, e); resumable by index."""

    def __init__(self, data: InstructionData, config: TrainConfig, pad_id: int):
        self.data, self.config, self.pad_id = data, config, pad_id
        self._plans: dict[int, list[Any]] = {}

    def epoch(self, e: int) -> list[Any]:
        if e not in self._plans:
            self._plans[e] = epoch_plan(self.data.train, micro_batch_size=self.config.micro_batch_size,
                                        max_length=self.config.max_length, packing=self.config.packing,
                                        seed=self.config.seed, epoch=e)
        return self._plans[e]

    def at(self, index: int) -> tuple[int, dict[str, Any]]:
        """(epoch, micro-batch tensors) number ``index`` of the stream."""
        e = 0
        while index >= len(self.epoch(e)):
            index -= len(self.epoch(e))
            e += 1
        return e, collate(self.epoch(e)[index], pad_id=self.pad_id, packed=self.config.packing)


@dataclass
class FitResult:
    steps: int
    learning_curve: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False


def evaluate(model: Any, data: InstructionData, config: TrainConfig, runtime: Runtime, pad_id: int) -> float | None:
    """Mean answer-token cross-entropy on the held-out slice (None when there is none)."""
    import torch

    if not data.eval:
        return None
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast(runtime.device.split(":")[0], dtype=torch.bfloat16, enabled=runtime.bf16):
        for batch in eval_batches(data.eval, micro_batch_size=config.micro_batch_size, pad_id=pad_id):
            total += float(answer_loss_sum(model, batch, runtime.device))
            count += batch["label_tokens"]
    model.train()
    return total / max(count, 1)


def fit(
    model: Any,
    data: InstructionData,
    config: TrainConfig,
    runtime: Runtime,
    *,
    pad_id: int,
    run_dir: Path | None = None,
    identity: dict[str, Any] | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    show_progress: bool = True,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """The training loop. ``stop_after`` trains at most that many steps in this call, then checkpoints;
    ``on_step`` is called with each step's record (benchmarks time steps with it)."""
    import torch

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    batches = _Batches(data, config, pad_id)
    accum = config.grad_accum_steps
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * len(batches.epoch(0)) / accum))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay,
                                  fused=runtime.fused_optimizer or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, total_steps))
    step, tokens_seen, train_seconds, curve = 0, 0, 0.0, []
    checkpoint = latest_checkpoint(run_dir) if (resume and run_dir) else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer, scheduler, identity or {})
        step, tokens_seen, train_seconds, curve = (state["step"], state["tokens_seen"], state["train_seconds"],
                                                   state["learning_curve"])
    elif data.eval:
        curve.append({"step": 0, "eval_loss": evaluate(model, data, config, runtime, pad_id)})
    model.train()
    autocast = torch.autocast(runtime.device.split(":")[0], dtype=torch.bfloat16, enabled=runtime.bf16)
    end = total_steps if stop_after is None else min(total_steps, step + stop_after)
    bar = _Progress(total_steps, step, enabled=show_progress)
    window_tokens, window_start = 0, time.perf_counter()
    try:
        while step < end:
            started = time.perf_counter()
            micro = [batches.at(step * accum + i) for i in range(accum)]
            n_items = sum(b["label_tokens"] for _, b in micro)
            losses = []
            for _, batch in micro:
                with autocast:
                    loss = answer_loss_sum(model, batch, runtime.device) / n_items
                loss.backward()
                losses.append(loss.detach())
            norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            loss_sum, grad_norm = torch.stack([torch.stack(losses).sum(), norm.float()]).tolist()  # one sync
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            real = sum(b["real_tokens"] for _, b in micro)
            tokens_seen += real
            window_tokens += real
            train_seconds += time.perf_counter() - started
            point: dict[str, Any] = {"step": step, "epoch": micro[-1][0], "train_loss": loss_sum,
                                     "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                                     "tokens_seen": tokens_seen}
            if step % config.eval_every == 0 or step == total_steps:
                point["eval_loss"] = evaluate(model, data, config, runtime, pad_id)
            if step % config.log_every == 0 or "eval_loss" in point:
                curve.append(point)
            elapsed = time.perf_counter() - window_start
            bar.update(step, loss_sum, window_tokens / elapsed if elapsed > 0 else 0.0, point.get("eval_loss"))
            if on_step is not None:
                on_step(point)
            if run_dir is not None and (step % config.save_every == 0 or step == end):
                save_checkpoint(run_dir, step, model, optimizer, scheduler, {
                    "step": step, "tokens_seen": tokens_seen, "train_seconds": train_seconds,
                    "learning_curve": curve, "identity": identity or {}, "total_steps": total_steps,
                }, config.keep_checkpoints)
    finally:
        bar.close()
    evals = [p["eval_loss"] for p in curve if p.get("eval_loss") is not None]
    metrics = {
        "steps": step,
        "total_steps": total_steps,
        "tokens_seen": tokens_seen,
        "train_seconds": round(train_seconds, 3),
        "tokens_per_s": round(tokens_seen / train_seconds, 1) if train_seconds else None,
        "final_train_loss": next((p["train_loss"] for p in reversed(curve) if "train_loss" in p), None),
        "initial_eval_loss": evals[0] if evals else None,
        "final_eval_loss": evals[-1] if evals else None,
        "learning_curve": curve,
    }
    return FitResult(steps=step, learning_curve=curve, metrics=metrics, stopped_early=step < total_steps)


class _Progress:
    """A progress bar on stderr with loss and tokens/s (rich), or nothing."""

    def __init__(self, total: int, done: int, *, enabled: bool):
        self._bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}  eval {task.fields[eval]}  "
                                            "{task.fields[tps]} tok/s"),
                                 TimeElapsedColumn(), console=Console(stderr=True))
            self._task = self._bar.add_task("train", total=total, completed=done, loss="-", eval="-", tps="-")
            self._bar.start()

    def update(self, step: int, loss: float, tokens_per_s: float, eval_loss: float | None) -> None:
        if self._bar is not None:
            fields = {"loss": f"{loss:.4f}", "tps": f"{tokens_per_s:,.0f}"}
            if eval_loss is not None:
                fields["eval"] = f"{eval_loss:.4f}"
            self._bar.update(self._task, completed=step, **fields)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


@contextmanager
def _cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` for the block (restored after)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_dataset(settings: Settings, dataset: Any) -> InstructionSource:
    """A JSONL/JSON file, a pyarrow Table, a list of rows, or the name of a frozen TrainingDataset."""
    if isinstance(dataset, str) and not Path(dataset).exists() and not dataset.endswith((".json", ".jsonl")):
        from pipelines.instruction_dataset import training_dataset_rows

        rows, lineage = training_dataset_rows(settings, dataset)
        return InstructionSource(rows, f"training_dataset:{dataset}", lineage)
    return read_source(dataset)


@dataclass
class TrainResult:
    run_dir: Path
    adapter_dir: Path
    tokenizer: PinnedTokenizer
    data: InstructionData
    config: TrainConfig
    runtime: Runtime
    metrics: dict[str, Any]
    finished: bool
    model: Any = None


@traced("train.run")
def train(
    settings: Settings,
    *,
    base: str,
    dataset: Any,
    config: TrainConfig,
    tokenizer: str | None = None,
    eval_dataset: Any = None,
    run_dir: Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Fine-tune ``base`` on ``dataset`` (JSONL/JSON path, pyarrow Table or rows) and write the run folder."""
    runtime = resolve_runtime(config)
    pinned = load_tokenizer(tokenizer or base, chat_template=config.chat_template)
    with span("train.prepare", tokenizer=pinned.fingerprint) as step:
        data = prepare(resolve_dataset(settings, dataset), pinned, max_length=config.max_length,
                       eval_fraction=config.eval_fraction, max_eval_examples=config.max_eval_examples,
                       eval_source=resolve_dataset(settings, eval_dataset) if eval_dataset is not None else None)
        step.set(dataset_id=data.dataset_id)
    if run_dir is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        run_dir = Path(settings.data_dir) / "train_runs" / f"{settings.registry.model_name}-{stamp}"
    run_dir = Path(run_dir)
    if not resume and latest_checkpoint(run_dir) is not None:
        raise InvalidInputError(f"{run_dir} already holds checkpoints", expected="a new run folder, or --resume",
                                fix="pass --resume to continue it, or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    identity = {"base": str(base), "dataset_id": data.dataset_id, "tokenizer": pinned.fingerprint,
                "config": config.identity()}
    (run_dir / "train_config.json").write_text(json.dumps(
        {"base": str(base), "dataset_id": data.dataset_id, "config": config.model_dump(),
         "runtime": runtime.__dict__, "data": data.summary()}, indent=1), encoding="utf-8")
    with open(run_dir / "quarantine.jsonl", "w", encoding="utf-8") as out:
        out.writelines(json.dumps(q) + "\n" for q in data.quarantined)
    with _cpu_threads(config.cpu_threads if runtime.device == "cpu" else None):
        with span("train.load_model", base=str(base), device=runtime.device):
            model = load_lora_model(base, pinned, config, runtime)
        with span("train.fit", resume=resume) as step:
            result = fit(model, data, config, runtime, pad_id=pinned.pad_token_id, run_dir=run_dir,
                         identity=identity, resume=resume, stop_after=stop_after, show_progress=show_progress)
            step.set(stopped_early=result.stopped_early)
    metrics = {**result.metrics, **{f"data_{k}": v for k, v in data.summary().items()},
               "device": runtime.device, "bf16": runtime.bf16}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    adapter_dir = run_dir / "adapter"
    if not result.stopped_early:
        model.save_pretrained(str(adapter_dir))
        pinned.save(run_dir / "tokenizer")
    return TrainResult(run_dir=run_dir, adapter_dir=adapter_dir, tokenizer=pinned, data=data, config=config,
                       runtime=runtime, metrics=metrics, finished=not result.stopped_early, model=model)


def index_coupling(settings: Settings, index_name: str | None, index_version: int | None
                   ) -> tuple[str | None, int | None, str | None]:
    """(index name, version, embedder) the model version is coupled to: explicit, else the current index."""
    from llmfti.index import VectorIndex

    name = index_name or settings.index.name
    if not VectorIndex.exists(settings, name):
        if index_name is not None or index_version is not None:
            raise NotFoundError(f"index {name!r} does not exist under {settings.data_dir}",
                                fix=f"build it first: llmfti index build PATH --index {name}")
        return None, None, None
    index = VectorIndex.open(settings, name)
    version = index.version if index_version is None else index.resolve_version(index_version)
    return name, version, index.info.get("name")


@traced("train.register")
def register_run(
    settings: Settings,
    result: TrainResult,
    *,
    base: str,
    model_name: str | None = None,
    coupled: tuple[str | None, int | None, str | None] = (None, None, None),
) -> Any:
    """Record a finished run as a new ModelVersion (adapter + pinned tokenizer + lineage + index coupling)."""
    from llmfti.registry import ModelRegistry

    if not result.finished:
        raise InvalidInputError(f"run {result.run_dir} stopped before its last step",
                                expected="a finished run", fix="resume it with --resume, then register")
    return ModelRegistry(settings, model_name).register(
        adapter_dir=result.adapter_dir,
        tokenizer=result.tokenizer,
        base_model=str(Path(base).resolve()) if Path(base).exists() else str(base),
        base_model_revision=base_model_revision(str(base)),
        training_dataset_id=result.data.dataset_id,
        data_versions=result.data.data_versions,
        index_name=coupled[0],
        index_version=coupled[1],
        embedder=coupled[2],
        hyperparameters={**result.config.model_dump(), "runtime": result.runtime.__dict__},
        metrics=result.metrics,
        extra_files={"train_config.json": result.run_dir / "train_config.json",
                     "metrics.json": result.run_dir / "metrics.json"},
    )


def train_and_register(
    settings: Settings,
    *,
    base: str,
    dataset: Any,
    config: TrainConfig,
    model_name: str | None = None,
    index_name: str | None = None,
    index_version: int | None = None,
    **train_kwargs: Any,
) -> dict[str, Any]:
    """Train, then register the adapter + pinned tokenizer + lineage as a new model version."""
    # resolve the index first: a wrong --index fails before hours of training, not after
    coupled = index_coupling(settings, index_name, index_version)
    result = train(settings, base=base, dataset=dataset, config=config, **train_kwargs)
    summary: dict[str, Any] = {"run_dir": str(result.run_dir), "finished": result.finished,
                               "metrics": {k: v for k, v in result.metrics.items() if k != "learning_curve"},
                               "learning_curve": result.metrics["learning_curve"],
                               "tokenizer_fingerprint": result.tokenizer.fingerprint, "model_version": None}
    if result.finished:
        mv = register_run(settings, result, base=base, model_name=model_name, coupled=coupled)
        summary["model_version"] = mv.to_dict()
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.train --base PATH --dataset rows.jsonl [--config NAME] [--no-register]``."""
    import argparse

    from llmfti.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--no-register", action="store_true")
    args = parser.parse_args(argv)
    settings = load_settings()
    config = load_train_config(args.config)
    if args.no_register:
        result = train(settings, base=args.base, dataset=args.dataset, config=config, run_dir=args.out,
                       resume=args.resume)
        print(json.dumps({k: v for k, v in result.metrics.items() if k != "learning_curve"}))
    else:
        summary = train_and_register(settings, base=args.base, dataset=args.dataset, config=config,
                                     run_dir=args.out, resume=args.resume)
        print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
