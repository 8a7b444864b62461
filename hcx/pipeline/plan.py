"""Turn a recipe into a validated stage graph before anything starts.

Rejected up front, with the offending key named: an unknown stage kind, a ``needs`` naming no
stage, a cycle, a stage section that does not validate, an input path that neither exists nor
is produced by a stage it (transitively) needs, and resources no executor slot can satisfy.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hcx.config import RecipeError, load_section
from hcx.pipeline.config import PipelineConfig, StageSpec
from hcx.stages import STAGES, Stage


@dataclass
class PlannedStage:
    name: str
    spec: StageSpec
    config: BaseModel
    needs: list[str]
    outputs: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return str(self.spec.kind)

    @property
    def registered(self) -> Stage:
        return STAGES[self.kind]

    @property
    def trains(self) -> bool:
        return self.registered.trains

    @property
    def evaluable(self) -> bool:
        """Saves language-model checkpoints (the reward model's are scored by its own held-out accuracy)."""
        return self.registered.evaluable

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)  # type: ignore[attr-defined]


@dataclass
class Plan:
    recipe: Path
    config: PipelineConfig
    stages: dict[str, PlannedStage]
    order: list[str]
    overrides: list[str] = field(default_factory=list)  # `hcx run --set`, passed on to every stage

    def upstream(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.stages[name].needs)
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self.stages[current].needs)
        return seen


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


def produced_paths(config: BaseModel, stage: Stage) -> list[str]:
    """The paths a stage with this config writes, including the exports it makes when none is named."""
    paths = [p for ps in field_paths(config, stage.outputs).values() for p in ps]
    output_dir = getattr(config, "output_dir", None)
    for name, folder in stage.default_exports:
        if getattr(config, name, None) is None and output_dir:
            paths.append(f"{output_dir}/{folder}")
    return paths


def evaluated_stages(cfg: PipelineConfig) -> list[str]:
    """The stages whose checkpoints the workers evaluate: those named, else every LM-training stage."""
    if cfg.evaluation.stages is not None:
        return list(cfg.evaluation.stages)
    return [name for name, spec in cfg.stages.items() if STAGES[str(spec.kind)].evaluable]


