"""The one registry of hcx's stages: the ``hcx`` command, the pipeline and the alignment commands read it.

Each :class:`Stage` says how a person runs the stage (its ``hcx`` command and help), what it
reads (recipe section and config class), what library function does the work, and what the
pipeline needs to plan it (config fields naming its input and output paths, whether it trains).
Targets are ``"module:attribute"`` strings resolved on use, so importing this module imports no
stage's code; training code never sees the pipeline, which passes its publish step to a run
function as the ``on_checkpoint`` callback (SPEC §5.4).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from hcx.train.checkpoint import CheckpointSaved


def resolve(target: str) -> Any:
    """The object a ``"module:attribute"`` string names (importing the module now)."""
    module, _, attribute = target.partition(":")
    if not attribute:
        raise ValueError(f"{target!r} must look like 'module:attribute'")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Stage:
    """One stage of building the model, as the CLI and the pipeline both see it.

    ``run`` names ``function(config, on_checkpoint=callback)`` for stages that train (the
    callback receives each complete checkpoint's ``CheckpointSaved`` on rank 0) and
    ``function(config)`` for the others, which save no checkpoints.
    """

    name: str  # the pipeline kind and the first word of its hcx command
    help: str
    cli: str  # "module:attribute": a typer sub-app or a command function mounted as `hcx <name>`
    config: str  # "module:Class" of the recipe section
    run: str  # "module:function" doing the stage's work
    subcommand: str | None = None  # the sub-app's command that runs the stage on a recipe
    section: str | None = None  # default: the name
    inputs: tuple[str, ...] = ()  # config fields holding paths the stage reads
    outputs: tuple[str, ...] = ()  # config fields holding paths the stage writes
    # (field, folder under output_dir): where the stage exports when the field is unset.
    default_exports: tuple[tuple[str, str], ...] = ()
    trains: bool = False  # writes train_log.jsonl and checkpoints under output_dir
    evaluable: bool = False  # its checkpoints are language models the evaluation suites can score

    @property
    def command(self) -> tuple[str, ...]:
        """The ``hcx`` command line (before the recipe) that runs this stage by hand."""
        return (self.name, self.subcommand) if self.subcommand else (self.name,)

    @property
    def recipe_section(self) -> str:
        return self.section or self.name

    def config_model(self) -> type[BaseModel]:
        return resolve(self.config)

    def load(
        self, recipe: str | Path, overrides: list[str] | None = None, section: str | None = None
    ) -> BaseModel:
        """The stage's config from ``recipe`` (its own section unless ``section`` names another)."""
        from hcx.config import load_section

        return load_section(recipe, section or self.recipe_section, self.config_model(), overrides)

    def execute(
        self, config: BaseModel, on_checkpoint: Callable[[CheckpointSaved], None] | None = None
    ) -> Any:
        """Run the stage on ``config``; ``on_checkpoint`` is refused by stages that save no checkpoints."""
        function = resolve(self.run)
        if self.trains:
            return function(config, on_checkpoint=on_checkpoint)
        if on_checkpoint is not None:
            raise ValueError(f"stage {self.name!r} saves no checkpoints; it takes no on_checkpoint callback")
        return function(config)


_STAGES = (
    Stage(
        "data",
        "Build the pretraining corpus (SPEC §1).",
        cli="hcx.data.cli:app",
        config="hcx.data.config:DataConfig",
        run="hcx.data.pipeline:build_corpus",
        subcommand="build",
        outputs=("output_dir",),
    ),
    Stage(
        "tokenizer",
        "Train and compare the morphology-aware byte-level BPE tokenizer; extend a model's (SPEC §2).",
        cli="hcx.tokenizer.cli:app",
        config="hcx.tokenizer.config:TokenizerConfig",
        run="hcx.tokenizer.build:build_tokenizer",
        subcommand="train",
        inputs=("inputs",),
        outputs=("output_dir",),
    ),
    Stage(
        "pretrain",
        "Pretrain the decoder with FIM and the two-stage context schedule (SPEC §3-§4).",
        cli="hcx.train.cli:app",
        config="hcx.train.config:PretrainConfig",
        run="hcx.train.pretrain:pretrain",
        inputs=("corpus", "tokenizer"),
        outputs=("output_dir", "export_hf"),
        trains=True,
        evaluable=True,
    ),
    Stage(
        "sft",
        "Supervised fine-tuning on assistant turns (SPEC §5.1).",
        cli="hcx.align.cli:sft",
        config="hcx.align.config:SftConfig",
        run="hcx.align.sft:sft",
        inputs=("init", "tokenizer"),
        outputs=("output_dir", "export_hf"),
        default_exports=(("export_hf", "hf"),),
        trains=True,
        evaluable=True,
    ),
    Stage(
        "rm",
        "Train the reward model with the Bradley-Terry loss (SPEC §5.2).",
        cli="hcx.align.cli:rm",
        config="hcx.align.config:RmConfig",
        run="hcx.align.rm:train_reward_model",
        inputs=("init", "tokenizer"),
        outputs=("output_dir", "export_dir"),
        default_exports=(("export_dir", "final"),),
        trains=True,
    ),
    Stage(
        "ppo",
        "RLHF with PPO: policy, reference, reward and value networks (SPEC §5.3).",
        cli="hcx.align.cli:ppo",
        config="hcx.align.config:PpoConfig",
        run="hcx.align.ppo:ppo",
        inputs=("policy", "reward_model"),
        outputs=("output_dir", "export_hf"),
        default_exports=(("export_hf", "hf"),),
        trains=True,
        evaluable=True,
    ),
    Stage(
        "eval",
        "Evaluate checkpoints on the report's benchmarks, report and radar (SPEC §6).",
        cli="hcx.eval.cli:app",
        config="hcx.eval.config:EvalConfig",
        run="hcx.eval.api:evaluate_recipe",
        subcommand="recipe",
        inputs=("checkpoints",),
        outputs=("output_dir",),
    ),
)

STAGES: dict[str, Stage] = {stage.name: stage for stage in _STAGES}
