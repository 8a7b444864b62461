"""The report's picture: a radar chart of category scores against HCX-S and HCX-L (SPEC §6)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from hcx.eval.report import (
    BPB_CATEGORY,
    REPORTED,
    SUMMARY_CATEGORIES,
    EvalReport,
    ordered_categories,
    within_noise,
)


def _within_noise(reports: dict[str, EvalReport], category: str) -> bool:
    """Whether every pair of the reports scores ``category`` within noise of each other."""
    drawn = [
        (r.categories[category], r.category_stderrs.get(category))
        for r in reports.values()
        if category in r.categories
    ]
    return len(drawn) > 1 and all(within_noise(*a, *b) for i, a in enumerate(drawn) for b in drawn[i + 1 :])


def radar_chart(reports: dict[str, EvalReport], path: str | Path, reference: bool = True) -> Path:
    """Draw each named report's categories (and the report's HCX-S/HCX-L values) on one radar.

    Axes are the summary categories any of the reports scored, in the report's order, then
    their other categories (bits per byte, not a 0–100 score, has no axis); a model without a
    category is drawn at 0 there, the reference lines leave a gap where the report gives no
    value. With several models, an axis whose scores all differ within noise is labelled ≈.
    """
    axes = ordered_categories({c for report in reports.values() for c in report.categories} - {BPB_CATEGORY})
    if len(axes) < 3:
        axes += [c for c in SUMMARY_CATEGORIES if c not in axes][: 3 - len(axes)]
    angles = [2 * math.pi * i / len(axes) for i in range(len(axes))]
    fig, ax = plt.subplots(figsize=(6.4, 6.4), subplot_kw={"projection": "polar"})
    series = {name: report.categories for name, report in reports.items()}
    if reference:
        series |= {f"{name} (report)": values for name, values in REPORTED.items()}
    for name, values in series.items():
        dashed = name.endswith("(report)")
        # The report has no value on some axes (multilingual, safety): leave a gap, not a dip to 0.
        points = [values.get(c, math.nan if dashed else 0.0) for c in axes]
        ax.plot(
            [*angles, angles[0]],
            [*points, points[0]],
            linestyle="--" if dashed else "-",
            linewidth=1.5,
            label=name,
        )
        if not dashed:
            ax.fill([*angles, angles[0]], [*points, points[0]], alpha=0.15)
    ax.set_xticks(angles, [c.capitalize() + (" ≈" if _within_noise(reports, c) else "") for c in axes])
    if len(reports) > 1:
        fig.text(0.02, 0.02, "≈: the models differ within noise (1.96 standard errors)", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_yticks([20, 40, 60, 80, 100])
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
