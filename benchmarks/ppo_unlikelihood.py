"""Does sequence-level unlikelihood lower repetition in PPO, end to end? (SPEC §5.3)

The report adds sequence-level unlikelihood to PPO to suppress the repetition transformers
fall into. This runs PPO twice, identical but for ``unlikelihood_weight``: same seed, same
prompts, same per-request sampling seeds, synchronous rollouts (so the two runs differ only
through the loss), with the tiny recipe's reward model (``bash scripts/run.sh`` first).

The term acts only on rollout tokens that repeat a 4-gram of their own response, so the
rollouts must repeat for it to do anything. The tiny SFT model does not (its answers are a
few tokens long, with no repeated 4-gram at any temperature); the tiny *pretrained* model
does, as small language models do under low-temperature sampling. So by default the policy
(and reference) is the pretrained model and the rollouts sample at ``ppo.temperature`` 0.2,
with every log-probability (behaviour, learner, reference, KL) taken of that tempered
distribution. For each run it prints

- the repeated-4-gram rate of the PPO rollouts: first iteration, last iteration and mean of
  the last ``--last`` iterations;
- the repeated-4-gram rate of greedy generations on the held-out prompts, before PPO and after;
- the last iteration's reward, KL and entropy, and the mean unlikelihood loss,

and the ratio with / without unlikelihood of each rate.

    .venv/bin/python benchmarks/ppo_unlikelihood.py [--iterations 20] [--weight 0.1] [--lr 1e-4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from hcx.align.batching import right_pad
from hcx.align.config import PpoConfig
from hcx.align.losses import repeat_rate
from hcx.align.ppo import PpoTrainer
from hcx.config import load_section
from hcx.infer.engine import Engine
from hcx.infer.sampling import SamplingParams

RATES = (
    "rollout first",
    "rollout last",
    "rollout mean of last",
    "held-out greedy before",
    "held-out greedy after",
)


def greedy_repeat_rate(trainer: PpoTrainer, ngram: int) -> tuple[float, float]:
    """Repeated-n-gram rate and mean length of greedy answers to the held-out prompts."""
    engine = Engine(trainer.ppo.policy, trainer.ppo.tokenizer, trainer.ppo.engine_cfg)
    params = SamplingParams(max_new_tokens=trainer.cfg.max_new_tokens, temperature=0.0)
    responses = [c.token_ids for c in engine.generate(trainer.ppo.held_out, params)]
    lengths = torch.tensor([len(r) for r in responses])
    tokens = right_pad([r or [0] for r in responses], 0)
    mask = (torch.arange(tokens.shape[1])[None] < lengths[:, None]).float()
    return repeat_rate(tokens, mask, ngram), float(lengths.float().mean())


def run(args: argparse.Namespace, weight: float, out: Path) -> dict[str, float]:
    overrides = [
        f"ppo.policy={args.policy}",
        f"ppo.reward_model={args.reward_model}",
        f"ppo.reward={args.reward}",
        f"ppo.output_dir={out}",
        f"ppo.steps={args.iterations}",
        f"ppo.rollouts_per_iteration={args.rollouts}",
        f"ppo.max_new_tokens={args.max_new_tokens}",
        f"ppo.temperature={args.temperature}",
        f"ppo.held_out={args.held_out}",
        f"ppo.unlikelihood_weight={weight}",
        f"ppo.optim.lr={args.lr}",
        "ppo.asynchronous=false",
        "ppo.eval_every=100000",
        "ppo.checkpoint.every=100000",
        "ppo.early_stop.max_kl=null",
        "ppo.early_stop.max_length_drift=null",
        "ppo.early_stop.patience=null",
    ]
    cfg = load_section(args.recipe, "ppo", PpoConfig, overrides)
    trainer = PpoTrainer(cfg)
    before, before_length = greedy_repeat_rate(trainer, cfg.unlikelihood_ngram)
    trainer.train()
    after, after_length = greedy_repeat_rate(trainer, cfg.unlikelihood_ngram)
    trainer.close()
    rates = [h["repeat_rate"] for h in trainer.ppo.history]
    return {
        "rollout first": rates[0],
        "rollout last": rates[-1],
        "rollout mean of last": statistics.mean(rates[-args.last :]),
        "held-out greedy before": before,
        "held-out greedy after": after,
        "held-out greedy length after": after_length,
        "unlikelihood loss, mean": statistics.mean(h["ul_loss"] for h in trainer.ppo.history),
        "reward last": trainer.ppo.history[-1]["reward"],
        "kl last": trainer.ppo.history[-1]["kl"],
        "entropy last": trainer.ppo.history[-1]["entropy"],
        "_before_length": before_length,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", type=Path, default=Path("recipes/tiny.yaml"))
    parser.add_argument(
        "--policy", type=Path, default=Path("runs/tiny/hf"), help="the pretrained model: it repeats itself"
    )
    parser.add_argument("--reward-model", type=Path, default=Path("runs/tiny/rm/final"))
    parser.add_argument(
        "--reward",
        choices=["model", "hangul", "brevity"],
        default="model",
        help="ppo.reward (the RM by default)",
    )
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--rollouts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.2, help="ppo.temperature of the rollouts")
    parser.add_argument("--held-out", type=int, default=32)
    parser.add_argument(
        "--weight", type=float, default=0.1, help="unlikelihood weight of the second run (hcx's default)"
    )
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--last", type=int, default=5, help="iterations averaged at the end")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        results = {w: run(args, w, Path(tmp) / f"ul{w}") for w in (0.0, args.weight)}
    without, with_ul = results[0.0], results[args.weight]
    print(
        f"\nPPO on {args.policy}, reward {args.reward} ({args.reward_model}): {args.iterations} iterations x {args.rollouts} "
        f"rollouts, up to {args.max_new_tokens} new tokens, lr {args.lr}; "
        f"{args.held_out} held-out prompts, greedy"
    )
    print(f"held-out greedy length before PPO: {without['_before_length']:.1f} tokens")
    header = f"unlikelihood {args.weight}"
    print(f"{'':<34}{'no unlikelihood':>16}{header:>18}{'ratio':>8}")
    for key, value in without.items():
        if key.startswith("_"):
            continue
        other = with_ul[key]
        ratio = f"{other / value:>8.2f}" if value else f"{'n/a':>8}"
        print(f"{key:<34}{value:>16.4f}{other:>18.4f}{ratio if key in RATES else ''}")
    print("rates: share of response tokens that complete a 4-gram already in the same response")


if __name__ == "__main__":
    main()
