"""``hcx sft``, ``hcx rm`` and ``hcx ppo``: the alignment stages (SPEC §5.1–§5.3), as :mod:`hcx.stages` registers them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hcx.stages import STAGES

Recipe = Annotated[Path, typer.Argument(help="recipe YAML")]
Overrides = Annotated[
    list[str] | None, typer.Option("--set", help="override a field, e.g. --set sft.epochs=1")
]


def _run(recipe: Path, name: str, overrides: list[str] | None) -> None:
    from hcx.train.parallel import leave_process_group

    stage = STAGES[name]
    try:
        result = stage.execute(stage.load(recipe, overrides))
    finally:
        rank = leave_process_group()
    if rank == 0:
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
