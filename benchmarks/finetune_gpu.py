"""LoRA fine-tuning throughput: llmfti's training loop vs a plain ``transformers.Trainer`` + peft baseline.

Both runs fine-tune the same random-init Llama-architecture model (about 1.1 B parameters by default,
TinyLlama's shape; no weights are downloaded) with the same LoRA config on the same synthetic
instruction examples (random token ids; prompt and answer lengths drawn per example, loss on the
answer only), in the same process, one after the other.

* llmfti: ``pipelines.train.fit``: packed rows (block-diagonal attention), output head on answer
  positions only, bf16 weights + autocast, fused AdamW.
* baseline: ``Trainer`` with ``bf16=True`` on the same bf16 model, one example per row padded to the
  longest in its batch (what ``DataCollatorForSeq2Seq`` does), default optimizer. Its batch size is
  chosen so that a micro-batch holds about as many real tokens as one of llmfti's.

Reported per run: real (non-padding) tokens/s over the timed steps (after warm-up steps), and MFU =
achieved model FLOP/s / peak. Model FLOPs per real token for LoRA on a frozen base:
``4 * N + 12 * L * d * T`` (forward 2N + activation gradients 2N, no weight gradients for the frozen
base; attention term as in PaLM with T = mean example length). N counts every matmul weight including
the output head; llmfti skips the head on prompt tokens, so part of its speed-up is work it does not
do, which this standard formula still credits. Gradient-checkpointing recomputation is not credited.

    python benchmarks/finetune_gpu.py                 # the real run (GPU)
    python benchmarks/finetune_gpu.py --tiny          # seconds on CPU, for tests and smoke checks

Prints a table and writes ``benchmarks/results/finetune_gpu[-tiny].json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}

SHAPES = {
    "1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
           "num_key_value_heads": 4, "vocab_size": 32000},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 512},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="LoRA fine-tuning throughput: llmfti vs Trainer + peft.")
    p.add_argument("--tiny", action="store_true", help="Tiny model and sizes: runs in seconds on CPU.")
    p.add_argument("--steps", type=int, default=None, help="Timed optimizer steps per run.")
    p.add_argument("--warmup-steps", type=int, default=None, help="Untimed optimizer steps first.")
    p.add_argument("--max-length", type=int, default=None, help="Row length (llmfti packs up to this).")
    p.add_argument("--micro-batch", type=int, default=None, help="llmfti rows per micro-batch.")
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--baseline-batch", type=int, default=None,
                   help="Trainer examples per micro-batch (default: same real tokens as llmfti's).")
    p.add_argument("--examples", type=int, default=None, help="Synthetic examples in the dataset.")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--gradient-checkpointing", action="store_true", help="For both runs.")
    p.add_argument("--peak-tflops", type=float, default=None, help="Peak bf16 TFLOP/s (default: by GPU name).")
    p.add_argument("--only", choices=["llmfti", "baseline"], default=None, help="Run just one side.")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    tiny = args.tiny
    defaults = {"steps": 4 if tiny else 30, "warmup_steps": 1 if tiny else 5, "max_length": 128 if tiny else 2048,
                "micro_batch": 2 if tiny else 4, "examples": 256 if tiny else 4096}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = REPO / "benchmarks" / "results" / f"finetune_gpu{'-tiny' if tiny else ''}.json"
    return args


def synthetic_examples(n: int, max_length: int, vocab: int, seed: int) -> list[Any]:
    """Instruction-shaped examples: prompt 1/16..3/4 of max_length, answer 1/128..1/8 (loss on answer only)."""
    from llmfti.llm.tokenization import IGNORE_INDEX, EncodedExample

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = rng.randint(max(2, max_length // 16), max_length * 3 // 4)
        answer = rng.randint(max(2, max_length // 128), max(3, max_length // 8))
        ids = [rng.randrange(4, vocab) for _ in range(prompt + answer)]
        out.append(EncodedExample(input_ids=ids, labels=[IGNORE_INDEX] * prompt + ids[prompt:],
                                  prompt_tokens=prompt, truncated=False))
    return out


def build_model(shape: dict[str, int], device: str, bf16: bool, seed: int, max_length: int) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    config = LlamaConfig(**shape, max_position_embeddings=max(max_length, 128), tie_word_embeddings=False,
                         attn_implementation="sdpa")
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if bf16 else torch.float32)
    model.config.use_cache = False
    return model


def matmul_params(model: Any) -> int:
    """Weights that take part in matmuls: everything but the input embedding (and norms)."""
    emb = model.get_input_embeddings().weight
    return sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and p is not emb and "lora_" not in n)


def flops_per_token(n_matmul: int, shape: dict[str, int], mean_len: float) -> float:
    return 4 * n_matmul + 12 * shape["num_hidden_layers"] * shape["hidden_size"] * mean_len


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_llmfti(args: argparse.Namespace, shape: dict, examples: list, device: str, bf16: bool) -> dict[str, Any]:
    from pipelines.instruction_batches import InstructionData
    from pipelines.train import Runtime, add_lora, fit, load_train_config

    config = load_train_config(
        None, lora_r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, learning_rate=2e-4,
        warmup_steps=0, lr_schedule="constant", max_steps=args.warmup_steps + args.steps,
        micro_batch_size=args.micro_batch, grad_accum_steps=args.grad_accum, max_length=args.max_length,
        packing=True, eval_fraction=0.0, seed=0, eval_every=10**9, save_every=10**9)
    runtime = Runtime(device=device, bf16=bf16, gradient_checkpointing=args.gradient_checkpointing,
                      fused_optimizer=device.startswith("cuda"))
    model = add_lora(build_model(shape, device, bf16, 0, args.max_length), config, runtime)
    n_matmul = matmul_params(model.get_base_model())
    data = InstructionData(train=examples, eval=[], dataset_id="synthetic", data_versions={})
    marks: dict[int, tuple[float, int]] = {}

    def on_step(point: dict[str, Any]) -> None:
        _sync(device)
        marks[point["step"]] = (time.perf_counter(), point["tokens_seen"])

    fit(model, data, config, runtime, pad_id=0, show_progress=False, on_step=on_step)
    (t0, k0), (t1, k1) = marks[args.warmup_steps], marks[args.warmup_steps + args.steps]
    name = "llmfti (packed, head on answers" + (", fused AdamW)" if runtime.fused_optimizer else ")")
    result = _result(name, k1 - k0, t1 - t0, n_matmul)
    del model
    _free(device)
    return result


class PadCollator:
    """One example per row, padded to the longest in the batch (as DataCollatorForSeq2Seq does)."""

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def run_baseline(args: argparse.Namespace, shape: dict, examples: list, device: str, bf16: bool,
                 batch: int) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model = build_model(shape, device, bf16, 0, args.max_length)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    n_matmul = matmul_params(model.get_base_model())
    seen = {"tokens": 0}

    def count(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        mask = kwargs.get("attention_mask")
        if mask is not None and torch.is_grad_enabled():
            seen["tokens"] += int(mask.sum())

    model.register_forward_pre_hook(count, with_kwargs=True)
    marks: dict[int, tuple[float, int]] = {}

    class Timer(TrainerCallback):
        def on_step_end(self, _args: Any, state: Any, _control: Any, **_: Any) -> None:
            _sync(device)
            marks[state.global_step] = (time.perf_counter(), seen["tokens"])

    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=batch, gradient_accumulation_steps=args.grad_accum,
            max_steps=args.warmup_steps + args.steps, learning_rate=2e-4, lr_scheduler_type="constant",
            bf16=bf16, use_cpu=not device.startswith("cuda"), logging_steps=10**9, save_strategy="no",
            report_to=[], remove_unused_columns=False, seed=0, dataloader_num_workers=0,
            gradient_checkpointing=args.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if args.gradient_checkpointing else None,
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=rows, data_collator=PadCollator(),
                          callbacks=[Timer()])
        trainer.train()
    (t0, k0), (t1, k1) = marks[args.warmup_steps], marks[args.warmup_steps + args.steps]
    result = _result(f"Trainer + peft (padded, batch {batch})", k1 - k0, t1 - t0, n_matmul)
    del trainer, model
    _free(device)
    return result


def _result(name: str, tokens: int, seconds: float, n_matmul: int) -> dict[str, Any]:
    return {"run": name, "real_tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds, 1), "matmul_params": n_matmul}


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    args = parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not args.tiny and device == "cpu":
        print("no GPU: the 1B run needs CUDA; use --tiny on CPU", file=sys.stderr)
        raise SystemExit(2)
    threads_before = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)  # tiny matrices: threads only add contention (both runs alike)
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    shape = SHAPES["tiny" if args.tiny else "1b"]
    examples = synthetic_examples(args.examples, args.max_length, shape["vocab_size"], seed=0)
    mean_len = sum(len(e.input_ids) for e in examples) / len(examples)
    batch = args.baseline_batch or max(1, round(args.micro_batch * args.max_length / mean_len))
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if gpu and k in gpu), None)

    runs = []
    if args.only in (None, "llmfti"):
        runs.append(run_llmfti(args, shape, examples, device, bf16))
    if args.only in (None, "baseline"):
        runs.append(run_baseline(args, shape, examples, device, bf16, batch))
    for run in runs:
        fpt = flops_per_token(run["matmul_params"], shape, mean_len)
        run["model_flops_per_token"] = fpt
        run["model_tflops_per_s"] = run["tokens_per_s"] * fpt / 1e12
        run["mfu"] = round(run["model_tflops_per_s"] / peak, 4) if peak else None
    speedup = runs[0]["tokens_per_s"] / runs[1]["tokens_per_s"] if len(runs) == 2 else None
    from benchmarks import reporting

    report = {
        "benchmark": "finetune_gpu", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": reporting.machine(), "git": reporting.git_commit(), "tiny": args.tiny,
        "device": gpu or platform.processor() or "cpu",
        "bf16": bf16, "torch": torch.__version__, "shape": shape, "mean_example_tokens": round(mean_len, 1),
        "max_length": args.max_length, "micro_batch": args.micro_batch, "grad_accum": args.grad_accum,
        "baseline_batch": batch, "timed_steps": args.steps, "warmup_steps": args.warmup_steps,
        "gradient_checkpointing": args.gradient_checkpointing, "peak_tflops": peak, "runs": runs,
        "speedup_vs_baseline": round(speedup, 3) if speedup else None,
    }
    print(f"\nLoRA r={args.lora_r} fine-tune, {report['device']}, bf16={bf16}, "
          f"{runs[0]['matmul_params'] / 1e6:.1f} M matmul params (+ embeddings), "
          f"mean example {mean_len:.0f} tokens, rows of {args.max_length}")
    print(f"{'run':48} {'tokens/s':>12} {'TFLOP/s':>9} {'MFU':>7}")
    for run in runs:
        mfu = "-" if run["mfu"] is None else f"{100 * run['mfu']:.1f}%"
        print(f"{run['run']:48} {run['tokens_per_s']:>12,.0f} {run['model_tflops_per_s']:>9.3g} {mfu:>7}")
    if speedup:
        print(f"speed-up vs baseline: {speedup:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    torch.set_num_threads(threads_before)
    return report


if __name__ == "__main__":
    main()
