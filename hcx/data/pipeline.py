"""The corpus build as a chain of datatrove stages (SPEC §1), run by a datatrove executor.

    filter          read sources → quality filters → PII → shard + exact-dedup signatures
    exact-find      one task finds exact duplicates across all shards
    exact-filter    drop them → shard + MinHash signatures
    minhash-buckets one task per bucket finds near-duplicate pairs
    minhash-cluster one task clusters pairs, picks the documents to remove
    minhash-filter  drop them → count tokens → shard + mix index
    plan            one task solves the per-segment rates for the token mix
    mix             upsample/downsample per the plan, shuffle → OUTPUT_DIR/<rank>.jsonl.gz
    report          one task writes stats.json and summary.md

Every stage is an ordinary datatrove pipeline, so the same chain runs on the local
executor (default), on Ray or on Slurm. Each stage keeps datatrove's completion markers in
``OUTPUT_DIR/_work/logs/<stage>``: re-running after an interruption skips finished tasks.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datatrove.executor.base import PipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup import (
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.dedup.exact_dedup import ExactDedupFilter, ExactDedupSignature, ExactFindDedups
from rich.console import Console

from hcx.data.config import DataConfig
from hcx.data.dedup import exact_config, minhash_config
from hcx.data.filters import build_filters
from hcx.data.reader import SourceReader
from hcx.data.report import WriteReport
from hcx.data.steps import (
    Meter,
    Mixer,
    MixIndexWriter,
    PIIScrubber,
    ShardReader,
    TokenCounter,
    corpus_writer,
    shard_writer,
)
from hcx.data.words import UnicodeWordTokenizer

FINGERPRINT = "recipe.json"


class StaleWorkError(RuntimeError):
    """The output directory holds a build of a different recipe."""


@dataclass
class Stage:
    name: str
    steps: list[PipelineStep]
    tasks: int


class PlanMix(PipelineStep):
    """Single-task stage: reads the mix index of every shard and writes the mix plan."""

    type = "🎛 - MIX"
    name = "🎛 Plan mix"

    def __init__(
        self, index_folder: str, plan_file: str, shares: dict[str, float], total: int | None, seed: int
    ):
        super().__init__()
        self.index_folder = index_folder
        self.plan_file = plan_file
        self.shares = shares
        self.total = total
        self.seed = seed

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from hcx.data.mix import plan_mix
        from hcx.data.steps import load_mix_index

        plan = plan_mix(load_mix_index(self.index_folder), self.shares, self.total, self.seed)
        plan.save(Path(self.plan_file))
        yield from ()


def build_stages(config: DataConfig) -> list[Stage]:
    work, out = config.work_path, config.output_path
    tasks = config.executor.tasks
    d = config.dedup
    sig = work / "dedup"

    def w(name: str) -> str:
        return str(work / name)

    readers: list[PipelineStep] = [
        SourceReader(s, config.on_bad_record, w("bad_records"), held_out_fraction=config.held_out_fraction)
        for s in config.sources
    ]
    first: list[PipelineStep] = [*readers, Meter("read"), *build_filters(config), Meter("quality filters")]
    if config.pii.enabled:
        first += [PIIScrubber(), Meter("PII scrub")]
    first.append(shard_writer(w("filtered")))
    if d.exact:
        first.append(ExactDedupSignature(str(sig / "exact_sigs"), exact_config()))
    stages = [Stage("filter", first, tasks)]

    second: list[PipelineStep] = [ShardReader(w("filtered"))]
    if d.exact:
        stages.append(
            Stage(
                "exact-find",
                [ExactFindDedups(str(sig / "exact_sigs"), str(sig / "exact_dups"), exact_config())],
                1,
            )
        )
        second += [ExactDedupFilter(str(sig / "exact_dups"), exact_config()), Meter("exact dedup")]
    second.append(shard_writer(w("exact")))
    mh = minhash_config(d)
    if d.minhash:
        second.append(MinhashDedupSignature(str(sig / "minhash_sigs"), mh, language=UnicodeWordTokenizer()))
    stages.append(Stage("exact-filter", second, tasks))

    third: list[PipelineStep] = [ShardReader(w("exact"))]
    if d.minhash:
        stages.append(
            Stage(
                "minhash-buckets",
                [MinhashDedupBuckets(str(sig / "minhash_sigs"), str(sig / "minhash_buckets"), config=mh)],
                d.num_buckets,
            )
        )
        stages.append(
            Stage(
                "minhash-cluster",
                [MinhashDedupCluster(str(sig / "minhash_buckets"), str(sig / "minhash_remove"), config=mh)],
                1,
            )
        )
        third += [MinhashDedupFilter(str(sig / "minhash_remove")), Meter("near-dup dedup")]
    third += [
        TokenCounter(config.tokenizer),
        MixIndexWriter(w("mix_index"), config.mix.seed),
        shard_writer(w("deduped")),
    ]
    stages.append(Stage("minhash-filter", third, tasks))

    plan_file = w("mix_plan.json")
    shares = config.mix.shares()
    stages.append(
        Stage(
            "plan", [PlanMix(w("mix_index"), plan_file, shares, config.mix.total_tokens, config.mix.seed)], 1
        )
    )
    stages.append(
        Stage(
            "mix",
            [
                ShardReader(w("deduped")),
                Mixer(plan_file, config.mix.shuffle_buffer),
                Meter("mix"),
                corpus_writer(str(out)),
            ],
            tasks,
        )
    )
    stages.append(Stage("report", [WriteReport(config, [s.name for s in stages])], 1))
    return stages


def _local(config: DataConfig) -> Callable[[Stage, Path, PipelineExecutor | None], PipelineExecutor]:
    from datatrove.executor import LocalPipelineExecutor

    def make(stage: Stage, logs: Path, previous: PipelineExecutor | None) -> PipelineExecutor:
        workers = min(config.executor.workers, stage.tasks)
        return LocalPipelineExecutor(
            stage.steps, tasks=stage.tasks, workers=workers, logging_dir=str(logs), start_method="fork"
        )

    return make


def _ray(config: DataConfig) -> Callable[[Stage, Path, PipelineExecutor | None], PipelineExecutor]:
    from datatrove.executor import RayPipelineExecutor

    def make(stage: Stage, logs: Path, previous: PipelineExecutor | None) -> PipelineExecutor:
        return RayPipelineExecutor(
            stage.steps, tasks=stage.tasks, workers=config.executor.workers, logging_dir=str(logs)
        )

    return make


def _slurm(config: DataConfig) -> Callable[[Stage, Path, PipelineExecutor | None], PipelineExecutor]:
    from datatrove.executor import SlurmPipelineExecutor

    e = config.executor
    if not e.slurm_partition:
        raise ValueError("data.executor.slurm_partition is required for kind=slurm")

    def make(stage: Stage, logs: Path, previous: PipelineExecutor | None) -> PipelineExecutor:
        return SlurmPipelineExecutor(
            stage.steps,
            tasks=stage.tasks,
            time=e.slurm_time,
            partition=e.slurm_partition,
            cpus_per_task=e.slurm_cpus_per_task,
            mem_per_cpu_gb=e.slurm_mem_per_cpu_gb,
            venv_path=e.slurm_venv,
            job_name=f"hcx-data-{stage.name}",
            logging_dir=str(logs),
            depends=previous,
        )

    return make


def _check_fingerprint(config: DataConfig, fresh: bool) -> None:
    """Resuming is only safe with the same recipe; ``fresh`` starts over."""
    out, work = config.output_path, config.work_path
    if fresh and out.exists():
        shutil.rmtree(work, ignore_errors=True)
        for stale in [*out.glob("*.jsonl.gz"), out / "stats.json", out / "summary.md"]:
            stale.unlink(missing_ok=True)
    recipe = config.model_dump(
        exclude={"executor": {"kind", "workers", "slurm_partition", "slurm_time", "slurm_venv"}}
    )
    current = json.dumps(recipe, sort_keys=True, default=str)
    path = work / FINGERPRINT
    if path.exists() and path.read_text() != current:
        raise StaleWorkError(
            f"{out} holds a build of a different recipe (see {path}); rerun with --fresh to rebuild from scratch"
        )
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(current)


def build_corpus(
    config: DataConfig,
    fresh: bool = False,
    console: Console | None = None,
    stage_seconds: dict[str, float] | None = None,
) -> Path:
    """Run every stage with the configured executor; returns the output directory.

    ``stage_seconds``, if given, receives the wall seconds of each stage run here (local and Ray).
    """
    console = console or Console(stderr=True)
    if not config.sources:
        raise ValueError("data.sources is empty: the recipe names no input")
    _check_fingerprint(config, fresh)
    make = {"local": _local, "ray": _ray, "slurm": _slurm}[config.executor.kind](config)
    stages = build_stages(config)
    previous: PipelineExecutor | None = None
    executors = []
    for stage in stages:
        previous = make(stage, config.work_path / "logs" / stage.name, previous)
        executors.append(previous)
    if config.executor.kind == "slurm":
        previous.run()
        console.print(f"[bold]submitted {len(stages)} Slurm stages; logs in {config.work_path / 'logs'}")
        return config.output_path
    for i, (stage, executor) in enumerate(zip(stages, executors, strict=True), start=1):
        console.rule(f"[bold]stage {i}/{len(stages)}: {stage.name} ({stage.tasks} tasks)")
        start = time.perf_counter()
        executor.run()
        seconds = time.perf_counter() - start
        console.print(f"[dim]{stage.name}: {seconds:.1f} s")
        if stage_seconds is not None:
            stage_seconds[stage.name] = seconds
    return config.output_path
