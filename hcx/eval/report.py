"""The evaluation report: headline scores, category averages, JSON + Markdown + radar (SPEC §6).

Aggregation, written into every report: a task's score is its headline metric × 100 (metrics
already on a 0–100 scale, such as chrF and BLEU, are kept as they are); a
category's score is the unweighted mean of its tasks' scores; ``overall`` is the unweighted
mean of the report's seven summary categories that were scored (Korean, English,
Commonsense, Factual, Math, Code, Harmlessness), as in the report's summary table.
Other categories (chat, multilingual, safety) are shown but not averaged into ``overall``;
``bits_per_byte`` (held-out text, lower is better) is kept in bits and never averaged with scores.

Standard errors: lm-eval's (closed form for means such as accuracy, bootstrap for chrF/BLEU),
×100 like the score; a category's is that of an unweighted mean of independent tasks,
``sqrt(Σ se²) / n``. Two scores differ *within noise* when ``|a − b| ≤ 1.96 · sqrt(se_a² + se_b²)``
(a 95 % two-sided test), and reports that compare models mark such differences with ≈.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

SUMMARY_CATEGORIES = ("korean", "english", "commonsense", "factual", "math", "code", "harmlessness")
AGGREGATION = (
    "task score = headline metric × 100 (chrF/BLEU already 0–100); category = unweighted mean of its tasks; "
    "overall = unweighted mean of the scored summary categories (" + ", ".join(SUMMARY_CATEGORIES) + ")"
)
# SPEC §6 summary table: the report's own category averages, drawn on the radar for reference.
REPORTED = {
    "HCX-S": {
        "korean": 61.73,
        "english": 47.08,
        "commonsense": 76.56,
        "factual": 46.88,
        "math": 39.04,
        "code": 37.71,
        "harmlessness": 62.08,
        "overall": 53.01,
    },
    "HCX-L": {
        "korean": 72.07,
        "english": 58.25,
        "commonsense": 87.26,
        "factual": 56.83,
        "math": 50.91,
        "code": 46.10,
        "harmlessness": 67.32,
        "overall": 62.68,
    },
}


# Metrics kept as they are: sacrebleu's and the MT-Bench judge's 0–100 scales, and bits per byte.
UNSCALED_METRICS = ("chrf", "bleu", "ter", "mt_bench", "bits_per_byte", "byte_perplexity", "word_perplexity")
BPB_CATEGORY = "bits_per_byte"
NOISE_Z = 1.96


def to_percent(metric: str, value: float) -> float:
    return value if metric.split(",")[0].lower() in UNSCALED_METRICS else 100.0 * value


def stderr_of(metrics: dict[str, Any], metric: str) -> float | None:
    """The standard error lm-eval reports for ``metric`` (``acc,none`` → ``acc_stderr,none``), on
    the score's scale; None when there is none (``N/A``, bits per byte)."""
    name, _, filter_name = metric.partition(",")
    value = metrics.get(f"{name}_stderr,{filter_name}" if filter_name else f"{name}_stderr")
    return to_percent(metric, float(value)) if isinstance(value, int | float) else None


def stderr_of_mean(stderrs: list[float | None]) -> float | None:
    """Standard error of the unweighted mean of independent estimates; None if any is unknown."""
    if not stderrs or any(se is None for se in stderrs):
        return None
    return math.sqrt(sum(se * se for se in stderrs)) / len(stderrs)  # type: ignore[operator]


def within_noise(a: float, se_a: float | None, b: float, se_b: float | None) -> bool | None:
    """Whether ``a`` and ``b`` differ by at most 1.96 standard errors of their difference."""
    if se_a is None or se_b is None:
        return None
    return abs(a - b) <= NOISE_Z * math.hypot(se_a, se_b)


def with_stderr(value: float, stderr: float | None) -> str:
    return f"{value:.2f}" if stderr is None else f"{value:.2f} ± {stderr:.2f}"


def scorer_notes(tasks: list[str]) -> dict[str, str]:
    """Which scorer produced the model-graded numbers: they do not compare across scorers."""
    notes = {}
    if any(key in t for t in tasks for key in ("kold", "toxicity", "bold")):
        from hcx.eval.toxicity import default_scorer

        notes["toxicity scorer"] = default_scorer().name
    if any("flores" in t for t in tasks):
        from hcx.eval.translation import xcomet_status

        notes["xcomet"] = xcomet_status()
    return notes


