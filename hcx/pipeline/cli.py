"""``hcx run RECIPE`` (the main job) and ``hcx pipeline worker|status`` (SPEC §5.4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hcx.config import RecipeError

Recipe = Annotated[Path, typer.Argument(help="recipe YAML with a pipeline: section")]
Overrides = Annotated[
    list[str] | None, typer.Option("--set", help="override a field, e.g. --set pretrain.steps=10")
]

app = typer.Typer(no_args_is_help=True, help="The pipeline's evaluation workers and state.")


def _plan(recipe: Path, overrides: list[str] | None, dry_run: bool = False):
    from hcx.pipeline.plan import make_plan

    try:
        import torch

        return make_plan(recipe, overrides, gpus=torch.cuda.device_count(), dry_run=dry_run)
    except RecipeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


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
        ev = plan.config.evaluation
        typer.echo(f"evaluation: {ev.workers} worker(s), suite {ev.suite!r} on {', '.join(ev.stages or [])}")
        typer.echo("ok: recipe, graph and parallel layouts are valid")
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
