"""Reward-model training (SPEC §5.2): ``hcx rm RECIPE``.

The post-SFT model gets a randomly initialised linear head; every comparison of a prompt's
responses enters the same step's Bradley-Terry loss; training runs one epoch by default.
Afterwards the reward mean and standard deviation over the training responses are stored
for PPO's normalisation, and held-out pairwise accuracy is reported per language.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hcx.align.batching import right_pad
from hcx.align.config import RmConfig
from hcx.align.losses import bradley_terry_loss, pairwise_accuracy
from hcx.align.preferences import PreferenceGroup, read_preferences
from hcx.align.reward_model import RewardModel, RewardStats, export_reward_model, shard_reward_model
from hcx.model.load import load_model
from hcx.model.transformer import canonical_name
from hcx.records import ReadReport, hold_out
from hcx.tokenizer.hf_tokenizer import keep_chat_tokens
from hcx.train.checkpoint import CheckpointSaved
from hcx.train.lora import add_adapters
from hcx.train.trainer import MicroLoss, Task, Trainer, TrainResult, is_rank0


def collate_groups(
    groups: Sequence[PreferenceGroup], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, list, list]:
    """Right-padded responses of all groups, their lengths, and flat (better, worse) indices."""
    sequences = [seq for group in groups for seq in group.sequences]
    tokens = right_pad(sequences, pad_id)
    lengths = torch.tensor([len(s) for s in sequences])
    better, worse, offset = [], [], 0
    for group in groups:
        better.extend(offset + i for i, _ in group.pairs)
        worse.extend(offset + j for _, j in group.pairs)
        offset += len(group.sequences)
    return tokens, lengths, better, worse


class RmTask(Task):
    """Bradley-Terry loss over every comparison of a step's prompts, on the SFT model plus a head."""

    name = "rm"
    adapters = True

    def __init__(self, cfg: RmConfig):
        self.cfg = cfg
        self.epoch, self.index = 0, 0

    def setup(self, trainer: Trainer) -> nn.Module:
        cfg = self.cfg
        self.trainer, self.mesh = trainer, trainer.mesh
        loaded = load_model(cfg.init, tokenizer=cfg.tokenizer, trainable=True)
        self.tokenizer_dir, self.tokenizer = loaded.tokenizer_dir, loaded.tokenizer(cfg.chat)
        backbone = loaded.model
        self.model_cfg = backbone.cfg
        max_len = cfg.max_len or backbone.cfg.max_seq_len
        self.read_report = ReadReport()
        self.train_groups: list[PreferenceGroup] = []
        self.held_out: dict[str, list[PreferenceGroup]] = {}
        for source in cfg.sources:
            groups = read_preferences(
                source.path,
                self.tokenizer,
                max_len,
                cfg.bad_records,
                source.language,
                report=self.read_report,
            )
            kept_out, rest = hold_out(groups, cfg.held_out, cfg.seed)
            self.held_out.setdefault(source.language, []).extend(kept_out)
            self.train_groups.extend(rest)
        if cfg.max_samples is not None:
            self.train_groups = self.train_groups[: cfg.max_samples]
        if not self.train_groups:
            raise ValueError("rm: no training pairs left after the held-out split; check rm.sources")
        self.steps_per_epoch = math.ceil(len(self.train_groups) / (cfg.prompts_per_step * self.mesh.dp))
        # With LoRA the new head trains whole: it starts random, there is no base to adapt.
        model = add_adapters(RewardModel(backbone, seed=cfg.seed), cfg.lora, cfg.seed, trainable=("head",))
        return shard_reward_model(model, trainer)

    def total_steps(self) -> int:
        return self.cfg.steps or self.cfg.epochs * self.steps_per_epoch

    def meta(self) -> dict[str, Any]:
        return {
            "model": self.model_cfg.model_dump(mode="json"),
            "head": "linear",
        }

    def _epoch_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.train_groups)))
        random.Random(self.cfg.seed + epoch).shuffle(order)
        return order

    def next_batch(self) -> list[PreferenceGroup]:
        if self.index >= self.steps_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        order = self._epoch_order(self.epoch)
        per_step = self.cfg.prompts_per_step
        start = (self.index * self.mesh.dp + self.mesh.dp_rank) * per_step
        self.index += 1
        return [self.train_groups[i] for i in order[start : start + per_step]] or [
            self.train_groups[order[0]]
        ]

    def loss(self, module: nn.Module, micro: list[PreferenceGroup], share: float) -> MicroLoss:
        tokens, lengths, better, worse = collate_groups(micro, self.tokenizer.pad_id)
        rewards = module(tokens.to(self.trainer.device), lengths.to(self.trainer.device))
        return MicroLoss(bradley_terry_loss(rewards[better], rewards[worse]) * share, int(lengths.sum()))

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