def mlflow_metrics(
    scores: dict[str, float], categories: dict[str, float], overall: float
) -> dict[str, float]:
    """A report as MLflow metrics: ``eval/<task>``, ``eval/category/<category>``, ``eval/overall``."""
    metrics = {f"eval/{task}": score for task, score in scores.items()}
    metrics |= {f"eval/category/{c}": v for c, v in categories.items()}
    metrics["eval/overall"] = overall
    return metrics


def headline(metrics: dict[str, Any], preferred: str | None = None) -> tuple[str, float]:
    """``(name, value)`` of the metric that stands for a task: ``preferred``, else acc, else exact_match."""
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and "stderr" not in k}
    if preferred is not None:
        for key in (preferred, f"{preferred},none"):
            if key in numeric:
                return key, numeric[key]
        raise KeyError(f"metric {preferred!r} not among {sorted(numeric)}")
    for prefix in ("acc,", "exact_match,", "pass@1,"):
        for key in numeric:
            if key.startswith(prefix):
                return key, numeric[key]
    if not numeric:
        raise KeyError("no numeric metric")
    key = next(iter(numeric))
    return key, numeric[key]


@dataclass
class EvalReport:
    """Scores of one model on one suite; ``write`` produces report.json, report.md and radar.png."""

    scores: dict[str, float]
    metrics: dict[str, dict[str, float]]
    categories: dict[str, float]
    overall: float
    task_categories: dict[str, str] = field(default_factory=dict)
    headline_metrics: dict[str, str] = field(default_factory=dict)
    model: str = ""
    suite: str = ""
    samples: dict[str, int] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    stderrs: dict[str, float | None] = field(default_factory=dict)
    category_stderrs: dict[str, float | None] = field(default_factory=dict)
    overall_stderr: float | None = None
    prefix_cache_hit_rates: dict[str, float] = field(default_factory=dict)
    """Per task on the hcx engine: share of the tokens it scored or generated whose keys and
    values came from the prefix cache (the few shots, the question shared by the choices)."""

    @classmethod
    def build(
        cls,
        metrics: dict[str, dict[str, Any]],
        task_categories: dict[str, str],
        preferred: dict[str, str | None] | None = None,
        **info: Any,
    ) -> EvalReport:
        """Aggregate per-task lm-eval metrics by category (see the module docstring)."""
        task_categories = {t: c for t, c in task_categories.items() if t in metrics}
        scores, chosen, stderrs = {}, {}, {}
        for task, values in metrics.items():
            chosen[task], value = headline(values, (preferred or {}).get(task))
            scores[task] = to_percent(chosen[task], value)
            stderrs[task] = stderr_of(values, chosen[task])
        by_category: dict[str, list[str]] = {}
        for task in scores:
            by_category.setdefault(task_categories[task], []).append(task)
        categories = {c: fmean(scores[t] for t in tasks) for c, tasks in by_category.items()}
        category_stderrs = {
            c: stderr_of_mean([stderrs[t] for t in tasks]) for c, tasks in by_category.items()
        }
        summary = [categories[c] for c in SUMMARY_CATEGORIES if c in categories]
        clean = {
            t: {k: float(v) for k, v in m.items() if isinstance(v, int | float)} for t, m in metrics.items()
        }
        return cls(
            scores=scores,
            metrics=clean,
            categories=categories,
            overall=fmean(summary) if summary else float("nan"),
            task_categories=dict(task_categories),
            headline_metrics=chosen,
            notes=scorer_notes(list(scores)),
            stderrs=stderrs,
            category_stderrs=category_stderrs,
            overall_stderr=stderr_of_mean(
                [category_stderrs[c] for c in SUMMARY_CATEGORIES if c in categories]
            ),
            **info,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "aggregation": AGGREGATION}

    def markdown(self) -> str:
        lines = [f"# Evaluation: {self.model or 'model'} on suite `{self.suite}`", ""]
        lines += ["| category | score | HCX-S | HCX-L |", "|---|---:|---:|---:|"]
        for category in ordered_categories(set(self.categories)):
            s, l_ = (REPORTED[m].get(category) for m in ("HCX-S", "HCX-L"))
            score = with_stderr(self.categories[category], self.category_stderrs.get(category))
            label = f"{category} (lower is better)" if category == BPB_CATEGORY else category
            lines.append(f"| {label} | {score} | {_cell(s)} | {_cell(l_)} |")
        lines.append(
            f"| **overall** | **{with_stderr(self.overall, self.overall_stderr)}** | "
            f"{REPORTED['HCX-S']['overall']:.2f} | {REPORTED['HCX-L']['overall']:.2f} |"
        )
        lines += [
            "",
            f"Aggregation: {AGGREGATION}. ± is one standard error.",
            "",
            "| task | category | metric | score | items |",
            "|---|---|---|---:|---:|",
        ]
        for task in sorted(self.scores, key=lambda t: (self.task_categories[t], t)):
            lines.append(
                f"| {task} | {self.task_categories[task]} | {self.headline_metrics[task]} | "
                f"{with_stderr(self.scores[task], self.stderrs.get(task))} | {self.samples.get(task, '')} |"
            )
        if self.prefix_cache_hit_rates:
            rates = ", ".join(f"{t} {100 * r:.1f} %" for t, r in sorted(self.prefix_cache_hit_rates.items()))
            lines += ["", f"Prefix cache (tokens whose keys and values were reused): {rates}."]
        if self.notes:
            lines += ["", "Scorers:", ""]
            lines += [f"- {name}: {value}" for name, value in sorted(self.notes.items())]
        if self.missing:
            lines += ["", "Not run (no items in the data directory):", ""]
            lines += [f"- {task}: {reason}" for task, reason in sorted(self.missing.items())]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        from hcx.eval.radar import radar_chart

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "report.json", "markdown": out / "report.md", "radar": out / "radar.png"}
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        paths["markdown"].write_text(self.markdown(), encoding="utf-8")
        radar_chart({self.model or "model": self}, paths["radar"])
        return paths

    @classmethod
    def read(cls, path: str | Path) -> EvalReport:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data.pop("aggregation", None)
        return cls(**data)


