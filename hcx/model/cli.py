"""``hcx model``: operations on a trained model's weights (SPEC §3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def extend(
    model: Annotated[Path, typer.Argument(help="Hugging Face model directory or hcx checkpoint.")],
    tokenizer: Annotated[Path, typer.Argument(help="Extended tokenizer directory (`hcx tokenizer extend`).")],
    out: Annotated[Path, typer.Argument(help="Where to write the grown model (Hugging Face format).")],
    base_tokenizer: Annotated[
        Path | None, typer.Option(help="The model's tokenizer before extension; default: the model's own.")
    ] = None,
    init: Annotated[
        str, typer.Option(help="mean: average of the sub-token rows; random: the control.")
    ] = "mean",
    seed: Annotated[int, typer.Option(help="Seed of --init random.")] = 0,
    dtype: Annotated[
        str, typer.Option(help="float32, bfloat16 or float16: weights as held and saved.")
    ] = "float32",
) -> None:
    """Grow the input and output embeddings for an extended tokenizer (EEVE-Korean style)."""
    from hcx.model.extend import extend_model
    from hcx.model.load import DTYPES, ModelLoadError

    if init not in ("mean", "random"):
        console.print(f"[red]--init {init!r}: choose mean or random[/red]")
        raise typer.Exit(2)
    if dtype not in DTYPES:
        console.print(f"[red]--dtype {dtype!r}: choose one of {', '.join(DTYPES)}[/red]")
        raise typer.Exit(2)
    try:
        grown = extend_model(
            model, tokenizer, out, base_tokenizer=base_tokenizer, init=init, seed=seed, dtype=DTYPES[dtype]
        )
    except (ModelLoadError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(
        f"{len(grown.sub_tokens):,} new tokens ({grown.init} init, {grown.reused_rows:,} in spare padded rows); "
        f"embedding rows {grown.rows_before:,} → {grown.rows_after:,}; saved {out}"
    )
