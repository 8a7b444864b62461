"""Pretraining (SPEC §4): token shards, FIM, packing, the context schedule, 3D parallelism, checkpoints."""

from hcx.train.checkpoint import CheckpointSaved, read_events
from hcx.train.config import PretrainConfig
from hcx.train.trainer import Pretrainer, PretrainResult, pretrain

__all__ = ["CheckpointSaved", "PretrainConfig", "PretrainResult", "Pretrainer", "pretrain", "read_events"]
