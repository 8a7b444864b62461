"""``stats.json`` and ``summary.md``: what every stage did to the corpus (SPEC §1 "per-step statistics").

Built from datatrove's own per-task stats files (``_work/logs/<stage>/stats/*.json``), so the
report is the same whichever executor ran the stages.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

from datatrove.pipeline.base import PipelineStep

from hcx.data.bad_records import read_bad_records
from hcx.data.config import SEGMENTS, DataConfig
from hcx.data.mix import MixPlan

METER_PREFIX = "at "


def _value(stat: Any) -> float:
    if isinstance(stat, dict):
        return stat.get("total", 0)
    return stat or 0


def merged_stage_stats(logs: Path) -> list[dict[str, Any]]:
    """Per step of a stage: {"name", "stats": {key: total over tasks}}."""
    merged: list[dict[str, Any]] = []
    for path in sorted((logs / "stats").glob("*.json")):
        for i, step in enumerate(json.loads(path.read_text())):
            if i == len(merged):
                merged.append({"name": step["name"], "stats": defaultdict(float)})
            for key, stat in step["stats"].items():
                merged[i]["stats"][key] += _value(stat)
    return merged


def _int(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def collect_stats(config: DataConfig, stage_names: list[str]) -> dict[str, Any]:
    logs = config.work_path / "logs"
    points: list[dict[str, Any]] = []
    drops: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    pii: dict[str, int] = defaultdict(int)
    sources: dict[str, dict[str, int]] = {}
    removed: dict[str, int] = {}
    for stage in stage_names:
        for step in merged_stage_stats(logs / stage):
            name, stats = step["name"].split(": ", 1)[-1], step["stats"]
            if name.startswith(METER_PREFIX):
                point = {
                    "stage": name[len(METER_PREFIX) :],
                    "docs": _int(stats["docs"]),
                    "bytes": _int(stats["bytes"]),
                }
                point["by_segment"] = {
                    s: {
                        "docs": _int(stats[f"docs.{s}"]),
                        "bytes": _int(stats[f"bytes.{s}"]),
                        "tokens": _int(stats[f"tokens.{s}"]),
                    }
                    for s in SEGMENTS
                }
                prefix = "docs.source."
                point["by_source"] = {
                    k[len(prefix) :]: int(v) for k, v in stats.items() if k.startswith(prefix)
                }
                points.append(point)
            elif name.endswith("]"):
                scope = name.rsplit("[", 1)[1].rstrip("]")
                for key, n in stats.items():
                    if key.startswith("dropped_"):
                        drops[scope][key.removeprefix("dropped_")] += int(n)
            elif name.startswith("📖 "):
                sources[name[2:]] = {
                    "documents": int(stats["documents"]),
                    "bad_records": int(stats["bad_records"]),
                }
            elif "PII" in name:
                for key, n in stats.items():
                    if key.startswith("pii."):
                        pii[key[4:]] += int(n)
            elif "deduplication stage 3" in name or "MinHash stage 4" in name:
                removed["exact" if "exact" in name else "near_duplicate"] = int(stats["dropped"])
            elif name.endswith("Mix"):
                removed["mix_downsampled"] = int(stats["dropped"])
                removed["mix_added_copies"] = int(stats["out"] - stats["in"] + stats["dropped"])
    plan = MixPlan.load(config.work_path / "mix_plan.json")
    final = points[-1]["by_segment"] if points else {}
    total_tokens = sum(v["tokens"] for v in final.values()) or 1
    achieved = {s: final[s]["tokens"] / total_tokens for s in SEGMENTS} if final else {}
    bad = read_bad_records(config.work_path / "bad_records")
    return {
        "output_dir": str(config.output_path),
        "token_unit": f"tokens of {config.tokenizer}" if config.tokenizer else "UTF-8 bytes",
        "stages": points,
        "sources": sources,
        "dropped_by_filter": {k: dict(v) for k, v in drops.items()},
        "removed": removed,
        "pii_replacements": dict(pii),
        "mix": {
            "target_shares": plan.shares,
            "achieved_shares": achieved,
            "rates": plan.rates,
            "available_tokens": plan.available_tokens,
            "target_tokens": plan.target_tokens,
            "output_tokens": {s: final[s]["tokens"] for s in SEGMENTS} if final else {},
        },
        "bad_records": {"count": len(bad), "records": [asdict(r) for r in bad]},
    }


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def render_summary(stats: dict[str, Any]) -> str:
    lines = [f"# Corpus build summary: `{stats['output_dir']}`", ""]
    lines += [
        "## Documents and bytes per stage",
        "",
        "| after | docs | bytes | " + " | ".join(SEGMENTS) + " |",
    ]
    lines.append("|---|---:|---:|" + "---:|" * len(SEGMENTS))
    for p in stats["stages"]:
        per = " | ".join(
            f"{p['by_segment'][s]['docs']} docs / {_mb(p['by_segment'][s]['bytes'])}" for s in SEGMENTS
        )
        lines.append(f"| {p['stage']} | {p['docs']} | {_mb(p['bytes'])} | {per} |")
    written = stats["stages"][-1]["by_source"] if stats["stages"] else {}
    lines += [
        "",
        "## Sources",
        "",
        "| source | read | bad records | written (after mix) |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {v['documents']} | {v['bad_records']} | {written.get(name, 0)} |"
        for name, v in stats["sources"].items()
    ]
    lines += ["", "## Why documents were dropped", "", "| scope | reason | docs |", "|---|---|---:|"]
    for scope, reasons in sorted(stats["dropped_by_filter"].items()):
        lines += [
            f"| {scope} | {reason} | {n} |" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])
        ]
    lines += [f"| all | {reason} | {n} |" for reason, n in stats["removed"].items()]
    lines += ["", "## PII replaced", ""]
    lines += [f"- {kind}: {n}" for kind, n in sorted(stats["pii_replacements"].items())] or ["- none"]
    mix = stats["mix"]
    lines += ["", f"## Mix by tokens ({stats['token_unit']})", ""]
    lines += [
        "| segment | target share | achieved share | output tokens | rate |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in SEGMENTS:
        lines.append(
            f"| {s} | {mix['target_shares'][s]:.3f} | {mix['achieved_shares'].get(s, 0):.3f} | "
            f"{mix['output_tokens'].get(s, 0)} | {mix['rates'][s]:.3f} |"
        )
    bad = stats["bad_records"]
    lines += ["", f"## Skipped bad records: {bad['count']}", ""]
    lines += [f"- `{r['path']}:{r['line']}` ({r['source']}): {r['reason']}" for r in bad["records"][:200]]
    if bad["count"] > 200:
        lines.append(f"- ... {bad['count'] - 200} more in stats.json")
    return "\n".join(lines) + "\n"


class WriteReport(PipelineStep):
    """Single-task final stage: writes ``stats.json`` and ``summary.md`` into the output directory."""

    type = "📊 - METER"
    name = "📝 Report"

    def __init__(self, config: DataConfig, stage_names: list[str]):
        super().__init__()
        self.config = config
        self.stage_names = stage_names

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        stats = collect_stats(self.config, self.stage_names)
        out = self.config.output_path
        (out / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False))
        (out / "summary.md").write_text(render_summary(stats))
        yield from ()
