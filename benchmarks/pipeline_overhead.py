"""Training wall time with and without asynchronous checkpoint evaluation (SPEC §5.4).

The report's pipeline evaluates every saved checkpoint "without interrupting training". This
runs the same small pretraining recipe through ``hcx run`` twice in one process, on the tiny
recipe's corpus and tokenizer (``bash scripts/run.sh`` first): once with evaluation switched
off, once with one evaluation worker scoring each checkpoint-saved event on the other core,
and prints the training time of each (first to last step, from the stage's train_log.jsonl)
and their ratio. Goal: at most 5 % slower with evaluation on.

    .venv/bin/python benchmarks/pipeline_overhead.py [--steps 150] [--every 25] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from hcx.pipeline.store import Store

SUITE = {
    "description": "checkpoint scoring for the overhead benchmark",
    "tasks": [
        {"task": "hcx_kmmlu_criminal_law", "num_fewshot": 0, "limit": 20, "category": "korean"},
        {"task": "hcx_piqa", "limit": 20, "category": "commonsense"},
        {"task": "hcx_arc_easy", "num_fewshot": 0, "limit": 20, "category": "commonsense"},
    ],
}


def recipe(out: Path, args: argparse.Namespace, workers: int) -> Path:
    (out / "suite.yaml").write_text(yaml.safe_dump(SUITE))
    body = {
        "pipeline": {
            "run_dir": str(out / "pipe"),
            "register_models": False,
            "stages": {"pretrain": {"resources": {"cpus": 1}}},
            "evaluation": {"workers": workers, "suite": str(out / "suite.yaml"), "resources": {"cpus": 1}},
        },
        "pretrain": {
            "corpus": str(args.corpus),
            "tokenizer": str(args.tokenizer),
            "output_dir": str(out / "pretrain"),
            "max_documents": 5000,
            "model": {"preset": "tiny", "vocab_size": None},
            "steps": args.steps,
            "stages": [{"fraction": 1.0, "seq_len": 256, "batch_size": 8, "rope_base": 10000}],
            "checkpoint": {"every": args.every, "keep": 2},
            "dtype": "float32",
            "log_every": 5,
        },
    }
    path = out / "recipe.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def training_seconds(train_log: Path) -> float:
    rows = [json.loads(line) for line in train_log.read_text().splitlines()]
    start = next(r["time"] for r in rows if r.get("event") == "start")
    last = max(r["time"] for r in rows if "loss" in r)
    return last - start


def one_run(args: argparse.Namespace, workers: int) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        path = recipe(out, args, workers)
        done = subprocess.run(
            [sys.executable, "-m", "hcx.cli", "run", str(path)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
        evaluations = Store(f"sqlite:///{out}/pipe/pipeline.db").evaluations()
        return training_seconds(out / "pretrain" / "train_log.jsonl"), evaluations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="runs/tiny/corpus/*.jsonl.gz")
    parser.add_argument("--tokenizer", type=Path, default=Path("runs/tiny/tokenizer"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if not args.tokenizer.is_dir():
        raise SystemExit(f"{args.tokenizer} not found: run `bash scripts/run.sh` (the tiny recipe) first")
    off, on = [], []
    for _ in range(args.repeats):
        off.append(one_run(args, workers=0)[0])
        seconds, evaluations = one_run(args, workers=1)
        on.append(seconds)
    done = [e for e in evaluations if e["status"] == "done"]
    during = [e for e in done if e["finished"] is not None]
    a, b = statistics.median(off), statistics.median(on)
    print(f"pretraining, {args.steps} steps, checkpoint every {args.every}, training pinned to 1 core")
    print(f"  evaluation off : {a:7.1f} s training")
    print(
        f"  evaluation on  : {b:7.1f} s training, {len(done)} checkpoint evaluations by 1 worker on the other core"
    )
    print(f"  evaluations finished: {len(during)} of {len(evaluations)} events")
    print(f"slowdown with asynchronous evaluation: {b / a:.3f}x ({(b / a - 1) * 100:+.1f} %); goal <= +5 %")


if __name__ == "__main__":
    main()