def ordered_categories(categories: set[str]) -> list[str]:
    return [c for c in SUMMARY_CATEGORIES if c in categories] + sorted(categories - set(SUMMARY_CATEGORIES))


def comparison_markdown(reports: dict[str, EvalReport]) -> str:
    """The models side by side, per category, overall and per task; each difference from the first
    model is marked ≈ when it is within noise (see the module docstring)."""
    names = list(reports)
    first = reports[names[0]]
    rows: list[tuple[str, dict[str, tuple[float, float | None]]]] = []
    for category in ordered_categories({c for r in reports.values() for c in r.categories}):
        label = f"{category} (lower is better)" if category == BPB_CATEGORY else category
        rows.append(
            (
                label,
                {
                    n: (r.categories[category], r.category_stderrs.get(category))
                    for n, r in reports.items()
                    if category in r.categories
                },
            )
        )
    rows.append(("**overall**", {n: (r.overall, r.overall_stderr) for n, r in reports.items()}))
    for task in sorted({t for r in reports.values() for t in r.scores}):
        rows.append(
            (task, {n: (r.scores[task], r.stderrs.get(task)) for n, r in reports.items() if task in r.scores})
        )
    header = ["", *names, *(f"{n} − {names[0]}" for n in names[1:])]
    lines = [
        f"# {' vs '.join(names)} on suite `{first.suite}`",
        "",
        "± is one standard error; ≈ marks a difference within noise (|Δ| ≤ 1.96 standard errors of the "
        "difference), ? one whose noise is unknown.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for label, values in rows:
        cells = [with_stderr(*values[n]) if n in values else "–" for n in names]
        for name in names[1:]:
            if name not in values or names[0] not in values:
                cells.append("–")
                continue
            (a, se_a), (b, se_b) = values[names[0]], values[name]
            noise = within_noise(a, se_a, b, se_b)
            cells.append(f"{b - a:+.2f}" + {True: " ≈", False: "", None: " ?"}[noise])
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "–"
