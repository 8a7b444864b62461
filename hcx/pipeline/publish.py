"""One stage as ``hcx run`` launches it: the registered run function, with checkpoints published.

The pipeline hands a training stage its publish step as the ``on_checkpoint`` callback (SPEC
§5.4), so training code knows nothing of the store: :class:`Publisher` records each complete
checkpoint as an event (with a pending evaluation when the stage's checkpoints are evaluated),
and evaluation workers claim those events. Under torchrun every rank builds the callback, but
the checkpointer calls it on rank 0 only, so each checkpoint is published once.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hcx.pipeline.config import PipelineConfig
from hcx.pipeline.store import Store

if TYPE_CHECKING:
    from hcx.train.checkpoint import CheckpointSaved


def snapshot(checkpoint: Path, folder: Path) -> Path:
    """Hard-link a checkpoint aside so pruning cannot delete it before a worker evaluates it.

    Files are copied where hard links are impossible (another filesystem); the copy appears
    under its final name only when complete, so a worker never reads a partial snapshot.
    """
    target = folder / checkpoint.name
    if not target.exists():
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)

        def link(src: str, dst: str) -> None:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        shutil.copytree(checkpoint, tmp, copy_function=link)
        os.replace(tmp, target)
    return target


@dataclasses.dataclass
class Publisher:
    """The ``on_checkpoint`` callback of a pipeline stage: each saved checkpoint becomes a store event.

    With ``evaluate`` the event points at a snapshot under ``snapshots/<stage>`` (the stage
    keeps pruning its own checkpoints) and carries a pending evaluation; without it the event
    only records progress (the reward model's checkpoints, stages left out of evaluation).
    """

    store_url: str
    stage: str
    evaluate: bool
    snapshots: Path
    _store: Store | None = dataclasses.field(default=None, init=False, repr=False)

    def __call__(self, event: CheckpointSaved) -> None:
        path = event.path
        if self.evaluate:
            path = str(snapshot(Path(event.path), self.snapshots / self.stage))
        if self._store is None:
            self._store = Store(self.store_url)
        self._store.publish(
            self.stage, path, event.step, event.time, event.tokens_seen, event.loss, evaluate=self.evaluate
        )


def publisher(cfg: PipelineConfig, name: str) -> Publisher:
    """The callback for stage ``name`` of this pipeline, as the driver's plan would evaluate it."""
    from hcx.pipeline.plan import evaluated_stages

    evaluate = cfg.evaluation.workers > 0 and name in evaluated_stages(cfg)
    return Publisher(cfg.store_url(), name, evaluate, (Path(cfg.run_dir) / "snapshots").resolve())


def run_stage(recipe: str | Path, name: str, overrides: list[str] | None = None) -> Any:
    """Run stage ``name`` of the recipe's pipeline with the config the planner validated.

    The stage's section and ``set`` come from ``pipeline.stages.<name>``, after ``overrides``
    (those of ``hcx run --set``), exactly as :func:`hcx.pipeline.plan.make_plan` loads it.
    Returns whatever the registered run function returns.
    """
    from hcx.config import RecipeError, load_section
    from hcx.stages import STAGES

    cfg = load_section(recipe, "pipeline", PipelineConfig, overrides)
    spec = cfg.stages.get(name)
    if spec is None:
        raise RecipeError(f"{recipe}:pipeline.stages: no stage {name!r}; stages: {', '.join(cfg.stages)}")
    stage = STAGES.get(str(spec.kind))
    if stage is None:
        raise RecipeError(f"{recipe}:pipeline.stages.{name}: unknown stage kind {spec.kind!r}")
    from hcx.pipeline.plan import stage_config

    config = stage_config(recipe, spec, overrides)
    if stage.trains:
        return stage.execute(config, on_checkpoint=publisher(cfg, name))
    return stage.execute(config)


def summary(result: Any) -> Any:
    """A run function's result as JSON-ready values, for the stage's log (long lists left out)."""
    if isinstance(result, Path):
        return str(result)
    if isinstance(result, dict):
        return {str(k): summary(v) for k, v in result.items()}
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return {
            f.name: summary(getattr(result, f.name))
            for f in dataclasses.fields(result)
            if not isinstance(getattr(result, f.name), list | tuple)
        }
    if result is None or isinstance(result, str | int | float | bool):
        return result
    return str(result)
