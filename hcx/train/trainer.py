"""The one training loop of hcx: pretraining, SFT, the reward model and PPO's learner all run on it.

A :class:`Trainer` owns the step and everything around it, the same for every stage:

- the device (this rank's GPU under torchrun, or the one the stage's ``device`` names) and the
  (pp, dp, tp) mesh; building a model on the meta device and materialising it after sharding
  (FSDP2, tensor and pipeline parallel, :mod:`hcx.train.parallel`), so no rank ever holds a
  whole float32 copy of a model it only holds a shard of;
- precision (bfloat16 autocast, or FSDP's bf16 parameters, over float32 master weights; frozen
  networks are cast to the compute dtype), gradient accumulation, the mesh-aware gradient clip,
  AdamW and its schedule;
- the JSONL log with progress bar, loss averaged over ranks, tokens/s and MFU;
- held-out evaluation every ``eval_every`` steps: the task's own metrics and bits per byte on
  held-out text of each language (:class:`hcx.train.bpb.HeldOutBpb`), so every stage that
  predicts tokens shows the same tokenizer-independent measure of learning;
- DCP checkpoints with exact resume and the checkpoint-saved callback (the pipeline passes
  its publish step there; training knows nothing of the pipeline).

A stage supplies a :class:`Task`: it builds its networks (through the trainer), hands out
batches, computes the loss of a micro-batch, and keeps its own resumable state and hooks (the
context schedule of pretraining, PPO's rollouts and iteration bookkeeping).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from hcx.model.config import ModelConfig
from hcx.model.precision import compute_dtype
from hcx.model.transformer import Transformer, canonical_name
from hcx.paths import find_data_dir
from hcx.train.bpb import HeldOutBpb
from hcx.train.checkpoint import Checkpointer, CheckpointSaved, is_rank0
from hcx.train.config import LoopConfig
from hcx.train.lora import merged_weights
from hcx.train.metrics import MetricsLog, guess_peak_tflops
from hcx.train.optim import build_optimizer, build_scheduler
from hcx.train.parallel import (
    Mesh,
    MeshError,
    build_mesh,
    build_pipeline_schedule,
    clip_grad_norm,
    init_distributed,
    materialize,
    parallelize,
    shard_for_forward,
)


@dataclass
class TrainResult:
    step: int
    tokens_seen: int
    losses: list[float]
    output_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    hf_dir: Path | None = None


@dataclass
class MicroLoss:
    """A micro-batch's loss (already weighted for accumulation) and the tokens it trained on."""

    loss: Tensor
    tokens: int


