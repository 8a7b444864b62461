"""AdamW and the learning-rate schedules: linear warmup then cosine, or warmup-stable-decay."""

from __future__ import annotations

import math

import torch
from torch import nn

from hcx.train.config import OptimConfig


def build_optimizer(models: list[nn.Module], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; matrices decay, norms and other vectors do not.

    The fused kernel (CPU and GPU, plain and DTensor parameters) updates every tensor in one
    pass; the ``foreach`` loop made several vector passes per tensor and was a tenth of a small
    model's pretraining step on the CPU, more in PPO, which steps twice the parameters per token.
    """
    params = [p for m in models for p in m.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=True)


def lr_multiplier(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of ``cfg.lr`` at ``step`` (0-based)."""
    warmup = min(cfg.warmup_steps, total_steps)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    decay_start = total_steps - round(cfg.decay_fraction * total_steps)
    if step < max(decay_start, warmup):
        return 1.0
    progress = (step - decay_start) / max(1, total_steps - decay_start)
    return 1.0 - (1 - cfg.min_lr_ratio) * min(1.0, progress)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, cfg: OptimConfig):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, total_steps, cfg))
