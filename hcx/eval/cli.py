"""``hcx eval``: score checkpoints on the SPEC §6 suites and draw the report's radar chart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Evaluate checkpoints on the report's benchmarks (SPEC §6).")

Overrides = Annotated[
    list[str] | None, typer.Option("--set", help="override a field, e.g. --set eval.limit=20")
]


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _known_errors() -> tuple[type[Exception], ...]:
    from hcx.config import RecipeError
    from hcx.eval.local_data import MissingBenchmarkError
    from hcx.eval.runner import UnknownTaskError
    from hcx.eval.suites import UnknownSuiteError
    from hcx.model.load import ModelLoadError

    return (
        ModelLoadError,
        MissingBenchmarkError,
        UnknownTaskError,
        UnknownSuiteError,
        RecipeError,
        ValueError,
    )


def _print_report(report, paths: dict[str, Path]) -> None:
    typer.echo(report.markdown())
    for task, reason in report.missing.items():
        typer.secho(f"not run: {task}: {reason}", fg=typer.colors.YELLOW, err=True)
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")


@app.command()
def run(
    checkpoint: Annotated[Path, typer.Argument(help="HF-format checkpoint directory")],
    suite: Annotated[str, typer.Option(help="suite name (hcx eval suites) or a suite YAML")] = "quick",
    data_dir: Annotated[
        Path | None, typer.Option(help="offline items (shared data root or its eval/)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many items per task")] = None,
    output: Annotated[Path, typer.Option(help="report directory; finished tasks are cached here")] = Path(
        "runs/eval"
    ),
    hf: Annotated[bool, typer.Option("--hf", help="lm-eval's hf backend instead of the hcx engine")] = False,
    batch_size: Annotated[int, typer.Option(help="requests per engine call (hf: batch size)")] = 64,
    strict: Annotated[bool, typer.Option(help="fail on a benchmark missing from the data dir")] = False,
    mlflow: Annotated[bool, typer.Option("--mlflow", help="log to the active MLflow run")] = False,
) -> None:
    """Score one checkpoint on a suite; write report.json, report.md and radar.png to --output."""
    from hcx.eval.api import evaluate

    try:
        report = evaluate(
            checkpoint,
            suite=suite,
            data_dir=data_dir,
            limit=limit,
            output_dir=output,
            batch_size=batch_size,
            log_mlflow=mlflow,
            hf=hf,
            strict=strict,
        )
    except _known_errors() as exc:
        raise _fail(exc) from None
    _print_report(report, {"report": output / "report.md", "radar": output / "radar.png"})


@app.command()
def suites() -> None:
    """List the suites and their tasks."""
    from hcx.eval.suites import load_suite, suite_names

    for name in suite_names():
        spec = load_suite(name)
        typer.secho(f"{name}: {spec.description}", bold=True)
        for entry in spec.tasks:
            shots = "config" if entry.num_fewshot is None else entry.num_fewshot
            limit = f", limit {entry.limit}" if entry.limit else ""
            typer.echo(f"  {entry.task} [{entry.category}] shots {shots}{limit}")


@app.command()
def recipe(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML with an eval: section")],
    overrides: Overrides = None,
) -> None:
    """Score every checkpoint of the recipe's eval: section; one radar compares them all."""
    from hcx.stages import STAGES

    stage = STAGES["eval"]
    try:
        cfg = stage.load(recipe, overrides)
        reports = stage.execute(cfg)
    except _known_errors() as exc:
        raise _fail(exc) from None
    out = Path(cfg.output_dir)
    for name, report in reports.items():
        typer.secho(f"== {name}", bold=True)
        _print_report(report, {"report": out / name / "report.md"})
    typer.echo((out / "comparison.md").read_text(encoding="utf-8"))
    typer.echo(f"radar: {out / 'radar.png'}")


@app.command()
def transfer(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML with a transfer: section")],
    overrides: Overrides = None,
) -> None:
    """Cross-lingual transfer: SFT at each Korean:English ratio, score both languages, plot."""
    from hcx.config import load_section
    from hcx.eval.transfer import TransferConfig, run_transfer

    try:
        cfg = load_section(recipe, "transfer", TransferConfig, overrides)
        summary = run_transfer(cfg)
    except _known_errors() as exc:
        raise _fail(exc) from None
    for row in summary["rows"]:
        scores = ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k.startswith(("rougeL_", "judge_")))
        typer.echo(f"{row['label']}: {scores}")
    typer.echo(f"plot: {Path(cfg.output_dir) / 'transfer.png'}")


@app.command("mt-bench")
def mt_bench(
    checkpoint: Annotated[Path, typer.Argument(help="HF-format checkpoint directory (hcx export)")],
    benchmark: Annotated[str, typer.Option(help="mt_bench or ko_mt_bench")] = "mt_bench",
    data_dir: Annotated[Path | None, typer.Option(help="shared data root (eval/mt_bench/...)")] = None,
    judge_url: Annotated[str | None, typer.Option(help="OpenAI-compatible judge endpoint")] = None,
    judge_model: Annotated[str, typer.Option(help="judge model name")] = "gpt-4",
    limit: Annotated[int | None, typer.Option(help="first N questions")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="answer length per turn")] = 1024,
    output: Annotated[Path, typer.Option(help="answers, judgments and score go here")] = Path(
        "runs/mt_bench"
    ),
    overrides: Overrides = None,
) -> None:
    """MT-Bench / Ko-MT-Bench: two-turn answers, judged 1-10, reported x10 (key: $HCX_JUDGE_API_KEY)."""
    from hcx.config import apply_overrides
    from hcx.eval.mt_bench import MtBenchConfig, engine_chat_model, run_mt_bench
    from hcx.infer.engine import Engine
    from hcx.model.load import load_model

    try:
        raw = {
            "benchmark": benchmark,
            "data_dir": str(data_dir) if data_dir else None,
            "output_dir": str(output),
            "limit": limit,
            "max_new_tokens": max_new_tokens,
            "judge": {"base_url": judge_url, "model": judge_model},
        }
        cfg = MtBenchConfig.model_validate(apply_overrides({"mt_bench": raw}, overrides)["mt_bench"])
        loaded = load_model(checkpoint)
        engine = Engine(loaded.model, loaded.tokenizer())
        score = run_mt_bench(engine_chat_model(engine, cfg.max_new_tokens), cfg)
    except (*_known_errors(), FileNotFoundError, RuntimeError) as exc:
        raise _fail(exc) from None
    turns = ", ".join(f"turn {t} {v:.2f}" for t, v in score.by_turn.items())
    typer.echo(f"{cfg.benchmark}: {score.score:.2f} ({turns})")
    for category, value in score.by_category.items():
        typer.echo(f"  {category}: {value:.2f}")