def topological_order(needs: dict[str, list[str]], where: str) -> list[str]:
    """Kahn's order of the stages (stable in recipe order); a cycle is named in the error."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise RecipeError(f"{where}: stages form a cycle: {' -> '.join(cycle)}")
        state[name] = 1
        for dep in needs[name]:
            visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for name in needs:
        visit(name, [])
    return order


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _matches(path: str) -> bool:
    return bool(glob.glob(path)) if glob.has_magic(path) else Path(path).exists()


def _produced_by(path: str, producers: dict[str, list[str]]) -> str | None:
    target = os.path.normpath(path)
    for stage, outputs in producers.items():
        for out in outputs:
            root = os.path.normpath(out)
            if target == root or target.startswith(root + os.sep):
                return stage
    return None


def check_mesh(stage: PlannedStage, plan: Plan, where: str) -> None:
    """The stage's parallel layout fits its ranks (procs_per_node × nodes) and its model's shapes."""
    from hcx.model.config import padded_vocab_size
    from hcx.train.parallel import MeshError, check_layout, resolve_dp

    parallel = getattr(stage.config, "parallel", None)
    if parallel is None:
        return
    world = stage.spec.procs_per_node * stage.spec.nodes
    try:
        resolve_dp(parallel, world)
        model = getattr(stage.config, "model", None)
        if stage.kind == "pretrain" and model is not None:
            vocab = model.vocab_size
            if vocab is None:
                tokenizers = [s for s in plan.stages.values() if s.kind == "tokenizer"]
                vocab = tokenizers[0].config.vocab_size if tokenizers else parallel.tp  # type: ignore[attr-defined]
                vocab = padded_vocab_size(vocab)
            check_layout(model.model_copy(update={"vocab_size": vocab}), parallel.tp, parallel.pp)
    except MeshError as exc:
        raise RecipeError(f"{where} (world {world} = procs_per_node × nodes): {exc}") from None


def stage_config(recipe: str | Path, spec: StageSpec, overrides: list[str] | None) -> BaseModel:
    """A pipeline stage's config: its section after ``hcx run --set`` overrides, then its own ``set``.

    The planner validates this config and :func:`hcx.pipeline.publish.run_stage` runs it.
    """
    return STAGES[str(spec.kind)].load(recipe, [*(overrides or []), *spec.set], section=spec.section)


def make_plan(
    recipe: str | Path,
    overrides: list[str] | None = None,
    cpus: int | None = None,
    gpus: float = 0,
    dry_run: bool = False,
) -> Plan:
    recipe = Path(recipe)
    cfg = load_section(recipe, "pipeline", PipelineConfig, overrides)
    where = f"{recipe}:pipeline.stages"
    if not cfg.stages:
        raise RecipeError(f"{where}: no stages")
    for name, spec in cfg.stages.items():
        if spec.kind not in STAGES:
            raise RecipeError(f"{where}.{name}: unknown stage kind {spec.kind!r}; known: {', '.join(STAGES)}")
        for dep in spec.needs:
            if dep not in cfg.stages:
                raise RecipeError(f"{where}.{name}.needs: unknown stage {dep!r}")
    order = topological_order({n: s.needs for n, s in cfg.stages.items()}, where)

    stages: dict[str, PlannedStage] = {}
    for name in order:
        spec = cfg.stages[name]
        config = stage_config(recipe, spec, overrides)
        stages[name] = PlannedStage(
            name, spec, config, list(spec.needs), produced_paths(config, STAGES[str(spec.kind)])
        )
    plan = Plan(recipe, cfg, stages, order, list(overrides or []))

    for name in order:
        stage = plan.stages[name]
        upstream = plan.upstream(name)
        producers = {n: plan.stages[n].outputs for n in order if n != name}
        for key, paths in field_paths(stage.config, stage.registered.inputs).items():
            for path in paths:
                producer = _produced_by(path, producers)
                if producer is not None and producer not in upstream:
                    raise RecipeError(
                        f"{where}.{name}: {stage.spec.section}.{key} = {path} is produced by stage "
                        f"{producer!r}, which {name!r} does not need (add it to needs)"
                    )
                if producer is None and not dry_run and not _matches(path):
                    raise RecipeError(
                        f"{where}.{name}: {stage.spec.section}.{key} = {path} does not exist "
                        "and no stage produces it"
                    )

    for name in order:
        check_mesh(plan.stages[name], plan, f"{where}.{name}")
    if not dry_run:
        for name, stage in plan.stages.items():
            if stage.spec.nodes > 1:
                raise RecipeError(
                    f"{where}.{name}.nodes = {stage.spec.nodes}: multi-node stages are launched on the cluster "
                    "with torchrun (see docs/pipeline.md); hcx run --dry-run checks their layout"
                )
    have_cpus = available_cpus() if cpus is None else cpus
    evaluation = cfg.evaluation
    for label, res in [
        *((f"{where}.{n}.resources", s.spec.resources) for n, s in plan.stages.items()),
        (f"{recipe}:pipeline.evaluation.resources", evaluation.resources),
    ]:
        if dry_run:
            continue
        if res.cpus > have_cpus:
            raise RecipeError(f"{label}.cpus = {res.cpus}, but the executor has {have_cpus} CPU cores")
        if res.gpus > gpus:
            raise RecipeError(f"{label}.gpus = {res.gpus:g}, but the executor has {gpus:g} GPUs")
    if (
        evaluation.workers
        and evaluation.resources.cpus >= have_cpus
        and cfg.executor == "local"
        and not dry_run
    ):
        raise RecipeError(
            f"{recipe}:pipeline.evaluation.resources.cpus = {evaluation.resources.cpus} leaves no core for "
            f"training on {have_cpus} cores (evaluation must not interrupt training, SPEC §5.4)"
        )
    if evaluation.workers:
        from hcx.eval.suites import UnknownSuiteError, load_suite

        try:
            load_suite(evaluation.suite)
        except (UnknownSuiteError, ValueError) as exc:
            raise RecipeError(f"{recipe}:pipeline.evaluation.suite: {exc}") from None
    if evaluation.stages is None:
        evaluation.stages = sorted(evaluated_stages(cfg), key=order.index)
    for stage_name in evaluation.stages:
        if stage_name not in plan.stages:
            raise RecipeError(f"{recipe}:pipeline.evaluation.stages: unknown stage {stage_name!r}")
        if not plan.stages[stage_name].evaluable:
            raise RecipeError(
                f"{recipe}:pipeline.evaluation.stages: {stage_name!r} saves no language-model checkpoints"
            )
    return plan
