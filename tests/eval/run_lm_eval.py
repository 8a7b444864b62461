"""Run hcx task configs through lm-eval's own ``simple_evaluate`` with its ``hf`` backend (E3 tests)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

TASKS_DIR = Path(__file__).resolve().parents[2] / "hcx" / "eval" / "tasks"
HUB_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hub_items"


@functools.cache
def task_manager(data_dir: Path) -> TaskManager:
    """Our task configs only: indexing lm-eval's own thousands of configs takes many seconds."""
    return TaskManager(
        include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_dir": str(data_dir)}
    )


def load_tasks(names: list[str], data_dir: Path) -> dict[str, Any]:
    """Task objects as lm-eval builds them from our YAML (items loaded, no model)."""
    return task_manager(data_dir).load(names)["tasks"]


def evaluate_hf(
    model_dir: Path, tasks: list[str], data_dir: Path, *, limit: int, max_gen_toks: int = 8
) -> dict:
    """Score the HF export ``model_dir`` on ``tasks`` (first ``limit`` items each), samples logged."""
    return simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_dir},dtype=float32",
        tasks=tasks,
        task_manager=task_manager(data_dir),
        limit=limit,
        batch_size=8,
        device="cpu",
        gen_kwargs=f"max_gen_toks={max_gen_toks}",
        bootstrap_iters=0,
        log_samples=True,
    )