class RmTrainer(Trainer):
    """The trainer on the reward-model task, with rewards, accuracy and the export afterwards."""

    def __init__(self, cfg: RmConfig, on_checkpoint: Callable[[CheckpointSaved], None] | None = None):
        task = RmTask(cfg)
        super().__init__(cfg, task, on_checkpoint)
        self.tokenizer = task.tokenizer
        self.train_groups, self.held_out, self.read_report = (
            task.train_groups,
            task.held_out,
            task.read_report,
        )

    @torch.no_grad()
    def rewards(self, groups: Sequence[PreferenceGroup]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All responses' rewards, and those of the better and worse side of every pair."""
        self.module.eval()
        all_rewards, better, worse = [], [], []
        for start in range(0, len(groups), self.cfg.prompts_per_step):
            tokens, lengths, b, w = collate_groups(
                groups[start : start + self.cfg.prompts_per_step], self.tokenizer.pad_id
            )
            with self.autocast():
                r = self.module(tokens.to(self.device), lengths.to(self.device)).float().cpu()
            all_rewards.append(r)
            better.append(r[b])
            worse.append(r[w])
        self.module.train()
        return torch.cat(all_rewards), torch.cat(better), torch.cat(worse)

    def held_out_accuracy(self) -> dict[str, float]:
        accuracy = {}
        for language, groups in self.held_out.items():
            if groups:
                _, better, worse = self.rewards(groups)
                accuracy[language] = pairwise_accuracy(better, worse)
        return accuracy

    def export(self, stats: RewardStats) -> Path | None:
        state = self.full_state_dict()
        if state is None:
            return None
        out = Path(self.cfg.export_dir or self.out / "final")
        state = {canonical_name(k): v for k, v in state.items()}
        out = export_reward_model(state, self.task.model_cfg, out, self.task.tokenizer_dir, stats)
        keep_chat_tokens(self.task.tokenizer, out)
        return out


def train_reward_model(
    cfg: RmConfig, on_checkpoint: Callable[[CheckpointSaved], None] | None = None
) -> TrainResult:
    trainer = RmTrainer(cfg, on_checkpoint)
    accuracy_before = trainer.held_out_accuracy()
    result = trainer.train()
    train_rewards, _, _ = trainer.rewards(trainer.train_groups)
    stats = RewardStats.measure(train_rewards, cfg.reward_clip)
    accuracy_after = trainer.held_out_accuracy()
    pairs = {lang: sum(len(g.pairs) for g in groups) for lang, groups in trainer.held_out.items()}
    export_dir = trainer.export(stats) if trainer.step == trainer.total_steps else None
    result.metrics = {
        "held_out_accuracy_before": accuracy_before,
        "held_out_accuracy": accuracy_after,
        # Binomial standard error over the held-out pairs (pairs of one prompt are not independent,
        # so this is a lower bound of the real one).
        "held_out_accuracy_stderr": {
            lang: math.sqrt(acc * (1 - acc) / max(pairs[lang] - 1, 1)) for lang, acc in accuracy_after.items()
        },
        "held_out_pairs": pairs,
        "train_pairs": sum(len(g.pairs) for g in trainer.train_groups),
        "reward_mean": stats.mean,
        "reward_std": stats.std,
        "skipped": trainer.read_report.as_dict(),
        "export_dir": str(export_dir) if export_dir else None,
    }
    if is_rank0():
        (trainer.out / "rm_summary.json").write_text(json.dumps(result.metrics, indent=1, ensure_ascii=False))
    return result
