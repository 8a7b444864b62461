"""``hcx run RECIPE`` (the main job) and ``hcx pipeline stage|worker|status`` (SPEC §5.4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hcx.config import RecipeError

if TYPE_CHECKING:
    from hcx.pipeline.plan import Plan, PlannedStage

Recipe = Annotated[Path, typer.Argument(help="recipe YAML with a pipeline: section")]
Overrides = Annotated[
    list[str] | None, typer.Option("--set", help="override a field, e.g. --set pretrain.steps=10")
]

app = typer.Typer(no_args_is_help=True, help="The pipeline's stages, evaluation workers and state.")


def _plan(recipe: Path, overrides: list[str] | None, dry_run: bool = False):
    from hcx.pipeline.plan import make_plan

    try:
        import torch

        return make_plan(recipe, overrides, gpus=torch.cuda.device_count(), dry_run=dry_run)
    except RecipeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _echo_memory(stage: PlannedStage, plan: Plan) -> list[str]:
    """Print a training stage's per-rank memory; warn, and return its name, when its device is too small."""
    from hcx.pipeline.memory import stage_memory
    from hcx.train.memory import GIB, HEADROOM

    memory = stage_memory(stage, plan)
    if memory is None:
        return []
    indent = " " * 11
    if memory.estimate is None:
        typer.echo(f"{indent}mem/rank: unknown ({memory.unknown})")
        return []
    estimate, cfg = memory.estimate, stage.config
    parallel = cfg.parallel  # type: ignore[attr-defined]
    at = f"micro-batch {memory.micro_batch}"
    if parallel.pp > 1:
        at += f", pipeline stage {estimate.pp_rank} of {parallel.pp}"
    typer.echo(f"{indent}{estimate.describe()} at {at}")
    resources = stage.spec.resources
    device_gib = resources.gpu_memory_gib
    if device_gib is None or estimate.fits(device_gib):
        return []
    hints = ["raise dp/tp/pp to shard weights, gradients and optimizer state"]
    if not cfg.activation_checkpointing:  # type: ignore[attr-defined]
        hints.append("turn on activation_checkpointing")
    typer.echo(
        f"WARNING: stage {stage.name} needs ≈{estimate.total / GIB:.1f} GiB per rank, more than "
        f"{resources.gpu} holds ({device_gib:g} GiB, {HEADROOM:.0%} usable): {', '.join(hints)}, "
        "or shrink the micro-batch"
    )
    return [stage.name]


def run(
    recipe: Recipe,
    overrides: Overrides = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="validate the recipe, graph and meshes; run nothing")
    ] = False,
    executor: Annotated[str | None, typer.Option(help="local or ray (default: the recipe's)")] = None,
) -> None:
    """Run every stage of the recipe as a dependency graph, evaluating checkpoints on the side."""
    overrides = [*(overrides or []), *([f"pipeline.executor={executor}"] if executor else [])]
    plan = _plan(recipe, overrides, dry_run)
    if dry_run:
        from hcx.train.parallel import resolve_dp

        too_big: list[str] = []
        for name in plan.order:
            stage = plan.stages[name]
            world = stage.spec.procs_per_node * stage.spec.nodes
            parallel = getattr(stage.config, "parallel", None)
            mesh = f"pp{parallel.pp}×dp{resolve_dp(parallel, world)}×tp{parallel.tp}" if parallel else "-"
            typer.echo(
                f"{name:10s} kind={stage.kind:9s} needs={','.join(stage.needs) or '-':22s} world={world:<4d} "
                f"mesh={mesh:14s} "
                f"cpus={stage.spec.resources.cpus} gpus={stage.spec.resources.gpus:g} -> {', '.join(stage.outputs)}"
            )
            too_big.extend(_echo_memory(stage, plan))
        ev = plan.config.evaluation
        typer.echo(f"evaluation: {ev.workers} worker(s), suite {ev.suite!r} on {', '.join(ev.stages or [])}")
        fit = f"; {len(too_big)} stage(s) may not fit their devices: {', '.join(too_big)}" if too_big else ""
        typer.echo(f"ok: recipe, graph and parallel layouts are valid{fit}")
        return
    from hcx.pipeline.report import print_summary, training_curves
    from hcx.pipeline.runner import PipelineRunner
    from hcx.pipeline.tracking import ui_command

    runner = PipelineRunner(plan)
    typer.echo(f"pipeline store: {plan.config.store_url()}\nMLflow: {ui_command(plan.config.tracking())}")
    result = runner.run()
    logs = {n: s.output_dir / "train_log.jsonl" for n, s in plan.stages.items() if s.trains}
    curves = training_curves(result, logs, result.run_dir / "training_curves.png")
    if curves is not None:
        runner.tracker.artifact(result.parent_run_id, curves, "plots")
    (result.run_dir / "summary.json").write_text(json.dumps(result.summary(), indent=1, default=str))
    print_summary(result, {n: s.outputs[-1] if s.outputs else "" for n, s in plan.stages.items()}, curves)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def stage(
    recipe: Recipe,
    name: Annotated[str, typer.Argument(help="a stage of the recipe's pipeline.stages")],
    overrides: Overrides = None,
) -> None:
    """Run one stage of the pipeline as hcx run does, publishing its checkpoints to the store.

    The driver launches every stage this way (under torchrun when procs_per_node > 1); start
    it by hand on each node for stages the driver does not launch (nodes > 1).
    """
    from hcx.pipeline.publish import run_stage, summary
    from hcx.train.parallel import leave_process_group

    try:
        result = run_stage(recipe, name, overrides)
    except RecipeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        rank = leave_process_group()
    if rank == 0:
        typer.echo(json.dumps({"stage": name, "result": summary(result)}, indent=1, ensure_ascii=False))


@app.command()
def worker(
    recipe: Recipe,
    overrides: Overrides = None,
    worker_id: Annotated[str | None, typer.Option(help="name recorded with each claim")] = None,
    once: Annotated[bool, typer.Option(help="exit when nothing is claimable instead of waiting")] = False,
) -> None:
    """Evaluate checkpoint events from the recipe's pipeline store until training is over."""
    import logging

    from hcx.config import load_section
    from hcx.pipeline.config import PipelineConfig
    from hcx.pipeline.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        cfg = load_section(recipe, "pipeline", PipelineConfig, overrides)
    except RecipeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    done = run_worker(cfg.store_url(), cfg.evaluation, Path(cfg.run_dir) / "evaluations", worker_id, once)
    typer.echo(f"{done} evaluation(s) recorded")


@app.command()
def status(recipe: Recipe, overrides: Overrides = None) -> None:
    """Stages and checkpoint evaluations as the pipeline store has them."""
    from hcx.config import load_section
    from hcx.pipeline.config import PipelineConfig
    from hcx.pipeline.store import Store

    cfg = load_section(recipe, "pipeline", PipelineConfig, overrides)
    store = Store(cfg.store_url())
    for name, row in store.all_stages().items():
        typer.echo(f"{name:10s} {row['status']:8s} attempts={row['attempts']} seconds={row['seconds']:.0f}")
    for row in store.evaluations():
        overall = (row["result"] or {}).get("overall")
        typer.echo(
            f"eval {row['stage']} step {row['step']}: {row['status']} overall={overall} worker={row['worker']}"
        )
