"""Training (SPEC §4): the one Trainer, pretraining on it, shards, FIM, parallelism, checkpoints."""

from hcx.train.checkpoint import CheckpointSaved, read_events
from hcx.train.config import LoopConfig, PretrainConfig
from hcx.train.pretrain import Pretrainer, pretrain
from hcx.train.trainer import Task, Trainer, TrainResult

__all__ = [
    "CheckpointSaved",
    "LoopConfig",
    "PretrainConfig",
    "Pretrainer",
    "Task",
    "TrainResult",
    "Trainer",
    "pretrain",
    "read_events",
]
