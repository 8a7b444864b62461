"""Wall time of a PPO iteration against SFT on the same number of tokens, same model (SPEC §5.3).

The report's PPO cost about 4x SFT; it parallelised rollouts asynchronously and used
continuous batching for the four networks' inference. This runs, in one process on the
tiny recipe's models (``bash scripts/run.sh`` first), in one compute dtype for both stages:

- PPO iterations with the reward model, synchronous (generate, then learn) and asynchronous
  (the next batch generates while the learner trains), ``ppo_epochs`` 1 (as DeepSpeed-Chat
  and OpenRLHF default to) and 2 (hcx's default), each after a warm-up iteration;
- SFT steps on packed shared conversations until they have seen as many tokens as that
  repeat's PPO iterations processed (prompt + response tokens of their rollouts).

Each configuration runs in a process of its own, with its own SFT trainer, as a PPO run does:
measured in one process, the trainers slowed each other (after the asynchronous ones had run,
every phase of the synchronous one took 20-25 % longer, and SFT too), so the ratio depended on
what ran before. Within a process, PPO and SFT repeats interleave so that machine noise hits
both alike; the ratio is of seconds per token, the median over repeats. Then the phase table:
each phase's seconds per iteration (from the learner's own clock, ``phases`` in the iteration
record) beside the same networks timed alone on the same rollouts in the learner's
similar-length chunks (``alone``, measured in the synchronous 1-epoch process): the forwards
and backwards, and AdamW's step, with nothing around them. Generation's ``alone`` is one
teacher-forced forward of the policy over the rollouts: the arithmetic of decoding without its
step-by-step overhead, a floor no autoregressive engine reaches.

    .venv/bin/python benchmarks/ppo_vs_sft.py [--dtype auto] [--repeats 3] [--iterations 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
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


def phase_table(runs: dict[str, dict], bare: dict[str, float]) -> None:
    """Seconds per iteration of each phase, per configuration, beside the networks alone; then the
    floors: what an iteration would cost, as a multiple of SFT per token, if every phase ran as
    fast as alone (with generation's teacher-forced floor, and with its measured time)."""
    means = {name: run["phases"] for name, run in runs.items()}
    epochs = max(run["epochs"] for run in runs.values())
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
        for n, run in runs.items():
            seconds = generation(n) + scoring + run["epochs"] * learning
            cells.append(f"{seconds / (run['tokens'] / run['sft_rate']):>15.2f}x")
        print(f"{label:<44}" + "".join(cells))


def measure(args: argparse.Namespace, epochs: int, asynchronous: bool) -> dict:
    """One configuration against SFT, repeats interleaved, in this process."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = ppo_trainer(args, Path(tmp) / "ppo", asynchronous, epochs)
        sft = sft_trainer(args, Path(tmp) / "sft")
        ratios, rates, sft_rates = [], [], []
        for _ in range(args.repeats):
            seconds, tokens = time_ppo(trainer, args.iterations)
            sft_time, sft_tokens = time_sft(sft, tokens)
            rates.append(tokens / seconds)
            sft_rates.append(sft_tokens / sft_time)
            ratios.append((seconds / tokens) / (sft_time / sft_tokens))
        history = trainer.ppo.history[1:]  # after the warm-up iteration
        keys = {k for h in history for k in h["phases"]}
        phases = {k: sum(h["phases"].get(k, 0.0) for h in history) / len(history) for k in keys}
        phases["iteration"] = statistics.mean(h["seconds"] for h in history)
        result = {
            "epochs": epochs,
            "machine": describe(trainer.device),
            "dtype": str(trainer.compute_dtype),
            "ratios": ratios,
            "rate": statistics.median(rates),
            "sft_rate": statistics.median(sft_rates),
            "tokens": statistics.mean(h["sequence_tokens"] for h in history),
            "phases": phases,
        }
        if not asynchronous and epochs == 1:
            result["alone"] = alone(trainer)
        trainer.close()
    return result


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
    parser.add_argument("--one", nargs=2, metavar=("EPOCHS", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:  # a configuration's own process: its figures as JSON on the last line
        print(json.dumps(measure(args, int(args.one[0]), args.one[1] == "async")))
        return
    runs: dict[str, dict] = {}
    for epochs in sorted(set(args.ppo_epochs)):
        for mode in ("sync", "async"):
            command = [sys.executable, __file__, *forwarded(args), "--one", str(epochs), mode]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{epochs} ep {mode} failed:\n{done.stderr[-4000:]}")
            runs[f"{epochs} ep {mode}"] = json.loads(done.stdout.strip().splitlines()[-1])
    first = next(iter(runs.values()))
    print(f"\n{first['machine']}")
    print(
        f"compute dtype {first['dtype']} for PPO and SFT; {args.rollouts} rollouts x up to "
        f"{args.max_new_tokens} new tokens, four tiny networks; each configuration in its own process "
        f"with its own SFT, median of {args.repeats} interleaved repeats"
    )
    print(f"{'what':<20}{'PPO tokens/s':>13}{'SFT tokens/s':>13}{'PPO/SFT per token':>19}{'repeats':>22}")
    for name, run in runs.items():
        each = " ".join(f"{r:.2f}" for r in run["ratios"])
        print(
            f"{'PPO, ' + name:<20}{run['rate']:>13,.0f}{run['sft_rate']:>13,.0f}"
            f"{statistics.median(run['ratios']):>18.2f}x{each:>22}"
        )
    print("goal: <= 4x at 2 epochs (the report's cost), <= 3x at 1 epoch")
    bare = next((run["alone"] for run in runs.values() if "alone" in run), None)
    if bare is not None:
        phase_table(runs, bare)


def forwarded(args: argparse.Namespace) -> list[str]:
    """The command-line options a configuration's process needs."""
    return [
        *("--policy", str(args.policy), "--reward-model", str(args.reward_model)),
        *("--rollouts", str(args.rollouts), "--max-new-tokens", str(args.max_new_tokens)),
        *("--iterations", str(args.iterations), "--repeats", str(args.repeats)),
        *("--threads", str(args.threads), "--dtype", args.dtype),
    ]


if __name__ == "__main__":
    main()
