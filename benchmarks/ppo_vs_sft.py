"""Wall time of a PPO iteration against SFT on the same number of tokens, same model (SPEC §5.3).

The report's PPO cost about 4x SFT; it parallelised rollouts asynchronously and used
continuous batching for the four networks' inference. This runs, in one process on the
tiny recipe's models (``bash scripts/run.sh`` first), in one compute dtype for both stages:

- PPO iterations with the reward model, synchronous (generate, then learn) and asynchronous
  (the next batch generates while the learner trains), ``ppo_epochs`` 1 (as DeepSpeed-Chat
  and OpenRLHF default to) and 2 (hcx's default), each after a warm-up iteration;
- SFT steps on packed shared conversations until they have seen as many tokens as that
  repeat's PPO iterations processed (prompt + response tokens of their rollouts).

Repeats interleave the five so that machine noise hits all alike; the ratio is of seconds
per token, the median over repeats. Then the phase table: each phase's seconds per iteration
(from the learner's own clock, ``phases`` in the iteration record) beside the same networks
timed alone on the same rollouts in the learner's similar-length chunks (``alone``): the
forwards and backwards, and AdamW's step, with nothing around them. Generation's ``alone``
is one teacher-forced forward of the policy over the rollouts: the arithmetic of decoding
without its step-by-step overhead, a floor no autoregressive engine reaches.

    .venv/bin/python benchmarks/ppo_vs_sft.py [--dtype auto] [--repeats 3] [--iterations 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from machine import describe

from hcx.align.config import PpoConfig, SftConfig
from hcx.align.experience import response_logits, response_values, token_logprobs
from hcx.align.ppo import PpoTrainer
from hcx.align.sft import SftTrainer


def ppo_trainer(args: argparse.Namespace, out: Path, asynchronous: bool, epochs: int) -> PpoTrainer:
    cfg = PpoConfig.model_validate(
        {
            "policy": str(args.policy),
            "reward_model": str(args.reward_model),
            "output_dir": str(out),
            # One more than it runs: the last iteration also measures held-out bits per byte.
            "steps": 2 + args.repeats * args.iterations,
            "rollouts_per_iteration": args.rollouts,
            "minibatch_size": 16,
            "ppo_epochs": epochs,
            "max_new_tokens": args.max_new_tokens,
            "held_out": 0,
            "dtype": args.dtype,
            "asynchronous": asynchronous,
            "checkpoint": {"every": 10_000},
            "eval_every": 10_000,
            "log_every": 10_000,
            "early_stop": {"max_kl": None, "max_length_drift": None, "patience": None},
        }
    )
    trainer = PpoTrainer(cfg)
    trainer.train(max_steps=1)  # warm-up
    return trainer


def sft_trainer(args: argparse.Namespace, out: Path) -> SftTrainer:
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
            "steps": 100_000,
            "dtype": args.dtype,
            "checkpoint": {"every": 1_000_000},
        }
    )
    trainer = SftTrainer(cfg)
    trainer.train(max_steps=1)  # warm-up
    return trainer


def time_ppo(trainer: PpoTrainer, iterations: int) -> tuple[float, int]:
    """Seconds and sequence tokens of ``iterations`` more PPO iterations."""
    done = len(trainer.ppo.history)
    started = time.perf_counter()
    trainer.train(max_steps=iterations)
    seconds = time.perf_counter() - started
    return seconds, sum(h["sequence_tokens"] for h in trainer.ppo.history[done:])


def time_sft(trainer: SftTrainer, tokens: int) -> tuple[float, int]:
    """Seconds and tokens of SFT steps until at least ``tokens`` tokens are seen."""
    seen, started = 0, time.perf_counter()
    while seen < tokens:
        batch = trainer.task.next_batch()
        trainer.train_step(batch)
        seen += int(batch.inputs.numel())
    return time.perf_counter() - started, seen


def best_of(repeats: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeats))


def alone(trainer: PpoTrainer, repeats: int = 3) -> dict[str, float]:
    """Seconds of the networks alone on the last iteration's rollouts, one pass over all of them,
    in the learner's similar-length chunks and its autocast, with nothing else around them."""
    task = trainer.ppo
    exp = task.exp
    by_length = exp.sequence_lengths.argsort()
    size = task.cfg.minibatch_size
    chunks = [
        chunk
        for i in range(0, len(exp), size)
        for chunk, _ in task.chunks(exp.select(by_length[i : i + size]))
    ]
    temperature = task.cfg.temperature
    reward_model = task.reward_fn.model

    def forwards(what: Callable) -> float:
        started = time.perf_counter()
        with torch.no_grad(), trainer.autocast():
            for c in chunks:
                what(c)
        return time.perf_counter() - started

    def learn() -> tuple[float, float]:
        forward = backward = 0.0
        for c in chunks:
            started = time.perf_counter()
            with trainer.autocast():
                logits = response_logits(task.policy, c.tokens, c.index, temperature, c.mask)
                logprobs = token_logprobs(logits, c.tokens, c.index, c.mask)
                values = response_values(task.value, c.tokens, c.index)
                loss = (logprobs * c.mask).sum() + (values * c.mask).sum()
            middle = time.perf_counter()
            loss.backward()
            forward, backward = forward + middle - started, backward + time.perf_counter() - middle
        return forward, backward

    def optimizer_step() -> float:
        started = time.perf_counter()
        trainer.optimizer.step()
        return time.perf_counter() - started

    seconds = {
        "generation": best_of(
            repeats, lambda: forwards(lambda c: response_logits(task.policy, c.tokens, c.index, mask=c.mask))
        ),
        "reference": best_of(
            repeats,
            lambda: forwards(
                lambda c: token_logprobs(
                    response_logits(task.reference, c.tokens, c.index, mask=c.mask), c.tokens, c.index, c.mask
                )
            ),
        ),
        "values": best_of(
            repeats, lambda: forwards(lambda c: response_values(task.value, c.tokens, c.index))
        ),
        "reward": best_of(repeats, lambda: forwards(lambda c: reward_model(c.tokens, c.sequence_lengths))),
    }
    passes = [learn() for _ in range(repeats)]
    seconds["forward"] = min(f for f, _ in passes)
    seconds["backward"] = min(b for _, b in passes)
    # Last: the steps move the weights. One epoch takes one step per minibatch.
    seconds["optimizer"] = task.minibatches * best_of(repeats, optimizer_step)
    return seconds


