"""What a finished pipeline shows: its artifacts, training curves and an end-of-run summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hcx.eval.report import with_stderr, within_noise
from hcx.train.metrics import read_steps

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
    "bpb/ko",
    "bpb/en",
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


def curve_plot(log_path: Path, out: Path, keys: tuple[str, ...] = ("loss", "reward", "kl")) -> Path | None:
    """Loss (and for PPO reward and KL) against step, one panel per metric present."""
    rows = read_steps(log_path)
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
    curves = {name: read_steps(path) for name, path in logs.items()}
    curves = {n: [r for r in rows if "loss" in r] for n, rows in curves.items()}
    curves = {n: rows for n, rows in curves.items() if rows}
    evaluated: dict[str, list[tuple[int, float]]] = {}
    bpb: dict[str, list[tuple[int, float]]] = {}
    for row in result.evaluations:
        if row["status"] == "done" and row["result"]:
            evaluated.setdefault(row["stage"], []).append((row["step"], row["result"]["overall"]))
            for language, value in row["result"].get("bpb", {}).items():
                bpb.setdefault(f"{row['stage']} {language}", []).append((row["step"], value))
    panels = len(curves) + (1 if evaluated else 0) + (1 if bpb else 0)
    if not panels:
        return None
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.2), squeeze=False)
    for ax, (name, rows) in zip(axes[0], curves.items(), strict=False):
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], linewidth=1)
        ax.set_title(f"{name} loss")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    panels_left = axes[0][len(curves) :]
    for ax, (title, series) in zip(
        panels_left,
        [(t, v) for t, v in (("held-out bits per byte", bpb), ("checkpoint eval (overall)", evaluated)) if v],
        strict=True,
    ):
        for name, points in series.items():
            ax.plot(*zip(*sorted(points), strict=True), marker="o", label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, out)


def describe_result(result: dict[str, Any]) -> str:
    """One checkpoint evaluation in a line: held-out bits per byte, then overall ± its standard error."""
    bpb = " ".join(f"{language} {value:.3f}" for language, value in result.get("bpb", {}).items())
    overall = with_stderr(result["overall"], result.get("overall_stderr"))
    return f"bpb {bpb}; overall {overall}" if bpb else f"overall {overall}"


def evaluations_table(evaluations: list[dict[str, Any]]):
    """Per checkpoint, in the order they were saved: bits per byte per language, overall ± its
    standard error and its change from the stage's previous checkpoint, ≈ when within noise."""
    from rich.table import Table

    languages = list(dict.fromkeys(k for e in evaluations for k in (e["result"] or {}).get("bpb", {})))
    table = Table(title="checkpoint evaluations: held-out bits per byte (lower is better), overall")
    for column in ("stage", "step", *(f"bpb {lang}" for lang in languages), "overall", "Δ"):
        table.add_column(column, no_wrap=True)
    previous: dict[str, dict[str, Any]] = {}
    for e in evaluations:
        result = e["result"] or {}
        bpb = result.get("bpb", {})
        cells = [f"{bpb[lang]:.3f}" if lang in bpb else "-" for lang in languages]
        overall, change = e["status"], ""
        if "overall" in result:
            overall = with_stderr(result["overall"], result.get("overall_stderr"))
            before = previous.get(e["stage"])
            if before is not None:
                noise = within_noise(
                    before["overall"],
                    before.get("overall_stderr"),
                    result["overall"],
                    result.get("overall_stderr"),
                )
                change = f"{result['overall'] - before['overall']:+.2f}" + (" ≈" if noise else "")
            previous[e["stage"]] = result
        table.add_row(e["stage"], str(e["step"]), *cells, overall, change)
    return table


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
        console.print(evaluations_table(result.evaluations))
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
