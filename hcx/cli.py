"""The ``hcx`` command. Each stage's package contributes its own sub-app from ``<stage>/cli.py``."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="hcx",
    help="Build a Korean-centric bilingual LLM the HyperCLOVA X way.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# (module, name, help). A stage appears here once it has real commands.
_STAGES: list[tuple[str, str, str]] = [
    ("hcx.data.cli", "data", "Build the pretraining corpus (SPEC §1)."),
]

for module_name, name, help_text in _STAGES:
    module = importlib.import_module(module_name)
    sub = module.app
    if isinstance(sub, typer.Typer):
        app.add_typer(sub, name=name, help=help_text)
    else:
        app.command(name=name, help=help_text)(sub)


@app.callback()
def main() -> None:
    """hcx: corpus, tokenizer, model, pretraining, alignment, pipeline, evaluation, serving."""


if __name__ == "__main__":
    app()
