"""``hcx sft RECIPE`` and ``hcx rm RECIPE``: the first two alignment stages (SPEC §5.1–§5.2)."""

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


def sft(recipe: Recipe, overrides: Overrides = None) -> None:
    """Fine-tune on conversations, loss on assistant turns only, from the sft: section."""
    from hcx.align.config import SftConfig
    from hcx.align.sft import sft as run_sft

    result = run_sft(load_section(recipe, "sft", SftConfig, overrides))
    typer.echo(
        json.dumps(
            {"step": result.step, "tokens": result.tokens_seen, **result.metrics},
            indent=1,
            ensure_ascii=False,
        )
    )


def rm(recipe: Recipe, overrides: Overrides = None) -> None:
    """Train the reward model (one epoch of Bradley-Terry comparisons) from the rm: section."""
    from hcx.align.config import RmConfig
    from hcx.align.rm import train_reward_model

    result = train_reward_model(load_section(recipe, "rm", RmConfig, overrides))
    typer.echo(
        json.dumps(
            {"step": result.step, "tokens": result.tokens_seen, **result.metrics},
            indent=1,
            ensure_ascii=False,
        )
    )
