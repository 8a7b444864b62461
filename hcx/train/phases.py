"""Staged training: which parameters learn in which share of the steps (continued pretraining).

After a vocabulary extension, EEVE-Korean (arXiv 2402.14714) first trains only the new
tokens' embeddings, so that the base model's knowledge is not disturbed while they are still
noise, then everything. A phase freezes a parameter by dropping its gradient before the
optimizer step rather than by ``requires_grad``: every sharding (FSDP2, tensor and pipeline
parallel) then sees the same parameters in every phase, and AdamW skips a parameter without
a gradient entirely (no update, no weight decay). The backward still computes the dropped
gradients; on a model this size that is the price of one code path for every layout.

``new_embeddings`` keeps only the rows of the new tokens: the other rows' gradients are
zeroed, so their Adam moments stay zero and their update is exactly zero when the phase
comes first (as in EEVE), and weight decay is off for those matrices during the phase
(decoupled decay would shrink the frozen rows).
"""

from __future__ import annotations

from fnmatch import fnmatch

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, distribute_tensor

from hcx.model.transformer import canonical_name
from hcx.train.config import TrainPhase

EMBEDDINGS = ("tok_embeddings.weight", "output.weight")
NAMED = {"embeddings", "new_embeddings"}


def check_phases(phases: list[TrainPhase], names: list[str], first_new_row: int | None) -> None:
    """Refuse a pattern that matches no parameter, or ``new_embeddings`` with no new tokens."""
    for i, phase in enumerate(phases):
        for pattern in phase.train:
            if pattern == "new_embeddings" and first_new_row is None:
                raise ValueError(
                    f"pretrain.phases[{i}].train: new_embeddings needs init_from and a tokenizer with "
                    "more tokens than the base model's (hcx tokenizer extend)"
                )
            if pattern not in NAMED and not any(fnmatch(n, pattern) for n in names):
                raise ValueError(f"pretrain.phases[{i}].train: {pattern!r} matches no parameter")


def prime_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Give every parameter its (zero) optimizer state now, exactly as a fresh one would have.

    A parameter frozen in the first phase gets no state until it learns, and a checkpoint
    saved before then could not be resumed (the loader expects every parameter's state).
    A zero-gradient step at learning rate 0 creates the state without moving anything; the
    step count is then reset so the first real update is AdamW's first step.
    """
    fresh = [p for group in optimizer.param_groups for p in group["params"] if p not in optimizer.state]
    if not fresh:
        return
    saved = [p.grad for group in optimizer.param_groups for p in group["params"]]
    for group in optimizer.param_groups:
        for param in group["params"]:
            param.grad = None
    for param in fresh:
        param.grad = torch.zeros_like(param)
    rates = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    optimizer.step()
    for group, rate in zip(optimizer.param_groups, rates, strict=True):
        group["lr"] = rate
    for param in fresh:
        optimizer.state[param]["step"].zero_()
    grads = iter(saved)
    for group in optimizer.param_groups:
        for param in group["params"]:
            param.grad = next(grads)


class PhaseGradients:
    """Drops or masks the gradients of what the current phase freezes (see the module docstring)."""

    def __init__(self, module: nn.Module, first_new_row: int | None):
        self.params = [(canonical_name(n), p) for n, p in module.named_parameters()]
        self.first_new_row = first_new_row
        self.frozen: list[nn.Parameter] = []
        self.masked: list[tuple[nn.Parameter, Tensor]] = []

    def enter(self, phase: TrainPhase, optimizer: torch.optim.Optimizer) -> None:
        patterns = set(phase.train)
        self.frozen, self.masked = [], []
        for name, param in self.params:
            whole = name in EMBEDDINGS and "embeddings" in patterns
            if whole or any(fnmatch(name, p) for p in patterns - NAMED):
                continue
            if name in EMBEDDINGS and "new_embeddings" in patterns:
                self.masked.append((param, self._new_rows(param)))
            else:
                self.frozen.append(param)
        if self.frozen or self.masked:
            prime_optimizer_state(optimizer)
        masked_ids = {id(p) for p, _ in self.masked}
        for group in optimizer.param_groups:
            decay = group.setdefault("configured_weight_decay", group["weight_decay"])
            group["weight_decay"] = 0.0 if any(id(p) in masked_ids for p in group["params"]) else decay

    def _new_rows(self, param: nn.Parameter) -> Tensor:
        rows = torch.arange(param.shape[0], device=param.device) >= self.first_new_row
        mask = rows[:, None].expand(param.shape).to(param.dtype)
        if isinstance(param, DTensor):
            return distribute_tensor(mask, param.device_mesh, param.placements)
        return mask

    def apply(self) -> None:
        for param in self.frozen:
            param.grad = None
        for param, mask in self.masked:
            if param.grad is not None:
                param.grad.mul_(mask)