def phase_table(
    trainers: dict[str, PpoTrainer], timed_from: int, bare: dict[str, float], sft_rate: float
) -> None:
    """Seconds per iteration of each phase, per configuration, beside the networks alone; then the
    floors: what an iteration would cost, as a multiple of SFT per token, if every phase ran as
    fast as alone (with generation's teacher-forced floor, and with its measured time)."""
    means: dict[str, dict[str, float]] = {}
    tokens: dict[str, float] = {}
    for name, trainer in trainers.items():
        history = trainer.ppo.history[timed_from:]
        keys = {k for h in history for k in h["phases"]}
        means[name] = {k: sum(h["phases"].get(k, 0.0) for h in history) / len(history) for k in keys}
        means[name]["iteration"] = statistics.mean(h["seconds"] for h in history)
        tokens[name] = statistics.mean(h["sequence_tokens"] for h in history)
    epochs = max(t.ppo.cfg.ppo_epochs for t in trainers.values())
    rows: list[tuple[str, str, str | None]] = [
        ("waiting for rollouts (generation)", "rollouts", "generation"),
        ("reference forward", "reference", "reference"),
        ("value forward", "values", "values"),
        ("reward forward", "reward", "reward"),
        ("scoring, the rest (layout, GAE)", "scoring rest", None),
    ]
    for e in range(1, epochs + 1):
        rows += [
            (f"epoch {e}: policy+value forward", f"epoch {e} forward", "forward"),
            (f"epoch {e}: policy+value backward", f"epoch {e} backward", "backward"),
            (f"epoch {e}: clip + AdamW", f"epoch {e} optimizer", "optimizer"),
        ]
    rows += [("publish weights", "publish", None), ("the rest (Python, logging)", "rest", None)]
    for m in means.values():
        m["scoring rest"] = m.get("scoring", 0.0) - sum(
            m.get(k, 0.0) for k in ("reference", "values", "reward")
        )
        counted = sum(m.get(key, 0.0) for _, key, _ in rows if key != "rest")
        m["rest"] = m["iteration"] - counted
    names = list(means)
    print("\nseconds per iteration by phase (alone: the same networks on the same rollouts, nothing else)")
    print(f"{'phase':<36}{'alone':>8}" + "".join(f"{n:>16}" for n in names))
    for label, key, bare_key in rows:
        bare_cell = f"{bare[bare_key]:>8.3f}" if bare_key else f"{'':>8}"
        cells = "".join(f"{means[n][key]:>16.3f}" if key in means[n] else f"{'-':>16}" for n in names)
        print(f"{label:<36}{bare_cell}{cells}")
    print(f"{'iteration':<36}{'':>8}" + "".join(f"{means[n]['iteration']:>16.3f}" for n in names))
    learning = bare["forward"] + bare["backward"] + bare["optimizer"]
    scoring = bare["reference"] + bare["values"] + bare["reward"]
    floors = {"every phase alone, PPO/SFT": lambda n: bare["generation"]}
    floors["same, generation as measured"] = lambda n: means[n]["rollouts"]
    for label, generation in floors.items():
        cells = []
        for n in names:
            seconds = generation(n) + scoring + trainers[n].ppo.cfg.ppo_epochs * learning
            cells.append(f"{seconds / (tokens[n] / sft_rate):>15.2f}x")
        print(f"{label:<44}" + "".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policy", type=Path, default=Path("runs/tiny/sft/hf"))
    parser.add_argument("--reward-model", type=Path, default=Path("runs/tiny/rm/final"))
    parser.add_argument("--rollouts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--iterations", type=int, default=3, help="PPO iterations per configuration and repeat"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto")
    parser.add_argument(
        "--ppo-epochs", type=int, nargs="+", default=[1, 2], help="ppo.ppo_epochs values, one row each"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            f"{epochs} ep {'async' if asynchronous else 'sync'}": ppo_trainer(
                args, Path(tmp) / f"ppo{epochs}{asynchronous}", asynchronous, epochs
            )
            for epochs in args.ppo_epochs
            for asynchronous in (False, True)
        }
        sft = sft_trainer(args, Path(tmp) / "sft")
        ratios: dict[str, list[float]] = {name: [] for name in trainers}
        rates: dict[str, list[float]] = {name: [] for name in [*trainers, "SFT"]}
        for _ in range(args.repeats):
            timed = {name: time_ppo(trainer, args.iterations) for name, trainer in trainers.items()}
            sft_time, sft_tokens = time_sft(sft, max(tokens for _, tokens in timed.values()))
            rates["SFT"].append(sft_tokens / sft_time)
            for name, (seconds, tokens) in timed.items():
                rates[name].append(tokens / seconds)
                ratios[name].append((seconds / tokens) / (sft_time / sft_tokens))
        first = next(iter(trainers.values()))
        print(f"\n{describe(first.device)}")
        print(
            f"compute dtype {first.compute_dtype} for PPO and SFT; {args.rollouts} rollouts x up to "
            f"{args.max_new_tokens} new tokens, four tiny networks; median of {args.repeats} interleaved repeats"
        )
        print(f"{'what':<28}{'tokens/s':>10}{'PPO/SFT per token':>19}{'repeats':>26}")
        print(f"{'SFT, packed':<28}{statistics.median(rates['SFT']):>10,.0f}{1.0:>18.2f}x")
        for name in trainers:
            each = " ".join(f"{r:.2f}" for r in ratios[name])
            print(
                f"{'PPO, ' + name:<28}{statistics.median(rates[name]):>10,.0f}"
                f"{statistics.median(ratios[name]):>18.2f}x{each:>26}"
            )
        print("goal: <= 4x at 2 epochs (the report's cost), <= 3x at 1 epoch")
        bare = alone(next(t for t in trainers.values() if not t.ppo.cfg.asynchronous))
        phase_table(trainers, 1, bare, statistics.median(rates["SFT"]))
        for trainer in trainers.values():
            trainer.close()


if __name__ == "__main__":
    main()
