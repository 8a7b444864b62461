"""What each stage kind runs, which config it reads, and which paths it consumes and produces.

A stage is the stage's own ``hcx`` command on the same recipe (so a pipeline stage and a
hand-run stage are the same thing and resume the same way). Inputs and outputs are config
fields holding paths; the planner uses them to reject a recipe whose stage would read
something that neither exists nor is produced by a stage it needs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class StageKindInfo:
    command: tuple[str, ...]
    config: str  # "module:Class"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    trains: bool = False  # writes train_log.jsonl and checkpoint events under output_dir
    # (field, folder): where the stage exports when the field is unset, as its trainer does.
    default_exports: tuple[tuple[str, str], ...] = ()

    def config_model(self) -> type[BaseModel]:
        module, _, name = self.config.partition(":")
        return getattr(importlib.import_module(module), name)


KINDS: dict[str, StageKindInfo] = {
    "data": StageKindInfo(("data", "build"), "hcx.data.config:DataConfig", (), ("output_dir",)),
    "tokenizer": StageKindInfo(
        ("tokenizer", "train"), "hcx.tokenizer.config:TokenizerConfig", ("inputs",), ("output_dir",)
    ),
    "pretrain": StageKindInfo(
        ("pretrain",),
        "hcx.train.config:PretrainConfig",
        ("corpus", "tokenizer"),
        ("output_dir", "export_hf"),
        trains=True,
    ),
    "sft": StageKindInfo(
        ("sft",),
        "hcx.align.config:SftConfig",
        ("init", "tokenizer"),
        ("output_dir", "export_hf"),
        trains=True,
        default_exports=(("export_hf", "hf"),),
    ),
    "rm": StageKindInfo(
        ("rm",),
        "hcx.align.config:RmConfig",
        ("init", "tokenizer"),
        ("output_dir", "export_dir"),
        trains=True,
        default_exports=(("export_dir", "final"),),
    ),
    "ppo": StageKindInfo(
        ("ppo",),
        "hcx.align.config:PpoConfig",
        ("policy", "reward_model"),
        ("output_dir", "export_hf"),
        trains=True,
        default_exports=(("export_hf", "hf"),),
    ),
    "eval": StageKindInfo(
        ("eval", "recipe"), "hcx.eval.config:EvalConfig", ("checkpoints",), ("output_dir",)
    ),
}


def field_paths(config: BaseModel, names: tuple[str, ...]) -> dict[str, list[str]]:
    """``{field: [path, ...]}`` for the named fields that are set (strings, lists or mappings)."""
    out: dict[str, list[str]] = {}
    for name in names:
        value: Any = getattr(config, name, None)
        if value is None:
            continue
        if isinstance(value, str):
            out[name] = [value]
        elif isinstance(value, dict):
            out[name] = [str(v) for v in value.values()]
        else:
            out[name] = [str(v) for v in value]
    return out


def produced_paths(config: BaseModel, info: StageKindInfo) -> list[str]:
    paths = [p for ps in field_paths(config, info.outputs).values() for p in ps]
    output_dir = getattr(config, "output_dir", None)
    for name, folder in info.default_exports:
        if getattr(config, name, None) is None and output_dir:
            paths.append(f"{output_dir}/{folder}")
    return paths
