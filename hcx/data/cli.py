"""``hcx data``: build the pretraining corpus, or scrub PII from a JSONL file (SPEC §1)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from tqdm import tqdm

from hcx.config import RecipeError
from hcx.data.bad_records import BadInputError
from hcx.data.config import load_data_config
from hcx.data.pii import scrub

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)
console = Console(stderr=True)

Overrides = Annotated[
    list[str] | None, typer.Option("--set", help="Override a recipe value, e.g. --set data.executor.tasks=4")
]


@app.command()
def build(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe with a `data:` section")],
    overrides: Overrides = None,
    fresh: Annotated[
        bool, typer.Option(help="Discard a previous (partial) build instead of resuming it")
    ] = False,
) -> None:
    """Read, filter, scrub, deduplicate, upsample and mix the sources into OUTPUT_DIR/*.jsonl.gz."""
    from hcx.data.pipeline import StaleWorkError, build_corpus

    try:
        config = load_data_config(recipe, overrides)
        out = build_corpus(config, fresh=fresh, console=console)
    except (RecipeError, BadInputError, StaleWorkError, FileNotFoundError, ValueError) as exc:
        _error(exc)
    summary = out / "summary.md"
    if summary.exists():
        console.print(summary.read_text(), markup=False, highlight=False)
    console.print(f"[green]corpus written to {out}/*.jsonl.gz[/green] (stats.json, summary.md)")


@app.command("scrub-pii")
def scrub_pii(
    input_path: Annotated[Path, typer.Argument(help="JSONL with a text field per line")],
    output_path: Annotated[Path, typer.Argument(help="Where to write the scrubbed JSONL")],
    text_field: Annotated[str, typer.Option(help="Name of the text field")] = "text",
) -> None:
    """Replace PII in each line's text with typed placeholders ([PHONE], [RRN], ...); other fields are kept."""
    counts: Counter[str] = Counter()
    try:
        with input_path.open("rb") as src, output_path.open("w", encoding="utf-8") as dst:
            for line_no, raw in enumerate(tqdm(src, desc="scrub-pii", unit="line"), start=1):
                record = _parse_line(input_path, line_no, raw, text_field)
                record[text_field], found = scrub(record[text_field])
                counts.update(found)
                dst.write(json.dumps(record, ensure_ascii=False) + "\n")
    except BadInputError as exc:
        _error(exc)
    found = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no PII"
    console.print(f"scrubbed {output_path}: {found}", markup=False)


def _error(exc: Exception) -> NoReturn:
    console.print(f"error: {exc}", style="red", markup=False, highlight=False)
    raise typer.Exit(1)


def _parse_line(path: Path, line_no: int, raw: bytes, text_field: str) -> dict:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}:{line_no}: invalid UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path}:{line_no}: malformed JSON ({exc.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
        raise BadInputError(f"{path}:{line_no}: no string field {text_field!r}")
    return record
