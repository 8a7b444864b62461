"""``hcx sft``, ``hcx rm`` and ``hcx ppo``: the alignment stages (SPEC §5.1–§5.3), each from its recipe section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hcx.config import load_section

Recipe = Annotated[Path, typer.Argument(help="recipe YAML")]
Overrides = Annotated[
    list[str] | None, typer.Option("--set", help="override a field, e.g. --set sft.epochs=1")
]


def _run(recipe: Path, section: str, overrides: list[str] | None) -> None:
    from hcx.align.config import PpoConfig, RmConfig, SftConfig
    from hcx.align.ppo import ppo
    from hcx.align.rm import train_reward_model
    from hcx.align.sft import sft as run_sft

    model, run = {"sft": (SftConfig, run_sft), "rm": (RmConfig, train_reward_model), "ppo": (PpoConfig, ppo)}[
        section
    ]
    result = run(load_section(recipe, section, model, overrides))
    summary = {"step": result.step, "tokens": result.tokens_seen, **result.metrics}
    typer.echo(json.dumps(summary, indent=1, ensure_ascii=False))


def sft(recipe: Recipe, overrides: Overrides = None) -> None:
    """Fine-tune on conversations, loss on assistant turns only, from the sft: section."""
    _run(recipe, "sft", overrides)


def rm(recipe: Recipe, overrides: Overrides = None) -> None:
    """Train the reward model (one epoch of Bradley-Terry comparisons) from the rm: section."""
    _run(recipe, "rm", overrides)


def ppo(recipe: Recipe, overrides: Overrides = None) -> None:
    """RLHF with PPO and the four networks, from the ppo: section (SPEC §5.3)."""
    _run(recipe, "ppo", overrides)
