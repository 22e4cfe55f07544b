"""The training configuration (YAML in configs/train/ over documented defaults) and the runtime
(device, precision, checkpointing, optimizer) it resolves to on this machine."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmfti.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "train"
# Fields that change what is trained; a resumed run must agree on all of them.
_RUN_IDENTITY_EXCLUDES = {"eval_every", "save_every", "keep_checkpoints", "log_every", "cpu_threads"}


class TrainConfig(BaseModel):
    """Hyper-parameters of one fine-tuning run. YAML files in configs/train/ override these defaults."""

    model_config = ConfigDict(extra="forbid")

    # LoRA
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear' (every linear layer but the head)."
    )
    # optimisation
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0, description="Linear warm-up, in optimizer steps.")
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate / peak (cosine, linear).")
    max_grad_norm: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; unset: derived from epochs.")
    epochs: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(4, ge=1, description="Rows per forward pass (a row may hold packed examples).")
    grad_accum_steps: int = Field(4, ge=1, description="Micro-batches per optimizer step.")
    # data
    max_length: int = Field(1024, ge=16, description="Tokens per row (and the longest example kept).")
    packing: bool = Field(True, description="Pack several examples per row (attention stays per example); "
                          "false: one example per row, length-bucketed.")
    eval_fraction: float = Field(0.05, ge=0, lt=1, description="Held-out share of rows (split by content).")
    max_eval_examples: int = Field(256, ge=0)
    # runtime
    seed: int = 0
    device: str = Field("auto", description="auto: cuda if available, else cpu.")
    cpu_threads: int | None = Field(
        None, ge=1, description="CPU runs: torch intra-op threads for this process (torch.set_num_threads). "
        "1 is fastest for tiny models, and on a shared machine where spinning threads contend. Unset: torch's default.")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 on a GPU that has it.")
    gradient_checkpointing: bool | None = Field(None, description="Unset: on for GPU runs.")
    fused_optimizer: bool | None = Field(None, description="Fused AdamW; unset: on for GPU runs.")
    eval_every: int = Field(50, ge=1, description="Held-out loss every N optimizer steps (and at the end).")
    save_every: int = Field(100, ge=1, description="Checkpoint every N optimizer steps (and at the end).")
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(1, ge=1)
    chat_template: str | None = Field(None, description="Jinja template or .jinja path replacing the tokenizer's.")

    def identity(self) -> str:
        data = self.model_dump(exclude=_RUN_IDENTITY_EXCLUDES | {"max_steps", "epochs"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_train_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """A TrainConfig from a YAML file (a path, or a name in configs/train/) plus overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file() and (CONFIG_DIR / f"{path}.yaml").is_file():
            file = CONFIG_DIR / f"{path}.yaml"
        if not file.is_file():
            known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
            raise ConfigError(f"training config {str(path)!r} not found", expected=f"a YAML path or one of {known}",
                              fix="pass --config configs/train/<name>.yaml")
        loaded = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file} must hold a mapping", fix="write 'key: value' lines")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
                             for e in exc.errors())
        raise ConfigError(f"invalid training config: {problems}",
                          fix="correct the YAML or flag; fields are documented in pipelines/train_config.py") from exc


@dataclass
class Runtime:
    device: str
    bf16: bool
    gradient_checkpointing: bool
    fused_optimizer: bool


def resolve_runtime(config: TrainConfig) -> Runtime:
    import torch

    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available", fix="set device: cpu")
    bf16 = config.precision == "bf16" or (config.precision == "auto" and cuda and torch.cuda.is_bf16_supported())
    ckpt = cuda if config.gradient_checkpointing is None else config.gradient_checkpointing
    fused = cuda if config.fused_optimizer is None else config.fused_optimizer
    return Runtime(device=device, bf16=bf16, gradient_checkpointing=ckpt, fused_optimizer=fused)
