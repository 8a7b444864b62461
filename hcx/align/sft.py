"""Supervised fine-tuning (SPEC §5.1): ``hcx sft RECIPE``.

Starts from a pretrained model directory (the ``hcx pretrain`` Hugging Face export),
trains on conversations with the loss on assistant turns only, in length-grouped or
packed batches under a token budget, with Korean and English mixed by a ratio, and
exports the result in the same format for the reward model and PPO. The loop, sharding,
checkpoints and resume are :class:`hcx.train.trainer.Trainer`'s (this file is the :class:`SftTask`).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hcx.align.batching import make_batches
from hcx.align.config import SftConfig
from hcx.align.conversations import IGNORE_INDEX, SftExample, read_conversations
from hcx.model.hf import export_hf
from hcx.model.load import load_model
from hcx.records import ReadReport, hold_out
from hcx.tokenizer import Tokenizer
from hcx.tokenizer.hf_tokenizer import keep_chat_tokens
from hcx.train.checkpoint import CheckpointSaved
from hcx.train.loader import Batch
from hcx.train.lora import add_adapters
from hcx.train.pretrain import chunk_batch, lm_loss
from hcx.train.trainer import MicroLoss, Task, Trainer, TrainResult, is_rank0


def mix_by_ratio(korean: list, other: list, korean_ratio: float, max_samples: int | None, seed: int) -> list:
    """The largest mix with ``korean_ratio`` of Korean samples that the data allows, shuffled."""
    if korean_ratio >= 1.0:
        n_ko, n_other = len(korean), 0
    elif korean_ratio <= 0.0:
        n_ko, n_other = 0, len(other)
    else:
        total = min(len(korean) / korean_ratio, len(other) / (1 - korean_ratio))
        n_ko = min(len(korean), round(total * korean_ratio))
        n_other = min(len(other), round(total * (1 - korean_ratio)))
    if max_samples is not None and n_ko + n_other > max_samples:
        scale = max_samples / (n_ko + n_other)
        n_ko, n_other = round(n_ko * scale), max_samples - round(n_ko * scale)
    rng = random.Random(seed)
    mixed = rng.sample(korean, n_ko) + rng.sample(other, n_other)
    rng.shuffle(mixed)
    return mixed


def load_sft_data(
    cfg: SftConfig, tokenizer: Tokenizer, max_len: int
) -> tuple[list[SftExample], dict[str, list[SftExample]], ReadReport]:
    """Training mix and held-out samples per language (held out before mixing, never trained on)."""
    report = ReadReport()
    pools: dict[str, list[SftExample]] = {}
    held_out: dict[str, list[SftExample]] = {}
    for source in cfg.sources:
        examples = read_conversations(
            source.path, tokenizer, max_len, cfg.bad_records, source.language, report=report
        )
        kept_out, rest = hold_out(examples, cfg.held_out, cfg.seed)
        held_out.setdefault(source.language, []).extend(kept_out)
        pools.setdefault(source.language, []).extend(rest)
    korean = pools.get("ko", [])
    other = [e for language, pool in pools.items() if language != "ko" for e in pool]
    mixed = mix_by_ratio(korean, other, cfg.korean_ratio, cfg.max_samples, cfg.seed)
    if not mixed:
        raise ValueError("sft: no training samples left after held-out split and mixing; check sft.sources")
    return mixed, held_out, report


def token_nll(model: torch.nn.Module, batch: Batch, packed: bool) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL over the trained (assistant) targets, and their count."""
    logits = model(batch.inputs, positions=batch.positions, doc_ids=batch.doc_ids if packed else None)
    nll = F.cross_entropy(
        logits.flatten(0, 1).float(), batch.targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return nll, int((batch.targets != IGNORE_INDEX).sum())


class SftTask(Task):
    """Assistant-token loss over grouped or packed conversation batches, from a pretrained model."""

    name = "sft"
    adapters = True

    def __init__(self, cfg: SftConfig):
        self.cfg = cfg
        self.pipeline_batches = cfg.batching == "packed"
        self.epoch, self.index = 0, 0

    def setup(self, trainer: Trainer) -> nn.Module:
        cfg = self.cfg
        self.trainer, self.mesh = trainer, trainer.mesh
        loaded = load_model(cfg.init, tokenizer=cfg.tokenizer, trainable=True)
        self.tokenizer_dir = loaded.tokenizer_dir
        self.tokenizer = loaded.tokenizer(cfg.chat)
        model = loaded.model
        if self.tokenizer.vocab_size > model.cfg.vocab_size:
            raise ValueError(
                f"sft.tokenizer has {self.tokenizer.vocab_size} tokens but the model {cfg.init} only "
                f"{model.cfg.vocab_size}: they do not belong together"
            )
        self.model_cfg = model.cfg
        max_len = cfg.max_len or model.cfg.max_seq_len
        if max_len > model.cfg.max_seq_len:
            raise ValueError(f"sft.max_len={max_len} exceeds the model context {model.cfg.max_seq_len}")
        if cfg.batching == "packed" and cfg.seq_len < max_len:
            max_len = cfg.seq_len
        self.examples, self.held_out, self.read_report = load_sft_data(cfg, self.tokenizer, max_len)
        self.packed = cfg.batching == "packed"
        self.batches = self._epoch_batches(0)
        rows = self.batches[0].inputs.shape[0]
        if self.mesh.pp > 1 and rows % cfg.parallel.pp_microbatches:
            raise ValueError(
                f"sft: a packed batch has {rows} rows (max_tokens // seq_len), which parallel.pp_microbatches="
                f"{cfg.parallel.pp_microbatches} does not divide"
            )
        return trainer.shard(add_adapters(model, cfg.lora, cfg.seed))

    def total_steps(self) -> int:
        per_epoch = math.ceil(len(self._epoch_batches(0)) / self.mesh.dp)
        return self.cfg.steps or self.cfg.epochs * per_epoch

    def meta(self) -> dict[str, Any]:
        return {
            "model": self.model_cfg.model_dump(mode="json"),
            "tokenizer": str(self.tokenizer_dir.resolve()),
        }

    def _epoch_batches(self, epoch: int) -> list[Batch]:
        """One epoch's batches. Under pipeline parallel only full packed batches: a schedule is
        built for one micro-batch shape, so a short last batch is dropped."""
        cfg = self.cfg
        batches = make_batches(
            self.examples,
            cfg.batching,
            self.tokenizer.pad_id,
            cfg.max_tokens,
            cfg.seq_len,
            cfg.batch_size,
            seed=cfg.seed + epoch,
        )
        if self.mesh.pp > 1:
            rows = max(b.inputs.shape[0] for b in batches)
            batches = [b for b in batches if b.inputs.shape[0] == rows]
        return batches

    def next_batch(self) -> Batch:
        position = self.index * self.mesh.dp + self.mesh.dp_rank
        if position >= len(self.batches):
            self.epoch, self.index = self.epoch + 1, 0
            self.batches = self._epoch_batches(self.epoch)
            position = self.mesh.dp_rank
        self.index += 1
        return self.batches[position % len(self.batches)]

    def micro_batches(self, batch: Batch, count: int) -> list[Batch]:
        return chunk_batch(batch, count)

    def loss(self, module: nn.Module, micro: Batch, share: float) -> MicroLoss:
        nll, count = token_nll(module, micro, self.packed)
        return MicroLoss(nll / max(count, 1) * share, count)

    def pipeline_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return lm_loss(output, target)

    def evaluate(self) -> dict[str, Any]:
        return {f"held_out_loss/{k}": v for k, v in self.held_out_loss().items()}

    def language_model(self) -> tuple[nn.Module, Any]:
        return self.trainer.module, self.tokenizer

    def flops_per_token(self) -> int:
        """At the longest row (grouped batches are shorter: MFU is then an upper bound)."""
        longest = self.cfg.seq_len if self.packed else self.cfg.max_len or self.model_cfg.max_seq_len
        return self.model_cfg.flops_per_token(longest)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self.batches = self._epoch_batches(self.epoch)

    @torch.no_grad()
    def held_out_loss(self) -> dict[str, float]:
        """Mean assistant-token loss on each language's held-out samples (not under pipeline parallel)."""
        if self.mesh.pp > 1:
            return {}
        module = self.trainer.module
        module.eval()
        losses = {}
        for language, examples in self.held_out.items():
            total, count = 0.0, 0
            for batch in make_batches(examples, "grouped", self.tokenizer.pad_id, 4096, 0, seed=0):
                with self.trainer.autocast():
                    nll, n = token_nll(module, batch.to(self.trainer.device), packed=False)
                total, count = total + float(nll), count + n
            losses[language] = total / max(count, 1)
        module.train()
        return losses


class SftTrainer(Trainer):
    """The trainer on the SFT task, with the Hugging Face export at the end."""

    def __init__(self, cfg: SftConfig, on_checkpoint: Callable[[CheckpointSaved], None] | None = None):
        task = SftTask(cfg)
        super().__init__(cfg, task, on_checkpoint)
        self.examples, self.held_out, self.read_report = task.examples, task.held_out, task.read_report
        self.held_out_loss = task.held_out_loss

    def export(self) -> Path | None:
        model = self.full_model(self.task.model_cfg)
        if model is None:
            return None
        out = export_hf(model, Path(self.cfg.export_hf or self.out / "hf"), self.task.tokenizer_dir)
        keep_chat_tokens(self.task.tokenizer, out)
        return out


def sft(cfg: SftConfig, on_checkpoint: Callable[[CheckpointSaved], None] | None = None) -> TrainResult:
    trainer = SftTrainer(cfg, on_checkpoint)
    before = trainer.held_out_loss() if trainer.held_out else {}
    result = trainer.train()
    after = trainer.held_out_loss() if trainer.held_out else {}
    hf_dir = trainer.export() if trainer.step == trainer.total_steps else None
    result.metrics = {
        "held_out_loss_before": before,
        "held_out_loss_after": after,
        "samples": len(trainer.examples),
        "skipped": trainer.read_report.as_dict(),
        "hf_dir": str(hf_dir) if hf_dir else None,
    }
    if is_rank0():
        (trainer.out / "sft_summary.json").write_text(
            json.dumps(result.metrics, indent=1, ensure_ascii=False)
        )
        write_held_out_prompts(trainer.held_out, trainer.out / HELD_OUT_PROMPTS)
    return result


HELD_OUT_PROMPTS = "held_out_prompts.jsonl"


def write_held_out_prompts(held_out: dict[str, list[SftExample]], path: Path) -> None:
    """The held-out conversations' first prompts (chat-template token ids, ending in the assistant
    header) per language: what ``eval.answers`` asks the SFT and PPO models, never trained on."""
    with path.open("w", encoding="utf-8") as f:
        for language, examples in held_out.items():
            for example in examples:
                f.write(json.dumps({"language": language, "prompt_ids": example.prompt_ids}) + "\n")
