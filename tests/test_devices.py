"""Every network of every stage lands on the stage's device, in the stage's precision.

The device is the one a GPU box would use when it has one (``cuda``) and the CPU here; the
dtype is every stage's default, ``auto``: bfloat16 where the device computes it natively
(this CPU, if it has AMX or AVX512-BF16), else float32. Trained networks keep float32 master
weights (autocast or FSDP computes in the compute dtype); frozen networks (PPO's reference
and reward model, the rollout engine's copy, evaluation and serving) are held in it. Rotary tables stay float32
everywhere. The same test runs unchanged on a GPU box.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hcx.align.config import PpoConfig, RmConfig, SftConfig
from hcx.align.ppo import PpoTrainer
from hcx.align.reward_model import RewardStats
from hcx.align.rm import RmTrainer
from hcx.align.sft import SftTrainer
from hcx.eval.backend import HcxLM
from hcx.model.load import load_model
from hcx.model.precision import auto_dtype
from hcx.pipeline.config import EvaluationSpec
from hcx.serve.api import ApiConfig
from hcx.serve.server import ServeConfig, build_app
from hcx.train.config import PretrainConfig
from hcx.train.pretrain import Pretrainer

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BF16 = auto_dtype(torch.device(DEVICE))


def assert_placed(module: nn.Module, dtype: torch.dtype, what: str) -> None:
    params = list(module.named_parameters())
    assert params, f"{what}: no parameters"
    for name, param in params:
        assert param.device.type == DEVICE, f"{what}.{name} on {param.device}"
        assert param.dtype == dtype, f"{what}.{name} is {param.dtype}, expected {dtype}"
    for name, buffer in module.named_buffers():
        assert buffer.device.type == DEVICE, f"{what}.{name} (buffer) on {buffer.device}"
        assert buffer.dtype == torch.float32, f"{what}.{name}: rotary tables stay float32"


def common(out: Path) -> dict:
    return {
        "output_dir": str(out),
        "device": DEVICE,
        "log_every": 1,
        "checkpoint": {"every": 100},
    }


def test_pretraining_builds_on_the_device(corpus_glob: str, tokenizer_dir: Path, tmp_path: Path) -> None:
    cfg = PretrainConfig.model_validate(
        {
            **common(tmp_path / "pre"),
            "corpus": corpus_glob,
            "tokenizer": str(tokenizer_dir),
            "model": {"preset": "tiny", "vocab_size": None, "n_layers": 2, "max_seq_len": 128},
            "steps": 1,
            "stages": [{"fraction": 1.0, "seq_len": 64, "batch_size": 2, "rope_base": 10_000}],
        }
    )
    trainer = Pretrainer(cfg)
    assert_placed(trainer.module, torch.float32, "pretrain")
    trainer.train()
    assert trainer.losses and trainer.losses[0] > 0


def test_sft_rm_ppo_eval_and_serve_follow_the_stage_settings(
    base_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    ko = {"path": str(data_dir / "sft" / "ko.jsonl.gz"), "language": "ko"}
    sft = SftTrainer(
        SftConfig.model_validate(
            {
                **common(tmp_path / "sft"),
                "init": str(base_model_dir),
                "sources": [ko],
                "korean_ratio": 1.0,
                "max_samples": 64,
                "held_out": 4,
                "max_len": 128,
                "max_tokens": 1024,
                "steps": 1,
            }
        )
    )
    assert_placed(sft.module, torch.float32, "sft")
    sft.train()

    preferences = {"path": str(data_dir / "preference" / "ko.jsonl"), "language": "ko"}
    rm = RmTrainer(
        RmConfig.model_validate(
            {
                **common(tmp_path / "rm"),
                "init": str(base_model_dir),
                "sources": [preferences],
                "max_samples": 8,
                "held_out": 2,
                "max_len": 128,
                "prompts_per_step": 4,
                "steps": 1,
            }
        )
    )
    assert_placed(rm.module, torch.float32, "rm")
    rm.train()
    rewards, _, _ = rm.rewards(rm.train_groups[:4])
    rm_dir = rm.export(RewardStats.measure(rewards))

    trainer = PpoTrainer(
        PpoConfig.model_validate(
            {
                **common(tmp_path / "ppo"),
                "policy": str(base_model_dir),
                "reward_model": str(rm_dir),
                "prompts": [ko],
                "held_out": 0,
                "steps": 1,
                "rollouts_per_iteration": 4,
                "minibatch_size": 4,
                "max_new_tokens": 8,
                "max_prompt_len": 96,
            }
        )
    )
    assert_placed(trainer.ppo.policy, torch.float32, "ppo.policy")
    assert_placed(trainer.ppo.value, torch.float32, "ppo.value")
    assert_placed(trainer.ppo.reference, BF16, "ppo.reference")
    assert_placed(trainer.ppo.reward_fn.model, BF16, "ppo.reward_model")
    rollouts = trainer.ppo.rollouts()
    assert_placed(rollouts.copy, BF16, "ppo.rollouts")
    assert rollouts.engine.pool.keys.device.type == DEVICE and rollouts.engine.pool.keys.dtype == BF16
    trainer.train()
    trainer.close()
    assert len(trainer.ppo.history) == 1

    spec = EvaluationSpec(device=DEVICE)
    worker_model = load_model(base_model_dir, spec.device, spec.dtype).model
    assert_placed(worker_model, BF16, "evaluation worker")
    evaluator = HcxLM(pretrained=str(base_model_dir), device=DEVICE)
    assert_placed(evaluator.model, BF16, "hcx eval")

    app = build_app(ServeConfig(checkpoint=base_model_dir, device=DEVICE, api=ApiConfig(served_name="m")))
    assert_placed(app.state.server.engine.model, BF16, "hcx serve")
