"""Pretraining (SPEC §4) as a :class:`~hcx.train.trainer.Task`: packed FIM rows, the context schedule.

Run it with ``hcx pretrain RECIPE`` on one process, or under
``torchrun --nproc-per-node N -m hcx.cli pretrain RECIPE`` for a mesh. Everything that can be
wrong with the inputs (shards, mesh, context lengths, the checkpoint) is checked before the
first step. The model is built on the meta device and materialised after sharding.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from hcx.model.config import ModelConfig, padded_vocab_size
from hcx.model.hf import export_hf
from hcx.model.transformer import Transformer
from hcx.tokenizer import specials
from hcx.train.checkpoint import CheckpointSaved
from hcx.train.config import PretrainConfig
from hcx.train.fim import FimTokens
from hcx.train.loader import Batch, PackedLoader
from hcx.train.shards import load_tokenizer, open_shards, shards_are_current, special_id, tokenize_corpus
from hcx.train.trainer import MicroLoss, Task, Trainer, TrainResult, is_rank0


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy, computed in float32 whatever the logits' dtype."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


def prepare_shards(cfg: PretrainConfig) -> Path:
    """Tokenize the corpus once (rank 0), reuse shards that match the corpus pattern and tokenizer."""
    shard_dir = Path(cfg.output_dir) / "tokens"
    if is_rank0() and not shards_are_current(shard_dir, cfg.corpus, cfg.tokenizer, cfg.max_documents):
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


def chunk_batch(batch: Batch, count: int) -> list[Batch]:
    """Rows of ``batch`` in ``count`` equal parts (gradient accumulation)."""
    parts = [t.chunk(count) for t in (batch.inputs, batch.targets, batch.positions, batch.doc_ids)]
    return [Batch(*(p[i] for p in parts)) for i in range(count)]


class PretrainTask(Task):
    name = "pretrain"
    pipeline_batches = True

    def __init__(self, cfg: PretrainConfig):
        self.cfg = cfg
        self.stage_index = -1

    def setup(self, trainer: Trainer) -> nn.Module:
        cfg, mesh = self.cfg, trainer.mesh
        self.tokenizer = load_tokenizer(cfg.tokenizer)
        self.model_cfg = resolve_model_config(cfg, self.tokenizer).model_copy(
            update={"rope_base": cfg.stages[0].rope_base}
        )
        self.trainer, self.mesh = trainer, mesh
        splits = cfg.parallel.pp_microbatches if mesh.pp > 1 else cfg.grad_accum
        for i, stage in enumerate(cfg.stages):
            if stage.batch_size % (mesh.dp * splits):
                raise ValueError(
                    f"pretrain.stages[{i}].batch_size={stage.batch_size} must split evenly over dp={mesh.dp} "
                    f"ranks and grad_accum={cfg.grad_accum} (or pp_microbatches under pipeline parallel)"
                )
        self.shards = open_shards(prepare_shards(cfg))
        fim_ids = (specials.FIM_PREFIX, specials.FIM_SUFFIX, specials.FIM_MIDDLE)
        self.loader = PackedLoader(
            self.shards,
            special_id(self.tokenizer, specials.END_OF_TEXT),
            FimTokens(*(special_id(self.tokenizer, t) for t in fim_ids)),
            cfg.fim.rate,
            cfg.fim.spm_rate,
            cfg.fim.split,
            cfg.seed,
        )
        self.model = trainer.build_model(self.model_cfg, cfg.seed)
        return self.model

    def total_steps(self) -> int:
        return self.cfg.steps

    def meta(self) -> dict[str, Any]:
        return {
            "model": self.model_cfg.model_dump(mode="json", exclude={"preset", "init_std"}),
            "tokenizer": str(Path(self.cfg.tokenizer).resolve()),
        }

    def begin_step(self, step: int) -> bool:
        """Context switch (SPEC §4): the new RoPE base goes into the model config (and the
        checkpoints' meta); the loader repacks at the new row length."""
        index, stage = self.cfg.stage_at(step)
        if index == self.stage_index:
            return False
        for module in self.model.modules():
            if isinstance(module, Transformer):
                module.set_rope_base(stage.rope_base)
        self.model_cfg = self.model_cfg.model_copy(update={"rope_base": stage.rope_base})
        self.trainer.checkpointer.meta["model"]["rope_base"] = stage.rope_base
        self.trainer.log_event(
            {"event": "context", "step": step, "seq_len": stage.seq_len, "rope_base": stage.rope_base}
        )
        self.stage_index = index
        return True

    def next_batch(self) -> Batch:
        stage = self.cfg.stages[self.stage_index]
        return self.loader.next_batch(stage.batch_size, stage.seq_len, self.mesh.dp_rank, self.mesh.dp)

    def micro_batches(self, batch: Batch, count: int) -> list[Batch]:
        return chunk_batch(batch, count)

    def loss(self, module: nn.Module, micro: Batch, share: float) -> MicroLoss:
        doc_ids = micro.doc_ids if self.cfg.doc_mask else None
        logits = module(micro.inputs, positions=micro.positions, doc_ids=doc_ids)
        return MicroLoss(lm_loss(logits, micro.targets) * share, int(micro.targets.numel()))

    def pipeline_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return lm_loss(output, target)

    def log_fields(self) -> dict[str, Any]:
        return {"seq_len": self.cfg.stages[max(self.stage_index, 0)].seq_len}

    def flops_per_token(self) -> int:
        return self.model_cfg.flops_per_token(self.cfg.stages[max(self.stage_index, 0)].seq_len)

    def state_dict(self) -> dict[str, Any]:
        data = self.loader.state_dict()
        data["buffer"], data["buffer_docs"] = data["buffer"].tobytes(), data["buffer_docs"].tobytes()
        return data

    def load_state_dict(self, state: dict[str, Any]) -> None:
        data = dict(state)
        data["buffer"] = np.frombuffer(data["buffer"], dtype=np.int64)
        data["buffer_docs"] = np.frombuffer(data["buffer_docs"], dtype=np.int64)
        self.loader.load_state_dict(data)


class Pretrainer(Trainer):
    """The trainer on the pretraining task, with the Hugging Face export at the end."""

    def __init__(self, cfg: PretrainConfig, on_checkpoint: Callable[[CheckpointSaved], None] | None = None):
        super().__init__(cfg, PretrainTask(cfg), on_checkpoint)
        self.model_cfg = self.task.model_cfg

    def train(self, max_steps: int | None = None) -> TrainResult:
        result = self.fit(max_steps)
        if self.cfg.export_hf and self.step == self.cfg.steps:
            result.hf_dir = self.export(Path(self.cfg.export_hf))
            self.log_event({"event": "export_hf", "path": str(result.hf_dir)})
        self.close_log()
        return result

    def export(self, hf_dir: Path) -> Path | None:
        model = self.full_model(self.task.model_cfg)
        path = export_hf(model, hf_dir, self.cfg.tokenizer) if model is not None else None
        if dist.is_initialized():
            dist.barrier()
        return path


def pretrain(
    cfg: PretrainConfig,
    on_checkpoint: Callable[[CheckpointSaved], None] | None = None,
    max_steps: int | None = None,
) -> TrainResult:
    return Pretrainer(cfg, on_checkpoint).train(max_steps)
