"""Benchmark log-likelihood evaluation (issue 7, SPEC §6): the ``hcx`` backend vs lm-eval's ``hf``.

Both backends score the same requests built by lm-eval from the same items (KMMLU
Criminal-Law 5-shot and CLIcK 0-shot, read from the shared data) with the same HF-format
checkpoint: ``runs/tiny/hf`` when the tiny recipe has been run, else a random-initialised
``tiny`` model exported with the tokenizer given by ``--tokenizer`` (default
``runs/tiny/tokenizer``). Both use the same window (``max_length``), so accuracies must be
equal; they are printed side by side with requests/s and the ratio. Only the
``loglikelihood`` call is timed (requests are built once, outside the clock), ``--repeats``
times each, interleaved, best kept: other jobs share the machine. ``--tasks`` adds others,
e.g. ``hcx_arc_challenge`` (25-shot, multi-token choices: the case ``hf`` does not share).
Both backends run in ``--dtype`` (float32 by default, where scores must be identical); the
engine's prefix-cache hit rate is printed with the machine and its threads.

    .venv/bin/python benchmarks/eval_throughput.py --limit 60
    .venv/bin/python benchmarks/eval_throughput.py --model runs/tiny/sft/hf --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from machine import cpu_name
from rich.console import Console
from rich.table import Table

from hcx.eval.backend import HcxLM
from hcx.eval.runner import task_manager
from hcx.paths import find_data_dir

TASKS = ("hcx_kmmlu_criminal_law", "hcx_click")


def random_export(tokenizer_dir: Path, out: Path, context: int) -> Path:
    """A random-initialised ``tiny`` model with ``context`` positions, exported to HF format."""
    from hcx.model.config import ModelConfig
    from hcx.model.hf import export_hf
    from hcx.model.transformer import Transformer
    from hcx.tokenizer import load

    torch.manual_seed(0)
    vocab = -(-load(tokenizer_dir).vocab_size // 64) * 64
    model = Transformer(ModelConfig(preset="tiny", vocab_size=vocab, max_seq_len=context))
    return export_hf(model, out, tokenizer_dir)


def build_requests(tasks: list[str], limit: int) -> dict[str, tuple[object, list[Instance]]]:
    """lm-eval's own request building for each task, ``limit`` items each."""
    manager = task_manager(find_data_dir())
    built = {}
    for name, task in manager.load(tasks)["tasks"].items():
        task.set_fewshot_seed(1234)
        task.build_all_requests(limit=limit, rank=0, world_size=1)
        built[name] = (task, [i for i in task.instances])
    return built


def accuracy(task: object, instances: list[Instance], scores: list[tuple[float, bool]]) -> float:
    """Share of items whose gold choice has the highest log-likelihood (lm-eval's ``acc``)."""
    by_doc: dict[int, list[tuple[int, float]]] = {}
    for instance, (logprob, _) in zip(instances, scores, strict=True):
        by_doc.setdefault(instance.doc_id, []).append((instance.idx, logprob))
    hits = 0
    for doc_id, choices in by_doc.items():
        doc = instances[[i.doc_id for i in instances].index(doc_id)].doc
        gold = task.doc_to_target(doc)  # type: ignore[attr-defined]
        best = max(choices, key=lambda c: c[1])[0]
        hits += int(best == gold)
    return hits / len(by_doc)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("runs/tiny/hf"))
    parser.add_argument("--tokenizer", type=Path, default=Path("runs/tiny/tokenizer"))
    parser.add_argument(
        "--random", type=int, metavar="CONTEXT", help="use a random tiny model with this context"
    )
    parser.add_argument("--limit", type=int, default=60, help="items per task")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated hcx log-likelihood tasks")
    parser.add_argument("--batch-size", type=int, default=16, help="hf backend batch size")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="both backends' dtype (float32, bfloat16)")
    args = parser.parse_args()
    console = Console()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.random or not (args.model / "config.json").is_file():
            if not (args.tokenizer / "tokenizer.json").is_file():
                parser.error(
                    f"no checkpoint at {args.model} and no tokenizer at {args.tokenizer}: run the tiny recipe"
                )
            model_dir = random_export(args.tokenizer, Path(tmp) / "hf", args.random or 1024)
        else:
            model_dir = args.model
        context = json.loads((model_dir / "config.json").read_text())["max_position_embeddings"]
        ours = HcxLM(pretrained=str(model_dir), device=args.device, dtype=args.dtype)
        theirs = HFLM(
            pretrained=str(model_dir),
            device=args.device,
            batch_size=args.batch_size,
            max_length=ours.max_length,
            dtype=args.dtype,
        )
        requests = build_requests(args.tasks.split(","), args.limit)
        instances = [i for _, batch in requests.values() for i in batch]
        console.print(
            f"model {model_dir} (context {context}, {args.dtype}), {len(instances)} loglikelihood "
            f"requests from {', '.join(requests)}; {cpu_model()}, {torch.get_num_threads()} torch threads"
        )
        timings: dict[str, float] = {"hcx": float("inf"), "hf": float("inf")}
        results: dict[str, list[tuple[float, bool]]] = {}
        hit_rates = []
        for _ in range(args.repeats):
            for name, lm in (("hcx", ours), ("hf", theirs)):
                ours.engine.forget_cached_prefixes()  # each repeat starts from an empty cache
                hits, queried = ours.prefix_cache_counts
                start = time.perf_counter()
                results[name] = lm.loglikelihood(instances, disable_tqdm=True)
                timings[name] = min(timings[name], time.perf_counter() - start)
                if name == "hcx":
                    after = ours.prefix_cache_counts
                    hit_rates.append((after[0] - hits) / max(1, after[1] - queried))
    table = Table(title="log-likelihood evaluation: hcx backend vs lm-eval hf")
    table.add_column("backend")
    table.add_column("requests/s", justify="right")
    for task_name in requests:
        table.add_column(f"{task_name} acc", justify="right")
    offsets, start = {}, 0
    for task_name, (_, batch) in requests.items():
        offsets[task_name] = (start, start + len(batch))
        start += len(batch)
    for name in ("hcx", "hf"):
        accs = [
            f"{100 * accuracy(task, batch, results[name][slice(*offsets[t])]):.2f}"
            for t, (task, batch) in requests.items()
        ]
        table.add_row(name, f"{len(instances) / timings[name]:.1f}", *accs)
    console.print(table)
    worst = max(abs(a[0] - b[0]) for a, b in zip(results["hcx"], results["hf"], strict=True))
    console.print(f"largest log-likelihood difference: {worst:.2e}")
    console.print(f"hcx prefix-cache hit rate: {100 * hit_rates[-1]:.1f} % of admitted tokens")
    console.print(f"speed-up hcx / hf: {timings['hf'] / timings['hcx']:.2f}x")


def cpu_model() -> str:
    """The CPU's model name and logical cores."""
    return f"{cpu_name()}, {os.cpu_count()} logical cores"


if __name__ == "__main__":
    main()
