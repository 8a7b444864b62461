"""The pretraining loop (SPEC §4): wires data, model, parallelism, optimizer, checkpoints, logs.

Run it with ``hcx pretrain RECIPE`` on one process, or under
``torchrun --nproc-per-node N -m hcx.cli pretrain RECIPE`` for a mesh. Everything that can be
wrong with the inputs (shards, mesh, context lengths, the checkpoint) is checked before the
first step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from hcx.model.config import ModelConfig, padded_vocab_size
from hcx.model.hf import export_hf
from hcx.model.transformer import Transformer
from hcx.tokenizer import specials
from hcx.train.checkpoint import Checkpointer, CheckpointSaved
from hcx.train.config import PretrainConfig
from hcx.train.fim import FimTokens
from hcx.train.loader import Batch, PackedLoader
from hcx.train.metrics import MetricsLog, guess_peak_tflops
from hcx.train.optim import build_optimizer, build_scheduler
from hcx.train.parallel import (
    Mesh,
    build_mesh,
    build_pipeline_schedule,
    clip_grad_norm,
    init_distributed,
    parallelize,
)
from hcx.train.shards import load_tokenizer, open_shards, shards_are_current, special_id, tokenize_corpus


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy, computed in float32 whatever the logits' dtype."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


@dataclass
class PretrainResult:
    step: int
    tokens_seen: int
    losses: list[float]
    output_dir: Path
    hf_dir: Path | None = None


def _rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def prepare_shards(cfg: PretrainConfig) -> Path:
    """Tokenize the corpus once (rank 0), reuse shards that match the corpus pattern and tokenizer."""
    shard_dir = Path(cfg.output_dir) / "tokens"
    if _rank0() and not shards_are_current(shard_dir, cfg.corpus, cfg.tokenizer, cfg.max_documents):
        tokenize_corpus(cfg.corpus, cfg.tokenizer, shard_dir, cfg.max_documents)
    if dist.is_initialized():
        dist.barrier()
    return shard_dir


def resolve_model_config(cfg: PretrainConfig, tokenizer) -> ModelConfig:
    """The model config with ``vocab_size`` checked against (or taken from) the tokenizer."""
    vocab = tokenizer.vocab_size
    if cfg.model.vocab_size is None:
        return cfg.model.model_copy(update={"vocab_size": padded_vocab_size(vocab)})
    if vocab > cfg.model.vocab_size:
        raise ValueError(
            f"pretrain.model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's vocabulary ({vocab})"
        )
    return cfg.model


class Pretrainer:
    def __init__(self, cfg: PretrainConfig, on_checkpoint: Callable[[CheckpointSaved], None] | None = None):
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        device = init_distributed()
        self.mesh: Mesh = build_mesh(cfg.parallel, device)
        if cfg.parallel.pp > 1 and cfg.grad_accum != 1:
            raise ValueError(
                "pretrain.grad_accum must be 1 with parallel.pp > 1 (use parallel.pp_microbatches)"
            )
        splits = cfg.parallel.pp_microbatches if self.mesh.pp > 1 else cfg.grad_accum
        for i, stage in enumerate(cfg.stages):
            if stage.batch_size % (self.mesh.dp * splits):
                raise ValueError(
                    f"pretrain.stages[{i}].batch_size={stage.batch_size} must split evenly over dp={self.mesh.dp} "
                    f"ranks and grad_accum={cfg.grad_accum} (or pp_microbatches under pipeline parallel)"
                )
        if _rank0():
            self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)

        tokenizer = load_tokenizer(cfg.tokenizer)
        self.model_cfg = resolve_model_config(cfg, tokenizer)
        self.shards = open_shards(prepare_shards(cfg))
        fim = FimTokens(
            *(
                special_id(tokenizer, t)
                for t in (specials.FIM_PREFIX, specials.FIM_SUFFIX, specials.FIM_MIDDLE)
            )
        )
        self.loader = PackedLoader(
            self.shards,
            special_id(tokenizer, specials.END_OF_TEXT),
            fim,
            cfg.fim.rate,
            cfg.fim.spm_rate,
            cfg.fim.split,
            cfg.seed,
        )

        model = Transformer(self.model_cfg)
        model.init_weights(cfg.seed)
        self.bf16 = cfg.dtype == "bfloat16"
        self.model = parallelize(
            model,
            self.mesh,
            param_dtype=torch.bfloat16 if self.bf16 else None,
            activation_checkpointing=cfg.activation_checkpointing,
            compile=cfg.compile,
        )
        self.loss_fn = torch.compile(lm_loss) if cfg.compile else lm_loss
        self.optimizer = build_optimizer([self.model], cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.steps, cfg.optim)
        meta = {
            "model": self.model_cfg.model_dump(mode="json", exclude={"preset", "init_std"}),
            "mesh": {"pp": self.mesh.pp, "dp": self.mesh.dp, "tp": self.mesh.tp},
            "tokenizer": str(Path(cfg.tokenizer).resolve()),
            "rope_base": cfg.stages[0].rope_base,
        }
        self.checkpointer = Checkpointer(
            self.out, meta, cfg.checkpoint.keep, cfg.checkpoint.async_save, on_checkpoint
        )
        self.step, self.tokens_seen, self.losses = 0, 0, []
        self.schedule, self._stage_index = None, -1
        self.peak_tflops = cfg.peak_tflops or guess_peak_tflops(self.mesh.device)

    # --- state -----------------------------------------------------------------------------
    def _train_state(self) -> dict:
        data = self.loader.state_dict()
        data["buffer"], data["buffer_docs"] = data["buffer"].tobytes(), data["buffer_docs"].tobytes()
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "losses": list(self.losses),
            "scheduler": self.scheduler.state_dict(),
            "data": data,
            "rng": torch.get_rng_state().numpy().tobytes(),
        }

    def resume(self) -> bool:
        state = self.checkpointer.load(self.model, self.optimizer, self._train_state())
        if state is None:
            return False
        self.step, self.tokens_seen, self.losses = (
            int(state["step"]),
            int(state["tokens_seen"]),
            list(state["losses"]),
        )
        self.scheduler.load_state_dict(state["scheduler"])
        data = dict(state["data"])
        data["buffer"] = np.frombuffer(data["buffer"], dtype=np.int64)
        data["buffer_docs"] = np.frombuffer(data["buffer_docs"], dtype=np.int64)
        self.loader.load_state_dict(data)
        torch.set_rng_state(torch.from_numpy(np.frombuffer(state["rng"], dtype=np.uint8).copy()))
        return True

    def save(self, seq_len: int) -> None:
        name = f"step_{self.step:07d}"
        event = CheckpointSaved(
            path=name,
            step=self.step,
            tokens_seen=self.tokens_seen,
            time=time.time(),
            seq_len=seq_len,
            loss=self.losses[-1] if self.losses else None,
        )
        self.checkpointer.save(self.model, self.optimizer, self._train_state(), event)

    # --- one step --------------------------------------------------------------------------
    def _autocast(self):
        if self.bf16 and self.mesh.dp == 1:
            return torch.autocast(self.mesh.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _enter_stage(self, index: int) -> None:
        """Context switch (SPEC §4): new RoPE base; the loader repacks at the new row length."""
        stage = self.cfg.stages[index]
        self.checkpointer.meta["rope_base"] = stage.rope_base
        for module in self.model.modules():
            if isinstance(module, Transformer):
                module.set_rope_base(stage.rope_base)
        if self.mesh.pp > 1:
            self.schedule = build_pipeline_schedule(
                self.model,
                self.mesh,
                self.cfg.parallel.pp_microbatches,
                self.cfg.parallel.pp_schedule,
                self.loss_fn,
            )
        self._stage_index = index

    def _forward_backward(self, batch: Batch) -> Tensor:
        if self.mesh.pp > 1:
            losses: list[Tensor] = []
            first, last = self.mesh.pp_rank == 0, self.mesh.is_last_stage
            kwargs = {"positions": batch.positions}
            if self.cfg.doc_mask:
                kwargs["doc_ids"] = batch.doc_ids
            with self._autocast():
                self.schedule.step(
                    *([batch.inputs] if first else []),
                    target=batch.targets if last else None,
                    losses=losses,
                    **kwargs,
                )
            return torch.stack(losses).detach().mean() if last else torch.zeros((), device=self.mesh.device)
        total = torch.zeros((), device=self.mesh.device)
        micro = [
            b.chunk(self.cfg.grad_accum)
            for b in (batch.inputs, batch.targets, batch.positions, batch.doc_ids)
        ]
        for i in range(self.cfg.grad_accum):
            inputs, targets, positions, doc_ids = (m[i] for m in micro)
            if self.mesh.dp > 1:
                self.model.set_requires_gradient_sync(i == self.cfg.grad_accum - 1)
            with self._autocast():
                logits = self.model(
                    inputs, positions=positions, doc_ids=doc_ids if self.cfg.doc_mask else None
                )
                loss = self.loss_fn(logits, targets) / self.cfg.grad_accum
            loss.backward()
            total += loss.detach()
        return total

    def _global_loss(self, loss: Tensor) -> float:
        """Mean loss over data-parallel ranks, taken from the last pipeline stage."""
        if not dist.is_initialized():
            return float(loss)
        loss = loss.clone()
        dist.all_reduce(loss)
        return float(loss) / (self.mesh.dp * self.mesh.tp)

    def train_step(self, batch: Batch) -> tuple[float, float]:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._forward_backward(batch.to(self.mesh.device))
        grad_norm = clip_grad_norm(list(self.model.parameters()), self.cfg.optim.grad_clip, self.mesh)
        self.optimizer.step()
        self.scheduler.step()
        return self._global_loss(loss), float(grad_norm)

    # --- the loop --------------------------------------------------------------------------
    def train(self, max_steps: int | None = None) -> PretrainResult:
        """Train to ``cfg.steps`` (or stop early after ``max_steps`` more steps, for tests)."""
        cfg = self.cfg
        if cfg.resume:
            self.resume()
        stop = cfg.steps if max_steps is None else min(cfg.steps, self.step + max_steps)
        log = MetricsLog(self.out, cfg.steps, self.step, enabled=_rank0())
        if self.step == 0:
            log.log(
                {
                    "event": "start",
                    "params": self.model_cfg.num_params(),
                    "world": self.mesh.pp * self.mesh.dp * self.mesh.tp,
                }
            )
        else:
            log.log({"event": "resume", "step": self.step, "tokens_seen": self.tokens_seen})
        window_tokens, window_start, window_losses = 0, time.perf_counter(), []
        while self.step < stop:
            index, stage = cfg.stage_at(self.step)
            if index != self._stage_index:
                self._enter_stage(index)
                log.log(
                    {
                        "event": "context",
                        "step": self.step,
                        "seq_len": stage.seq_len,
                        "rope_base": stage.rope_base,
                    }
                )
            batch = self.loader.next_batch(stage.batch_size, stage.seq_len, self.mesh.dp_rank, self.mesh.dp)
            lr = self.scheduler.get_last_lr()[0]
            loss, grad_norm = self.train_step(batch)
            self.step += 1
            step_tokens = stage.batch_size * stage.seq_len
            self.tokens_seen += step_tokens
            window_tokens += step_tokens
            window_losses.append(loss)
            self.losses.append(loss)
            if self.step % cfg.log_every == 0 or self.step == stop:
                elapsed = time.perf_counter() - window_start
                tokens_per_s = window_tokens / elapsed
                record = {
                    "step": self.step,
                    "loss": sum(window_losses) / len(window_losses),  # mean since the last record
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "seq_len": stage.seq_len,
                    "tokens_seen": self.tokens_seen,
                    "tokens_per_s": tokens_per_s,
                }
                if self.peak_tflops:
                    devices = self.mesh.pp * self.mesh.dp * self.mesh.tp
                    flops = self.model_cfg.flops_per_token(stage.seq_len) * tokens_per_s
                    record["mfu"] = flops / (self.peak_tflops * 1e12 * devices)
                log.log(record)
                window_tokens, window_start, window_losses = 0, time.perf_counter(), []
            log.advance()
            if self.step % cfg.checkpoint.every == 0 or self.step == cfg.steps:
                self.save(stage.seq_len)
        self.checkpointer.wait()
        hf_dir = None
        if cfg.export_hf and self.step == cfg.steps:
            hf_dir = self.export(Path(cfg.export_hf))
            log.log({"event": "export_hf", "path": str(hf_dir)})
        log.close()
        return PretrainResult(self.step, self.tokens_seen, list(self.losses), self.out, hf_dir)

    def full_model(self) -> Transformer | None:
        """The whole model with full weights on rank 0 (None elsewhere), gathered from every shard."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # cpu_offload keeps the gathered weights on global rank 0 only; pipeline stages gather their own.
        options = StateDictOptions(full_state_dict=True, cpu_offload=self.mesh.pp == 1)
        state = {k: v.cpu() for k, v in get_model_state_dict(self.model, options=options).items()}
        if self.mesh.pp > 1:
            gathered = [None] * self.mesh.pp
            dist.all_gather_object(
                gathered, state if self.mesh.dp_rank == 0 else None, group=self.mesh.group("pp")
            )
            state = {k: v for part in gathered if part for k, v in part.items()}
        if not _rank0():
            return None
        model = Transformer(self.model_cfg)
        model.load_state_dict(state)
        model.set_rope_base(self.cfg.stage_at(max(0, self.step - 1))[1].rope_base)
        return model

    def export(self, hf_dir: Path) -> Path | None:
        model = self.full_model()
        path = export_hf(model, hf_dir, self.cfg.tokenizer) if model is not None else None
        if dist.is_initialized():
            dist.barrier()
        return path


def pretrain(
    cfg: PretrainConfig,
    on_checkpoint: Callable[[CheckpointSaved], None] | None = None,
    max_steps: int | None = None,
) -> PretrainResult:
    return Pretrainer(cfg, on_checkpoint).train(max_steps)
