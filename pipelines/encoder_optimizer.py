"""The optimizer loop the encoder fine-tunings share (full fine-tuning, the query tower), and the loss record of
every embedder training run (the adapter's too): AdamW, linear warmup then linear decay to zero, gradients
clipped at norm 1, one rounded loss per step."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class EncoderOptimizer:
    """``step(loss)``: backward, clip, AdamW step, schedule step, zero the gradients; the loss joins ``curve``."""

    def __init__(self, params: Iterable[Any], *, steps: int, learning_rate: float, weight_decay: float,
                 warmup_ratio: float):
        import torch

        self.params = list(params)
        self.optimizer = torch.optim.AdamW(self.params, lr=learning_rate, weight_decay=weight_decay)
        warmup = max(1, int(steps * warmup_ratio))
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
        self.curve: list[float] = []

    def step(self, loss: Any) -> float:
        import torch

        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad()
        self.curve.append(round(float(loss.detach()), 4))
        return self.curve[-1]


def loss_summary(curve: list[float]) -> dict[str, Any]:
    """Steps, first loss, final loss (mean of the last 5) and the curve, thinned to at most ~200 points."""
    return {"steps": len(curve), "first_loss": curve[0], "final_loss": round(sum(curve[-5:]) / len(curve[-5:]), 4),
            "loss_curve": curve if len(curve) <= 200 else curve[:: -(-len(curve) // 200)]}
