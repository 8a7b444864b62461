"""Wall time of one PPO iteration against SFT on the same number of tokens, same model (SPEC §5.3).

The report's PPO cost about 4x SFT; it parallelised rollouts asynchronously and used
continuous batching for the four networks' inference. This runs, in one process on the
tiny recipe's models (``bash scripts/run.sh`` first):

- PPO iterations with the reward model, synchronous (generate, then learn) and asynchronous
  (the next batch generates while the learner trains), timed after a warm-up iteration;
- SFT steps on packed shared conversations until they have seen as many tokens as the timed
  PPO iterations processed (prompt + response tokens of their rollouts).

The ratio is of seconds per token. Each PPO configuration is a row: ``ppo_epochs`` 1 (as
DeepSpeed-Chat and OpenRLHF default to) and 2 (hcx's default), synchronous and asynchronous.

    .venv/bin/python benchmarks/ppo_vs_sft.py [--policy runs/tiny/sft/hf] [--reward-model runs/tiny/rm/final]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hcx.align.config import PpoConfig, SftConfig
from hcx.align.ppo import PpoTrainer
from hcx.align.sft import SftTrainer


def ppo_seconds(args: argparse.Namespace, out: Path, asynchronous: bool, epochs: int) -> tuple[float, int]:
    cfg = PpoConfig.model_validate(
        {
            "policy": str(args.policy),
            "reward_model": str(args.reward_model),
            "output_dir": str(out),
            "steps": args.iterations + 1,
            "rollouts_per_iteration": args.rollouts,
            "minibatch_size": 16,
            "ppo_epochs": epochs,
            "max_new_tokens": args.max_new_tokens,
            "held_out": 0,
            "dtype": "float32",
            "asynchronous": asynchronous,
            "checkpoint": {"every": 10_000},
            "eval_every": 10_000,
            "early_stop": {"max_kl": None, "max_length_drift": None, "patience": None},
        }
    )
    trainer = PpoTrainer(cfg)
    started = time.perf_counter()
    trainer.train(max_steps=1)
    warm = time.perf_counter() - started
    started = time.perf_counter()
    trainer.train(max_steps=args.iterations)
    seconds = (time.perf_counter() - started) / args.iterations
    tokens = statistics.mean(h["sequence_tokens"] for h in trainer.ppo.history[1:])
    print(f"  warm-up iteration {warm:.1f} s")
    return seconds, int(tokens)


def sft_seconds(args: argparse.Namespace, out: Path, tokens: int) -> tuple[float, int]:
    cfg = SftConfig.model_validate(
        {
            "init": str(args.policy),
            "output_dir": str(out),
            "batching": "packed",
            "seq_len": 512,
            "max_tokens": 4096,
            "max_len": 512,
            "max_samples": 2000,
            "held_out": 0,
            "steps": 10_000,
            "dtype": "float32",
            "checkpoint": {"every": 100_000},
        }
    )
    trainer = SftTrainer(cfg)
    trainer.train(max_steps=1)  # warm-up
    seen, started = 0, time.perf_counter()
    while seen < tokens:
        batch = trainer.task.next_batch()
        trainer.train_step(batch)
        seen += int(batch.inputs.numel())
    return time.perf_counter() - started, seen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policy", type=Path, default=Path("runs/tiny/sft/hf"))
    parser.add_argument("--reward-model", type=Path, default=Path("runs/tiny/rm/final"))
    parser.add_argument("--rollouts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--ppo-epochs", type=int, nargs="+", default=[1, 2], help="ppo.ppo_epochs values, one row each"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        rows = {}
        for epochs in args.ppo_epochs:
            for asynchronous in (False, True):
                mode = "asynchronous" if asynchronous else "synchronous"
                name = f"PPO, {epochs} epoch{'s' if epochs > 1 else ''}, {mode}"
                print(name)
                rows[name] = ppo_seconds(args, Path(tmp) / f"ppo{epochs}{mode}", asynchronous, epochs)
        tokens = max(t for _, t in rows.values()) * args.iterations
        sft_time, sft_tokens = sft_seconds(args, Path(tmp) / "sft", tokens)
    print(
        f"\n{args.rollouts} rollouts x up to {args.max_new_tokens} new tokens, four tiny networks, {args.threads} threads"
    )
    print(f"{'what':<34}{'seconds':>9}{'tokens':>9}{'tokens/s':>10}{'vs SFT':>8}")
    sft_rate = sft_tokens / sft_time
    print(f"{'SFT, packed':<34}{sft_time:>9.2f}{sft_tokens:>9,}{sft_rate:>10,.0f}{1.0:>7.2f}x")
    for name, (seconds, tokens) in rows.items():
        ratio = (seconds / tokens) / (sft_time / sft_tokens)
        print(f"{name:<34}{seconds:>9.2f}{tokens:>9,}{tokens / seconds:>10,.0f}{ratio:>7.2f}x")
    print("report: PPO about 4x SFT; goal <= 2x (time per token, same model)")


if __name__ == "__main__":
    main()
