"""The training loop shared by the alignment stages (SFT, reward model; SPEC §5).

A :class:`Trainer` owns what every stage does the same way: the device mesh and the sharded
model (:mod:`hcx.train.parallel`), AdamW with its schedule, DCP checkpoints with exact resume
and "checkpoint saved" events (:mod:`hcx.train.checkpoint`), the step loop with gradient
clipping, and the JSONL log with a progress bar. A stage subclasses it and supplies its
batches (:meth:`next_batch`, with a resumable :meth:`data_state`) and its loss
(:meth:`compute_loss`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import Field
from torch import Tensor, nn

from hcx.config import Section
from hcx.model import Transformer
from hcx.train.checkpoint import Checkpointer, CheckpointSaved
from hcx.train.config import CheckpointConfig, OptimConfig, ParallelConfig
from hcx.train.metrics import MetricsLog
from hcx.train.optim import build_optimizer, build_scheduler
from hcx.train.parallel import MeshError, build_mesh, clip_grad_norm, init_distributed, parallelize


class LoopConfig(Section):
    """Knobs every training stage shares; a stage's config embeds these fields."""

    output_dir: str = "runs/stage"
    steps: int | None = Field(default=None, description="optimizer steps; None = the stage's epochs")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    dtype: Literal["bfloat16", "float32"] = "bfloat16"
    activation_checkpointing: bool = False
    seed: int = 0
    log_every: int = 10
    resume: bool = True


@dataclass
class TrainResult:
    step: int
    tokens_seen: int
    losses: list[float]
    output_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def full_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """Unsharded weights gathered to CPU (every rank must call it; exports keep rank 0's)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


class Trainer:
    """Subclasses call :meth:`shard` on their model, then :meth:`attach` with the module to train."""

    stage = "train"

    def __init__(self, cfg: LoopConfig, on_checkpoint: Callable[[CheckpointSaved], None] | None = None):
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.mesh = build_mesh(cfg.parallel, init_distributed())
        if self.mesh.pp > 1:
            raise MeshError(f"{self.stage}.parallel.pp must be 1: pipeline parallelism is for pretraining")
        if is_rank0():
            self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        self.on_checkpoint = on_checkpoint
        self.step, self.tokens_seen, self.losses = 0, 0, []

    # --- wiring ----------------------------------------------------------------------------
    def shard(self, model: Transformer) -> Transformer:
        bf16 = self.cfg.dtype == "bfloat16"
        return parallelize(
            model,
            self.mesh,
            param_dtype=torch.bfloat16 if bf16 else None,
            activation_checkpointing=self.cfg.activation_checkpointing,
        )

    def attach(self, module: nn.Module, total_steps: int, meta: dict[str, Any]) -> None:
        self.module = module
        self.total_steps = total_steps
        self.optimizer = build_optimizer([module], self.cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, total_steps, self.cfg.optim)
        meta = {**meta, "stage": self.stage, "mesh": {"dp": self.mesh.dp, "tp": self.mesh.tp}}
        self.checkpointer = Checkpointer(
            self.out, meta, self.cfg.checkpoint.keep, self.cfg.checkpoint.async_save, self.on_checkpoint
        )

    # --- what a stage supplies -------------------------------------------------------------
    def next_batch(self) -> Any:
        raise NotImplementedError

    def compute_loss(self, batch: Any) -> tuple[Tensor, int]:
        """Loss of this rank's batch and the number of tokens it trained on."""
        raise NotImplementedError

    def data_state(self) -> dict[str, Any]:
        return {}

    def load_data_state(self, state: dict[str, Any]) -> None:
        pass

    def after_step(self, log: MetricsLog) -> None:
        """Hook for periodic evaluation; the default does nothing."""

    # --- state -----------------------------------------------------------------------------
    def _train_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "losses": list(self.losses),
            "scheduler": self.scheduler.state_dict(),
            "data": self.data_state(),
            "rng": torch.get_rng_state().numpy().tobytes(),
        }

    def resume(self) -> bool:
        state = self.checkpointer.load(self.module, self.optimizer, self._train_state())
        if state is None:
            return False
        self.step, self.tokens_seen = int(state["step"]), int(state["tokens_seen"])
        self.losses = list(state["losses"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.load_data_state(state["data"])
        torch.set_rng_state(torch.from_numpy(np.frombuffer(state["rng"], dtype=np.uint8).copy()))
        return True

    def save(self) -> None:
        event = CheckpointSaved(
            path=f"step_{self.step:07d}",
            step=self.step,
            tokens_seen=self.tokens_seen,
            time=time.time(),
            stage=self.stage,
            loss=self.losses[-1] if self.losses else None,
        )
        self.checkpointer.save(self.module, self.optimizer, self._train_state(), event)

    # --- the loop --------------------------------------------------------------------------
    def autocast(self):
        if self.cfg.dtype == "bfloat16" and self.mesh.dp == 1:
            return torch.autocast(self.mesh.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def global_mean(self, value: Tensor) -> float:
        if not dist.is_initialized():
            return float(value.detach())
        value = value.detach().clone()
        dist.all_reduce(value)
        return float(value) / dist.get_world_size()

    def train_step(self, batch: Any) -> tuple[float, float, int]:
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss, tokens = self.compute_loss(batch)
        loss.backward()
        grad_norm = clip_grad_norm(list(self.module.parameters()), self.cfg.optim.grad_clip, self.mesh)
        self.optimizer.step()
        self.scheduler.step()
        return self.global_mean(loss), float(grad_norm), tokens

    def train(self, max_steps: int | None = None) -> TrainResult:
        """Train to ``total_steps`` (or stop after ``max_steps`` more steps, for tests of resume)."""
        if self.cfg.resume:
            self.resume()
        stop = self.total_steps if max_steps is None else min(self.total_steps, self.step + max_steps)
        log = MetricsLog(self.out, self.total_steps, self.step, enabled=is_rank0(), desc=self.stage)
        window_tokens, window_start = 0, time.perf_counter()
        while self.step < stop:
            batch = self.next_batch()
            lr = self.scheduler.get_last_lr()[0]
            loss, grad_norm, tokens = self.train_step(batch)
            self.step += 1
            self.tokens_seen += tokens
            window_tokens += tokens
            self.losses.append(loss)
            if self.step % self.cfg.log_every == 0 or self.step == stop:
                elapsed = time.perf_counter() - window_start
                log.log(
                    {
                        "step": self.step,
                        "loss": loss,
                        "lr": lr,
                        "grad_norm": grad_norm,
                        "tokens_seen": self.tokens_seen,
                        "tokens_per_s": window_tokens / max(elapsed, 1e-9),
                    }
                )
                window_tokens, window_start = 0, time.perf_counter()
            log.advance()
            self.after_step(log)
            if self.step % self.cfg.checkpoint.every == 0 or self.step == self.total_steps:
                self.save()
        self.checkpointer.wait()
        log.close()
        return TrainResult(self.step, self.tokens_seen, list(self.losses), self.out)
