"""The ``hcx`` command: one subcommand per registered stage (:mod:`hcx.stages`), then the pipeline, red-teaming and serving."""

from __future__ import annotations

import typer

from hcx.stages import STAGES, resolve

app = typer.Typer(
    name="hcx",
    help="Build a Korean-centric bilingual LLM the HyperCLOVA X way.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# ("module:attribute" holding a typer app or a command function, name, help): commands that are not stages.
_COMMANDS: list[tuple[str, str, str]] = [
    (
        "hcx.pipeline.cli:run",
        "run",
        "Run a recipe's stages as an event-driven pipeline, tracked in MLflow (SPEC §5.4).",
    ),
    (
        "hcx.pipeline.cli:app",
        "pipeline",
        "Evaluation workers, one pipeline stage, and state of a pipeline (SPEC §5.4).",
    ),
    ("hcx.model.cli:app", "model", "Grow a model's embeddings for an extended tokenizer (SPEC §3)."),
    ("hcx.redteam.cli:app", "redteam", "Red-team safety data collection (SPEC §7)."),
    ("hcx.serve.cli:serve", "serve", "Serve a checkpoint: OpenAI-compatible API and web chat (SPEC §8)."),
]


def _mount(target: str, name: str, help_text: str) -> None:
    sub = resolve(target)
    if isinstance(sub, typer.Typer):
        app.add_typer(sub, name=name, help=help_text)
    else:
        app.command(name=name, help=help_text)(sub)


for _stage in STAGES.values():
    _mount(_stage.cli, _stage.name, _stage.help)
for _target, _name, _help in _COMMANDS:
    _mount(_target, _name, _help)


@app.callback()
def main() -> None:
    """hcx: corpus, tokenizer, model, pretraining, alignment, pipeline, evaluation, serving."""


if __name__ == "__main__":
    app()
