"""Peak memory of PPO with LoRA adapters against full PPO, same model and recipe (hcx.train.lora).

A randomly initialised policy big enough that weights and optimizer state dominate (1024 wide,
12 layers, 152M parameters with the 8k tokenizer) and a reward model of the same shape are
exported as Hugging Face directories; each variant then runs in a fresh interpreter (so one
variant's allocations cannot hide in the other's peak) one synchronous PPO iteration with the
four networks (policy, reference, reward model, value from the reward model) in float32, and
reports its process peak resident memory (``VmHWM``).

What differs: full PPO holds policy and value with gradients and AdamW's two moments plus a
frozen reference copy of the policy; LoRA PPO holds the same frozen bases, gradients and
moments of the adapters (and the value head) only, and no reference copy (the policy with its
adapters off). Both hold the reward model and the rollout engine's copy of the policy.

    .venv/bin/python benchmarks/lora_memory.py [--tokenizer runs/tiny/tokenizer] [--dim 768 --layers 8]

Without ``--tokenizer`` a small hcx tokenizer is trained on a slice of the shared text first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hcx.align.config import PpoConfig
from hcx.align.ppo import PpoTrainer
from hcx.align.reward_model import RewardModel, RewardStats, export_reward_model
from hcx.model import ModelConfig, Transformer
from hcx.model.config import padded_vocab_size
from hcx.model.hf import export_hf
from hcx.paths import find_data_dir
from hcx.tokenizer import load, train_tokenizer

GIB = 1024**3


def peak_rss() -> int:
    """This process's peak resident set size in bytes (VmHWM: this image's own, not a parent's)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def build_models(args: argparse.Namespace, tokenizer_dir: Path, out: Path) -> tuple[ModelConfig, Path, Path]:
    """A random policy and a reward model of the same shape, as `hcx sft` and `hcx rm` would export them."""
    vocab = padded_vocab_size(load(tokenizer_dir).vocab_size)
    cfg = ModelConfig(
        preset="small",
        vocab_size=vocab,
        n_layers=args.layers,
        dim=args.dim,
        n_heads=args.dim // 64,
        ffn_dim=args.ffn,
        max_seq_len=512,
    )
    policy = Transformer(cfg)
    policy.init_weights(seed=0)
    policy_dir = export_hf(policy, out / "policy", tokenizer_dir)
    rm = RewardModel(policy, seed=1)
    state = {f"backbone.{k}": v for k, v in rm.backbone.state_dict().items()} | {
        "head.weight": rm.head.weight
    }
    rm_dir = export_reward_model(state, cfg, out / "rm", tokenizer_dir, RewardStats(0.0, 1.0))
    return cfg, policy_dir, rm_dir


def run_variant(args: argparse.Namespace) -> None:
    """One PPO iteration in this (fresh) process; prints its figures as one JSON line."""
    torch.set_num_threads(args.threads)
    cfg = PpoConfig.model_validate(
        {
            "policy": str(args.policy),
            "reward_model": str(args.reward_model),
            "output_dir": str(args.out),
            "prompts": [{"path": str(find_data_dir() / "sft" / "ko.jsonl.gz"), "language": "ko"}],
            "max_prompt_len": 128,
            "held_out": 0,
            "steps": 1,
            "rollouts_per_iteration": args.rollouts,
            "minibatch_size": args.rollouts,
            "ppo_epochs": 1,
            "max_new_tokens": args.max_new_tokens,
            "asynchronous": False,
            "dtype": "float32",
            "checkpoint": {"every": 10_000},
            "eval_every": 10_000,
            "early_stop": {"max_kl": None, "max_length_drift": None, "patience": None},
            "lora": {"rank": args.rank, "alpha": 2.0 * args.rank} if args.variant == "lora" else None,
        }
    )
    started = time.perf_counter()
    trainer = PpoTrainer(cfg)
    trainer.ppo.checkpoint_due = lambda *_: False  # memory of training, not of writing checkpoints
    trainer.train()
    trainer.close()
    report = {
        "peak_bytes": peak_rss(),
        "seconds": time.perf_counter() - started,
        "params": trainer.num_params(),
        "trainable": trainer.num_params(trainable=True),
    }
    print(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", type=Path, default=None)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--ffn", type=int, default=2816)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    # a variant's own process
    parser.add_argument("--variant", choices=["full", "lora"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--policy", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--reward-model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        run_variant(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = args.tokenizer
        if tokenizer_dir is None:
            data = find_data_dir() / "pretrain"
            tokenizer_dir = train_tokenizer(
                files=[data / f"{lang}.jsonl.gz" for lang in ("ko", "en", "code")],
                vocab_size=8192,
                output_dir=Path(tmp) / "tok",
                max_bytes_per_file=1_000_000,
            )
        model_cfg, policy_dir, rm_dir = build_models(args, tokenizer_dir, Path(tmp))
        figures = {}
        for variant in ("full", "lora"):
            command = [sys.executable, __file__, "--variant", variant, "--policy", str(policy_dir)]
            command += ["--reward-model", str(rm_dir), "--out", str(Path(tmp) / variant)]
            command += [
                f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("rank", "rollouts", "threads")
            ]
            command += [f"--max-new-tokens={args.max_new_tokens}"]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            figures[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    full, lora = figures["full"], figures["lora"]
    print(
        f"PPO, one iteration of {args.rollouts} rollouts x up to {args.max_new_tokens} new tokens, float32, "
        f"a {model_cfg.num_params() / 1e6:.0f}M-parameter policy, LoRA rank {args.rank}"
    )
    print(f"{'variant':<10}{'peak RSS':>12}{'trainable params':>18}{'seconds':>9}")
    for name, row in figures.items():
        print(f"{name:<10}{row['peak_bytes'] / GIB:>10.2f} GiB{row['trainable']:>18,}{row['seconds']:>9.1f}")
    print(f"LoRA / full peak: {lora['peak_bytes'] / full['peak_bytes']:.2f}")


if __name__ == "__main__":
    main()
