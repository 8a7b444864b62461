"""``hcx pretrain RECIPE``: tokenize the corpus, train with FIM and the context schedule, export to HF."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hcx.config import RecipeError
from hcx.stages import STAGES


def app(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML with a pretrain: section")],
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="override a field, e.g. --set pretrain.steps=10")
    ] = None,
) -> None:
    """Pretrain the decoder (SPEC §4). Under torchrun every rank runs this same command."""
    from hcx.train.checkpoint import CheckpointError
    from hcx.train.parallel import MeshError, leave_process_group
    from hcx.train.shards import ShardError

    stage = STAGES["pretrain"]
    try:
        result = stage.execute(stage.load(recipe, overrides))
    except (RecipeError, ShardError, MeshError, CheckpointError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        rank = leave_process_group()
    if result.losses and rank == 0:
        k = max(1, min(10, len(result.losses) // 2))
        head, tail = result.losses[:k], result.losses[-k:]
        typer.echo(
            f"step {result.step}: loss (mean of first/last {len(tail)} steps) "
            f"{sum(head) / len(head):.4f} -> {sum(tail) / len(tail):.4f}, "
            f"{result.tokens_seen:,} tokens; checkpoints in {result.output_dir / 'checkpoints'}"
            + (f"; Hugging Face export in {result.hf_dir}" if result.hf_dir else "")
        )
