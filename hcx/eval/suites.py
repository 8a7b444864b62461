"""Suites as data: named lists of tasks with shot counts and report categories (SPEC §6).

A suite is ``hcx/eval/suites/<name>.yaml``::

    description: one line
    tasks:
      - {task: hcx_kmmlu_criminal_law, num_fewshot: 5, category: korean}
      - {task: hcx_gsm8k_cot, num_fewshot: 8, category: math, metric: "exact_match,strict-match", limit: 50}

``metric`` picks the headline number from what lm-eval returns (default: ``acc``, else the
first ``exact_match``, else the first numeric metric); ``limit`` caps the items of that task.
A path to a YAML file works wherever a suite name does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from hcx.config import Section

SUITES_DIR = Path(__file__).parent / "suites"
Category = Literal[
    "korean",
    "english",
    "commonsense",
    "factual",
    "math",
    "code",
    "harmlessness",
    "chat",
    "multilingual",
    "safety",
    "bits_per_byte",
]


class UnknownSuiteError(KeyError):
    """A suite name with no ``suites/<name>.yaml`` (the message lists the known ones)."""

    def __str__(self) -> str:
        return str(self.args[0])


class SuiteTask(Section):
    task: str
    category: Category
    num_fewshot: int | None = Field(default=None, ge=0, description="None: the task config's own")
    limit: int | None = Field(default=None, ge=1)
    metric: str | None = None


class Suite(Section):
    name: str
    description: str = ""
    tasks: list[SuiteTask]


def suite_names() -> list[str]:
    return sorted(path.stem for path in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """The suite called ``name_or_path`` (a file in ``hcx/eval/suites``) or read from that YAML path."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = SUITES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UnknownSuiteError(
                f"unknown suite {str(name_or_path)!r}; known suites: {', '.join(suite_names())}"
            )
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    try:
        return Suite.model_validate({"name": path.stem, **raw})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: invalid suite: {problems}") from None
