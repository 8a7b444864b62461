"""``hcx tokenizer``: train the morphology-aware BPE, extend a model's tokenizer, compare tokenizers (SPEC §2)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hcx.config import RecipeError, load_section
from hcx.tokenizer.config import TokenizerConfig

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)

Recipe = Annotated[Path, typer.Argument(help="Recipe YAML with a `tokenizer:` section.")]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override, e.g. --set tokenizer.vocab_size=8192 (repeatable)."),
]


def _config(recipe: Path, overrides: list[str] | None) -> TokenizerConfig:
    try:
        return load_section(recipe, "tokenizer", TokenizerConfig, overrides)
    except RecipeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command()
def train(recipe: Recipe, overrides: Overrides = None) -> None:
    """Train on the recipe's inputs and write tokenizer.json + transformers files to output_dir."""
    from hcx.tokenizer.corpus import TokenizerInputError
    from hcx.tokenizer.train import train_from_config

    config = _config(recipe, overrides)
    if config.extend is not None:
        console.print(
            "[red]error:[/red] this recipe's tokenizer section extends a base (`extend:`); run `hcx tokenizer extend`"
        )
        raise typer.Exit(2)
    try:
        out = train_from_config(config)
    except (TokenizerInputError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"saved {out}")


@app.command()
def extend(recipe: Recipe, overrides: Overrides = None) -> None:
    """Append `tokenizer.extend.new_tokens` morphology-aware tokens to a base model's tokenizer.json."""
    from hcx.tokenizer.corpus import TokenizerInputError
    from hcx.tokenizer.extend import extend_from_config, print_extension

    config = _config(recipe, overrides)
    try:
        extension, table = extend_from_config(config)
    except (TokenizerInputError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    print_extension(extension, table, Console())
    console.print(f"saved {config.output_dir}")


@app.command()
def stats(
    recipe: Recipe,
    overrides: Overrides = None,
    tokenizer: Annotated[
        list[str] | None,
        typer.Option("--tokenizer", "-t", help="NAME=DIR of another hcx tokenizer to compare (repeatable)."),
    ] = None,
) -> None:
    """Table 1: average tokens per held-out document per language, bytes per token, ratio to ours."""
    from hcx.tokenizer.stats import compare_from_config, print_table

    config = _config(recipe, overrides)
    extra = dict(config.stats.extra_tokenizers)
    for item in tokenizer or []:
        name, sep, path = item.partition("=")
        if not sep:
            console.print(f"[red]--tokenizer {item!r} must look like NAME=DIR[/red]")
            raise typer.Exit(2)
        extra[name] = path
    try:
        table = compare_from_config(config, extra)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    print_table(table, Console())