class Task:
    """What a stage supplies to the :class:`Trainer`. Override what the stage needs."""

    name = "train"
    #: The task's batches are :class:`hcx.train.loader.Batch` language-model rows, which a
    #: pipeline schedule can split into micro-batches (pretraining, packed SFT).
    pipeline_batches = False
    #: The task puts LoRA adapters on what it trains when its config has ``lora`` (:mod:`hcx.train.lora`).
    adapters = False

    def setup(self, trainer: Trainer) -> nn.Module:
        """Build or load the networks (through ``trainer``); return the module the optimizer trains."""
        raise NotImplementedError

    def total_steps(self) -> int:
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        """What checkpoints record besides weights: ``model`` (the config), ``tokenizer``, ..."""
        return {}

    def begin_step(self, step: int) -> bool:
        """Called before each step; True when the batch shape changes (the pipeline schedule is rebuilt)."""
        return False

    def next_batch(self) -> Any | None:
        """This rank's next batch, or None to stop early."""
        raise NotImplementedError

    def micro_batches(self, batch: Any, count: int) -> list[Any]:
        """``batch`` split for gradient accumulation (``grad_accum`` parts)."""
        if count == 1:
            return [batch]
        raise MeshError(f"{self.name}: gradient accumulation is not supported by this stage")

    def loss(self, module: nn.Module, micro: Any, share: float) -> MicroLoss:
        """The loss of one micro-batch, multiplied by ``share`` (its part of the step)."""
        raise NotImplementedError

    def pipeline_loss(self, output: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def before_optimizer_step(self) -> None:
        """After the backward, before clipping: drop or mask gradients of what must not learn now."""

    def end_step(self, step: int) -> dict[str, Any] | None:
        """After the optimizer step: extra fields to log this step (an evaluation, an iteration's record)."""
        return None

    def checkpoint_due(self, step: int, every: int, total: int) -> bool:
        return step % every == 0 or step == total

    def evaluation_due(self, step: int, every: int, total: int) -> bool:
        """Whether held-out metrics are measured after ``step`` (``every``: ``eval_every`` or the
        checkpoint interval)."""
        return step % every == 0 or step == total

    def evaluate(self) -> dict[str, Any]:
        """The stage's own held-out metrics (run in eval mode, without gradients, under autocast)."""
        return {}

    def language_model(self) -> tuple[nn.Module, Any] | None:
        """The network whose next-token predictions bits per byte measures, and its tokenizer;
        None for a stage without one (the reward model)."""
        return None

    def should_stop(self) -> bool:
        return False

    def flops_per_token(self) -> int | None:
        return None

    def log_fields(self) -> dict[str, Any]:
        """Fields added to every periodic step record (e.g. the row length)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Trainer:
    def __init__(
        self, cfg: LoopConfig, task: Task, on_checkpoint: Callable[[CheckpointSaved], None] | None = None
    ):
        self.cfg, self.task = cfg, task
        self.out = Path(cfg.output_dir)
        self.mesh: Mesh = build_mesh(cfg.parallel, init_distributed(cfg.device))
        if self.mesh.pp > 1 and not task.pipeline_batches:
            raise MeshError(f"{task.name}.parallel.pp must be 1: this stage's batches cannot be pipelined")
        if self.mesh.pp > 1 and cfg.grad_accum != 1:
            raise MeshError(
                f"{task.name}.grad_accum must be 1 with parallel.pp > 1 (use parallel.pp_microbatches)"
            )
        if cfg.lora is not None and not task.adapters:
            raise ValueError(f"{task.name}.lora: this stage trains every weight; remove lora")
        if is_rank0():
            self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        self.compute_dtype = compute_dtype(cfg.dtype, self.mesh.device)
        self.step, self.tokens_seen, self.losses = 0, 0, []
        self.schedule = None
        self._resumed = False
        self.module = task.setup(self)
        self.total_steps = task.total_steps()
        self.optimizer = build_optimizer([self.module], cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, cfg.optim)
        meta = {
            **task.meta(),
            "stage": task.name,
            "mesh": {"pp": self.mesh.pp, "dp": self.mesh.dp, "tp": self.mesh.tp},
        }
        if cfg.lora is not None:  # the loader merges a checkpoint's adapters with these settings
            meta["lora"] = {**cfg.lora.model_dump(mode="json"), "scaling": cfg.lora.scaling}
        self.checkpointer = Checkpointer(
            self.out, meta, cfg.checkpoint.keep, cfg.checkpoint.async_save, on_checkpoint
        )
        self.peak_tflops = cfg.peak_tflops or guess_peak_tflops(self.mesh.device)
        self.log: MetricsLog | None = None
        self.bpb, self.bpb_off = self._held_out_bpb()

    def _held_out_bpb(self) -> tuple[HeldOutBpb | None, str | None]:
        """Bits per byte on ``cfg.bpb``'s held-out text, or None and why it is not measured."""
        cfg, lm = self.cfg.bpb, self.task.language_model()
        if lm is None or not cfg.languages:
            return None, None
        if self.mesh.pp > 1:
            return None, "not under pipeline parallel (no rank holds the whole model)"
        data_dir = cfg.data_dir or find_data_dir(required=False)
        if data_dir is None:
            return None, "no shared data directory: set bpb.data_dir or $HCX_DATA_DIR"
        return HeldOutBpb(cfg.languages, lm[1], cfg.max_bytes, str(data_dir)), None

    # --- building networks -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.mesh.device

    def build_model(self, model_cfg: ModelConfig, seed: int) -> Transformer:
        """A freshly initialised model, built on the meta device and materialised after sharding."""
        with torch.device("meta"):
            model = Transformer(model_cfg)
        model = self.shard(model)
        materialize(model, self.device, seed)
        return model

    def shard(self, model: Transformer) -> Transformer:
        """This rank's part of ``model`` (loaded or on the meta device), on this rank's device."""
        return parallelize(
            model,
            self.mesh,
            param_dtype=self.compute_dtype if self.compute_dtype != torch.float32 else None,
            activation_checkpointing=self.cfg.activation_checkpointing,
            compile=self.cfg.compile,
            compile_mode=self.cfg.compile_mode,
        )

    def frozen(self, model: nn.Module) -> nn.Module:
        """A network used for forwards only (a reference or reward model): on the device, in the
        compute dtype, sharded over the data-parallel ranks."""
        model = model.to(device=self.device, dtype=self.compute_dtype).eval().requires_grad_(False)
        return shard_for_forward(model, self.mesh)

    # --- one step ----------------------------------------------------------------------------
    def autocast(self):
        if self.compute_dtype != torch.float32 and self.mesh.dp == 1:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _pipeline_step(self, batch: Any) -> tuple[Tensor, int]:
        losses: list[Tensor] = []
        first, last = self.mesh.pp_rank == 0, self.mesh.is_last_stage
        with self.autocast():
            self.schedule.step(
                *([batch.inputs] if first else []),
                target=batch.targets if last else None,
                losses=losses,
                positions=batch.positions,
                doc_ids=batch.doc_ids,
            )
        loss = torch.stack(losses).detach().mean() if last else torch.zeros((), device=self.device)
        return loss, int((batch.targets != -100).sum())

    def forward_backward(self, batch: Any) -> tuple[Tensor, int]:
        if self.mesh.pp > 1:
            return self._pipeline_step(batch)
        total, tokens = torch.zeros((), device=self.device), 0
        micros = self.task.micro_batches(batch, self.cfg.grad_accum)
        for i, micro in enumerate(micros):
            if hasattr(self.module, "set_requires_gradient_sync"):
                self.module.set_requires_gradient_sync(i == len(micros) - 1)
            with self.autocast():
                out = self.task.loss(self.module, micro, 1.0 / len(micros))
            out.loss.backward()
            total += out.loss.detach()
            tokens += out.tokens
        return total, tokens

    def global_mean(self, loss: Tensor) -> float:
        """Mean over data-parallel ranks of the loss held by the last pipeline stage."""
        if not dist.is_initialized():
            return float(loss)
        loss = loss.detach().clone()
        dist.all_reduce(loss)
        return float(loss) / (self.mesh.dp * self.mesh.tp)

    def train_step(self, batch: Any) -> tuple[float, float, int]:
        """Zero, forward and backward every micro-batch, clip, step; (loss, grad norm, tokens)."""
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        if hasattr(batch, "to"):  # tensor batches; others (preference groups) are laid out by their task
            batch = batch.to(self.device)
        loss, tokens = self.forward_backward(batch)
        self.task.before_optimizer_step()
        grad_norm = clip_grad_norm(list(self.module.parameters()), self.cfg.optim.grad_clip, self.mesh)
        self.optimizer.step()
        self.scheduler.step()
        return self.global_mean(loss), float(grad_norm), tokens

    # --- state -------------------------------------------------------------------------------
    def _train_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "losses": list(self.losses),
            "scheduler": self.scheduler.state_dict(),
            "data": self.task.state_dict(),
            "rng": torch.get_rng_state().numpy().tobytes(),
        }

    def resume(self) -> bool:
        """Restore the latest checkpoint (once; later calls do nothing). False when there is none."""
        if self._resumed or not self.cfg.resume:
            return False
        self._resumed = True
        state = self.checkpointer.load(self.module, self.optimizer, self._train_state())
        if state is None:
            return False
        self.step, self.tokens_seen = int(state["step"]), int(state["tokens_seen"])
        self.losses = list(state["losses"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.task.load_state_dict(state["data"])
        torch.set_rng_state(torch.from_numpy(np.frombuffer(state["rng"], dtype=np.uint8).copy()))
        return True

    def save(self, seq_len: int | None = None) -> None:
        event = CheckpointSaved(
            path=f"step_{self.step:07d}",
            step=self.step,
            tokens_seen=self.tokens_seen,
            time=time.time(),
            stage=self.task.name,
            seq_len=seq_len,
            loss=self.losses[-1] if self.losses else None,
        )
        self.checkpointer.save(self.module, self.optimizer, self._train_state(), event)

    def full_state_dict(self) -> dict[str, Tensor] | None:
        """The trained module's whole weights on CPU, on rank 0 (None elsewhere); every rank must call it.

        LoRA adapters come merged into the weights they adapt, under the plain names."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # cpu_offload keeps the gathered weights on global rank 0 only; pipeline stages gather their own.
        options = StateDictOptions(full_state_dict=True, cpu_offload=self.mesh.pp == 1)
        state = {k: v.cpu() for k, v in get_model_state_dict(self.module, options=options).items()}
        if self.mesh.pp > 1:
            gathered: list[Any] = [None] * self.mesh.pp
            dist.all_gather_object(
                gathered, state if self.mesh.dp_rank == 0 else None, group=self.mesh.group("pp")
            )
            state = {k: v for part in gathered if part for k, v in part.items()}
        return merged_weights(state, self.cfg.lora) if is_rank0() else None

    def full_model(self, model_cfg: ModelConfig, prefix: str = "") -> Transformer | None:
        """The whole language model (the trained module's ``prefix`` part) on rank 0, None elsewhere."""
        state = self.full_state_dict()
        if state is None:
            return None
        names = {canonical_name(k): v for k, v in state.items()}
        model = Transformer(model_cfg)
        model.load_state_dict(
            {k.removeprefix(prefix): v.float() for k, v in names.items() if k.startswith(prefix)}
        )
        return model

    def num_params(self, trainable: bool = False) -> int:
        """Parameters of the trained module over all shards and pipeline stages (a DTensor counts whole);
        ``trainable``: only those the optimizer updates (with LoRA, the adapters and heads)."""
        params = [p for p in self.module.parameters() if p.requires_grad or not trainable]
        count = torch.tensor(float(sum(p.numel() for p in params)))
        if self.mesh.pp > 1:
            dist.all_reduce(count, group=self.mesh.group("pp"))
        return int(count)

    # --- the loop ----------------------------------------------------------------------------
    def evaluate(self) -> dict[str, Any]:
        """The task's held-out metrics and bits per byte (``bpb/<language>``), in eval mode."""
        self.module.eval()
        try:
            with torch.no_grad(), self.autocast():
                record = dict(self.task.evaluate())
                if self.bpb is not None:
                    record |= self.bpb(self.task.language_model()[0])
        finally:
            self.module.train()
        return record

    def log_event(self, record: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.log(record)

    def fit(self, max_steps: int | None = None) -> TrainResult:
        """Train to the task's last step (or ``max_steps`` more, for tests of resume) or until it stops."""
        cfg, task = self.cfg, self.task
        resumed = self.resume() or self.step > 0
        stop = self.total_steps if max_steps is None else min(self.total_steps, self.step + max_steps)
        self.log = MetricsLog(self.out, self.total_steps, self.step, enabled=is_rank0(), desc=task.name)
        if resumed:
            self.log.log({"event": "resume", "step": self.step, "tokens_seen": self.tokens_seen})
        else:
            world = self.mesh.pp * self.mesh.dp * self.mesh.tp
            record = {"event": "start", "params": self.num_params(), "world": world}
            if cfg.lora is not None:
                record["trainable_params"] = self.num_params(trainable=True)
            if self.bpb_off:
                record["bpb_off"] = self.bpb_off
            self.log.log(record)
        window_tokens, window_start, window_losses = 0, time.perf_counter(), []
        while self.step < stop:
            changed = task.begin_step(self.step)
            if self.mesh.pp > 1 and (changed or self.schedule is None):
                self.schedule = build_pipeline_schedule(
                    self.module,
                    self.mesh,
                    cfg.parallel.pp_microbatches,
                    cfg.parallel.pp_schedule,
                    task.pipeline_loss,
                )
            batch = task.next_batch()
            if batch is None:
                break
            lr = self.scheduler.get_last_lr()[0]
            loss, grad_norm, tokens = self.train_step(batch)
            self.step += 1
            self.tokens_seen += tokens
            window_tokens += tokens
            window_losses.append(loss)
            self.losses.append(loss)
            extra = task.end_step(self.step)
            if task.evaluation_due(self.step, cfg.eval_every or cfg.checkpoint.every, self.total_steps):
                began = time.perf_counter()
                extra = {**(extra or {}), **self.evaluate()}
                window_start += time.perf_counter() - began  # tokens/s counts training time only
            if self.step % cfg.log_every == 0 or self.step == stop or extra:
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                record = {
                    "step": self.step,
                    "loss": sum(window_losses) / len(window_losses),  # mean since the last record
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "tokens_seen": self.tokens_seen,
                    "tokens_per_s": window_tokens / elapsed,
                    **task.log_fields(),
                }
                flops = task.flops_per_token()
                if self.peak_tflops and flops:
                    devices = self.mesh.pp * self.mesh.dp * self.mesh.tp
                    record["mfu"] = flops * record["tokens_per_s"] / (self.peak_tflops * 1e12 * devices)
                self.log.log({**record, **(extra or {})})
                window_tokens, window_start, window_losses = 0, time.perf_counter(), []
            self.log.advance()
            stopping = task.should_stop()
            if task.checkpoint_due(self.step, cfg.checkpoint.every, self.total_steps) or stopping:
                self.save(task.log_fields().get("seq_len"))
            if stopping:
                break
        self.checkpointer.wait()
        return TrainResult(self.step, self.tokens_seen, list(self.losses), self.out)

    def train(self, max_steps: int | None = None) -> TrainResult:
        result = self.fit(max_steps)
        self.close_log()
        return result

    def close_log(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None
