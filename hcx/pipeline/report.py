"""What a finished pipeline shows: its artifacts, training curves and an end-of-run summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from hcx.train.metrics import is_step_record

if TYPE_CHECKING:
    from hcx.pipeline.plan import PlannedStage
    from hcx.pipeline.runner import PipelineResult

# Files a stage leaves in its output directory that belong in its MLflow run.
ARTIFACTS = (
    "train_log.jsonl",
    "stats.json",
    "summary.md",
    "ppo_summary.json",
    "report.json",
    "report.md",
    "radar.png",
)
KEY_METRICS = (
    "loss",
    "held_out_loss/ko",
    "held_out_loss/en",
    "accuracy",
    "held_out_accuracy",
    "reward",
    "kl",
    "length",
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> Path:
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    _pyplot().close(fig)
    return out


def stage_artifacts(stage: PlannedStage) -> list[Path]:
    if stage.kind == "eval":
        return [stage.output_dir] if stage.output_dir.is_dir() else []
    return [stage.output_dir / name for name in ARTIFACTS if (stage.output_dir / name).is_file()]


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if is_step_record(row):
            rows.append(row)
    return rows


def curve_plot(log_path: Path, out: Path, keys: tuple[str, ...] = ("loss", "reward", "kl")) -> Path | None:
    """Loss (and for PPO reward and KL) against step, one panel per metric present."""
    rows = read_log(log_path)
    present = [k for k in keys if any(k in r for r in rows)]
    if not present:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(present), figsize=(4.5 * len(present), 3.2), squeeze=False)
    for ax, key in zip(axes[0], present, strict=True):
        points = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot(*zip(*points, strict=True), marker=".", linewidth=1)
        ax.set_xlabel("step")
        ax.set_title(f"{log_path.parent.name}: {key}")
        ax.grid(alpha=0.3)
    return _save(fig, out)


def training_curves(result: PipelineResult, logs: dict[str, Path], out: Path) -> Path | None:
    """One figure with every training stage's loss curve and the per-checkpoint eval scores."""
    plt = _pyplot()
    curves = {name: read_log(path) for name, path in logs.items()}
    curves = {n: [r for r in rows if "loss" in r] for n, rows in curves.items()}
    curves = {n: rows for n, rows in curves.items() if rows}
    evaluated: dict[str, list[tuple[int, float]]] = {}
    for row in result.evaluations:
        if row["status"] == "done" and row["result"]:
            evaluated.setdefault(row["stage"], []).append((row["step"], row["result"]["overall"]))
    panels = len(curves) + (1 if evaluated else 0)
    if not panels:
        return None
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.2), squeeze=False)
    for ax, (name, rows) in zip(axes[0], curves.items(), strict=False):
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], linewidth=1)
        ax.set_title(f"{name} loss")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if evaluated:
        ax = axes[0][-1]
        for name, points in evaluated.items():
            ax.plot(*zip(*sorted(points), strict=True), marker="o", label=name)
        ax.set_title("checkpoint eval (overall)")
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    return _save(fig, out)


def print_summary(result: PipelineResult, plan_outputs: dict[str, str | Path], curves: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from hcx.pipeline.tracking import ui_command

    console = Console()
    table = Table(title="hcx run: stages")
    for column in ("stage", "status", "seconds", "key metrics", "output"):
        table.add_column(column)
    for name, outcome in result.stages.items():
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in outcome.metrics.items() if k in KEY_METRICS)
        table.add_row(
            name, outcome.status, f"{outcome.seconds:.0f}", metrics, str(plan_outputs.get(name, ""))
        )
    console.print(table)
    done = [e for e in result.evaluations if e["status"] == "done"]
    if result.evaluations:
        evals = Table(title="checkpoint evaluations (asynchronous)")
        for column in ("stage", "step", "overall", "worker", "attempts"):
            evals.add_column(column)
        for e in result.evaluations:
            overall = (e["result"] or {}).get("overall")
            evals.add_row(
                e["stage"],
                str(e["step"]),
                "-" if overall is None else f"{overall:.2f}",
                str(e["worker"]),
                str(e["attempts"]),
            )
        console.print(evals)
        console.print(f"{len(done)} of {len(result.evaluations)} checkpoint evaluations recorded")
    for output in plan_outputs.values():
        if output and (Path(output) / "answers.json").is_file():
            print_answers(console, Path(output) / "answers.json")
    if curves is not None:
        console.print(f"training curves: {curves}")
    console.print(f"MLflow: {ui_command(result.tracking_uri)}  (parent run {result.parent_run_id})")


def print_answers(console, path: Path) -> None:
    """The rates of ``answers.json`` per model, and each model's answer to the first prompt per language."""
    from rich.table import Table

    from hcx.eval.answers import RATES

    record = json.loads(path.read_text(encoding="utf-8"))
    names = list(record["rates"])
    table = Table(
        title=f"what the models say: {record['prompts']} held-out prompts ({path.with_suffix('.md')})"
    )
    for column in ("rate", *names):
        table.add_column(column)
    for rate in RATES:
        table.add_row(rate, *(f"{record['rates'][name][rate]:.3g}" for name in names))
    console.print(table)
    first = record["answers"][names[0]]
    for language in dict.fromkeys(a["language"] for a in first):
        i = next(i for i, a in enumerate(first) if a["language"] == language)
        console.print(
            f"[bold]{language}[/bold] {' '.join(first[i]['prompt'].split())[:200]}", highlight=False
        )
        for name in names:
            text = " ".join(record["answers"][name][i]["text"].split())[:200]
            console.print(f"  {name}: {text or '(empty)'}", highlight=False)
