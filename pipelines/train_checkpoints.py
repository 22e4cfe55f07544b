"""Training checkpoints: trainable weights, optimizer, scheduler, RNG states and loop state, written
atomically (a temporary folder renamed into place) so a crash never leaves a half checkpoint."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

from llmfti.errors import InvalidInputError


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, model: Any, optimizer: Any, scheduler: Any,
                     state: dict[str, Any], keep: int) -> Path:
    import torch
    from safetensors.torch import save_file

    root = run_dir / "checkpoints"
    tmp = root / f".step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, str(tmp / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(_rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
    final = root / f"step-{step:07d}"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    done = [p for p in sorted((run_dir / "checkpoints").glob("step-*")) if (p / "state.json").is_file()]
    return done[-1] if done else None


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any, expected: dict[str, Any]
                     ) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    for key, value in expected.items():
        if state["identity"].get(key) != value:
            raise InvalidInputError(
                f"checkpoint {path} was made with {key}={state['identity'].get(key)!r}, this run has {value!r}",
                expected="the same base model, dataset, tokenizer and training config as the interrupted run",
                fix="resume with the original settings, or start a new run folder")
    weights = load_file(str(path / "trainable.safetensors"))
    missing = set(weights) ^ {n for n, p in model.named_parameters() if p.requires_grad}
    if missing:
        raise InvalidInputError(f"checkpoint {path} does not match the model's adapters ({sorted(missing)[:3]}...)",
                                fix="resume with the original LoRA settings")
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    _set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return state
