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
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from hcx.model.config import ModelConfig, padded_vocab_size
from hcx.model.hf import export_hf
from hcx.model.transformer import Transformer
from hcx.tokenizer.specials import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX
from hcx.train.checkpoint import CheckpointSaved
from hcx.train.config import PretrainConfig
from hcx.train.fim import FimTokens
from hcx.train.loader import Batch, PackedLoader
from hcx.train.phases import PhaseGradients, check_phases
from hcx.train.shards import load_tokenizer, open_shards, shards_are_current, tokenize_corpus
from hcx.train.trainer import MicroLoss, Task, Trainer, TrainResult, is_rank0

FIM_TOKENS = (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)


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
        self.lm_loss = torch.compile(lm_loss, mode=cfg.compile_mode) if cfg.compile else lm_loss

    def setup(self, trainer: Trainer) -> nn.Module:
        cfg, mesh = self.cfg, trainer.mesh
        self.tokenizer = load_tokenizer(cfg.tokenizer)
        base, self.first_new_row = self._base_model() if cfg.init_from else (None, None)
        model_cfg = base.cfg if base is not None else resolve_model_config(cfg, self.tokenizer)
        self.model_cfg = model_cfg.model_copy(update={"rope_base": cfg.stages[0].rope_base})
        self.trainer, self.mesh = trainer, mesh
        self._check_shapes(mesh)
        with torch.device("meta"):
            check_phases(
                cfg.phases, [n for n, _ in Transformer(self.model_cfg).named_parameters()], self.first_new_row
            )
        self.shards = open_shards(prepare_shards(cfg))
        self.loader = PackedLoader(
            self.shards,
            self.tokenizer.eot_id,
            self._fim_tokens(),
            cfg.fim.rate,
            cfg.fim.spm_rate,
            cfg.fim.split,
            cfg.seed,
        )
        if base is None:
            self.model = trainer.build_model(self.model_cfg, cfg.seed)
        else:
            base.set_rope_base(cfg.stages[0].rope_base)
            self.model = trainer.shard(base)
        self.phase_index, self.phase_gradients = -1, PhaseGradients(self.model, self.first_new_row)
        return self.model

    def _base_model(self) -> tuple[Transformer, int | None]:
        """The ``init_from`` model, its embeddings grown to the tokenizer's vocabulary when that is
        larger (new rows initialised as ``new_token_init`` says); the first new row, if any."""
        from hcx.model.load import load_model

        loaded = load_model(self.cfg.init_from, trainable=True)
        model, base_tokens = loaded.model, loaded.tokenizer().vocab_size
        if self.tokenizer.vocab_size <= base_tokens:
            return model, None
        from hcx.model.extend import grow_for_tokenizer

        grow_for_tokenizer(
            model, loaded.tokenizer_dir, self.cfg.tokenizer, init=self.cfg.new_token_init, seed=self.cfg.seed
        )
        return model, base_tokens

    def _check_shapes(self, mesh) -> None:
        cfg = self.cfg
        splits = cfg.parallel.pp_microbatches if mesh.pp > 1 else cfg.grad_accum
        for i, stage in enumerate(cfg.stages):
            if stage.batch_size % (mesh.dp * splits):
                raise ValueError(
                    f"pretrain.stages[{i}].batch_size={stage.batch_size} must split evenly over dp={mesh.dp} "
                    f"ranks and grad_accum={cfg.grad_accum} (or pp_microbatches under pipeline parallel)"
                )
            if stage.seq_len > self.model_cfg.max_seq_len:
                raise ValueError(
                    f"pretrain.stages[{i}].seq_len {stage.seq_len} exceeds the model's max_seq_len "
                    f"{self.model_cfg.max_seq_len}"
                )

    def _fim_tokens(self) -> FimTokens | None:
        if self.cfg.fim.rate == 0:
            return None
        try:
            return FimTokens(*(self.tokenizer.token_id(t) for t in FIM_TOKENS))
        except KeyError:
            raise ValueError(
                f"pretrain.fim.rate={self.cfg.fim.rate} but the tokenizer {self.cfg.tokenizer} has no "
                f"fill-in-the-middle tokens {FIM_TOKENS}; set pretrain.fim.rate: 0"
            ) from None

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
        self._enter_phase(step)
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

    def _enter_phase(self, step: int) -> None:
        index, phase = self.cfg.phase_at(step)
        if index != self.phase_index:
            self.phase_gradients.enter(phase, self.trainer.optimizer)
            if self.cfg.phases:
                self.trainer.log_event({"event": "phase", "step": step, "train": phase.train})
            self.phase_index = index

    def before_optimizer_step(self) -> None:
        self.phase_gradients.apply()

    def next_batch(self) -> Batch:
        stage = self.cfg.stages[self.stage_index]
        return self.loader.next_batch(stage.batch_size, stage.seq_len, self.mesh.dp_rank, self.mesh.dp)

    def micro_batches(self, batch: Batch, count: int) -> list[Batch]:
        return chunk_batch(batch, count)

    def loss(self, module: nn.Module, micro: Batch, share: float) -> MicroLoss:
        doc_ids = micro.doc_ids if self.cfg.doc_mask else None
        logits = module(micro.inputs, positions=micro.positions, doc_ids=doc_ids)
        return MicroLoss(self.lm_loss(logits, micro.targets) * share, int(micro.targets.numel()))

    def pipeline_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self.lm_loss(output, target)

    def language_model(self) -> tuple[nn.Module, Any]:
        return self.model, self.tokenizer

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
