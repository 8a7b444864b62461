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

# ("module" or "module:attribute" holding a typer app or a command function, name, help).
# A stage appears here once it has real commands.
_STAGES: list[tuple[str, str, str]] = [
    ("hcx.data.cli", "data", "Build the pretraining corpus (SPEC §1)."),
    (
        "hcx.tokenizer.cli",
        "tokenizer",
        "Train and compare the morphology-aware byte-level BPE tokenizer (SPEC §2).",
    ),
    (
        "hcx.train.cli",
        "pretrain",
        "Pretrain the decoder with FIM and the two-stage context schedule (SPEC §3-§4).",
    ),
    ("hcx.align.cli:sft", "sft", "Supervised fine-tuning on assistant turns (SPEC §5.1)."),
    ("hcx.align.cli:rm", "rm", "Train the reward model with the Bradley-Terry loss (SPEC §5.2)."),
    ("hcx.align.cli:ppo", "ppo", "RLHF with PPO: policy, reference, reward and value networks (SPEC §5.3)."),
    ("hcx.eval.cli", "eval", "Evaluate checkpoints on the report's benchmarks, report and radar (SPEC §6)."),
    (
        "hcx.pipeline.cli:run",
        "run",
        "Run a recipe's stages as an event-driven pipeline, tracked in MLflow (SPEC §5.4).",
    ),
    ("hcx.pipeline.cli", "pipeline", "Evaluation workers and state of a pipeline (SPEC §5.4)."),
    ("hcx.redteam.cli", "redteam", "Red-team safety data collection (SPEC §7)."),
    ("hcx.serve.cli:serve", "serve", "Serve a checkpoint: OpenAI-compatible API and web chat (SPEC §8)."),
]

for target, name, help_text in _STAGES:
    module_name, _, attribute = target.partition(":")
    sub = getattr(importlib.import_module(module_name), attribute or "app")
    if isinstance(sub, typer.Typer):
        app.add_typer(sub, name=name, help=help_text)
    else:
        app.command(name=name, help=help_text)(sub)


@app.callback()
def main() -> None:
    """hcx: corpus, tokenizer, model, pretraining, alignment, pipeline, evaluation, serving."""


if __name__ == "__main__":
    app()
