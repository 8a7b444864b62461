"""Benchmark the hcx tokenizer (issue 3, SPEC §2): compression, encode speed, training time.

One run trains the 100k morphology-aware tokenizer, its ablation (same data, same
vocabulary, no morpheme constraint) and the ``join_grammatical`` variant (suffix chains
such as 었+다 may merge) on the shared pretraining text, each in a ``hcx tokenizer train``
subprocess limited to 2 threads, then measures on the held-out documents (never trained on):

1. Table 1: average tokens per document on Korean, English, Japanese and code for ours,
   the ablation and every reference tokenizer; bytes per token; ratio to ours.
   Goals: Korean >= 2.2x fewer tokens than cl100k, English <= 1.05x, code <= 1.2x.
2. Encode throughput on one thread (MB/s), batch and one document at a time: ours
   (tiktoken engine over our vocabulary), tiktoken cl100k, and our tokenizer.json in the
   plain Hugging Face ``tokenizers`` BPE (the same vocabulary). Goal: ours >= 1.0x tiktoken.
3. Training time of the 100k vocabulary on 2 cores, by stage.

    .venv/bin/python benchmarks/tokenizer.py            # full run (8-15 min on 2 shared cores)
    .venv/bin/python benchmarks/tokenizer.py --max-bytes-per-file 2000000 --vocab-size 16000  # quick
"""

from __future__ import annotations

import os

# One thread for the Rust tokenizers in this process (the throughput table); training runs in
# subprocesses with their own thread count.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table
from tokenizers import Tokenizer

from hcx.paths import find_data_dir
from hcx.tokenizer import load
from hcx.tokenizer.config import REFERENCE_NAMES, TokenizerConfig
from hcx.tokenizer.references import hcx_counter, load_reference
from hcx.tokenizer.stats import OURS, compare, held_out_documents, print_table
from hcx.tokenizer.train import INFO_FILE

ABLATION = "ablation (no morphemes)"
JOINED = "hcx, suffix chains joined"
# name, directory under --out, recipe keys that differ from the defaults
VARIANTS = (
    (OURS, "hcx", {}),
    (ABLATION, "ablation", {"morpheme_aware": False}),
    (JOINED, "hcx-joined", {"join_grammatical": True}),
)
LANGUAGES = {"Korean": "ko", "English": "en", "Japanese": "ja", "code": "code"}
console = Console(width=150)
TIMINGS_FILE = "benchmark_training_seconds.json"


def train(out: Path, keys: dict, args: argparse.Namespace) -> dict:
    """Run ``hcx tokenizer train`` on ``--threads`` threads and return its training_info.json."""
    section = {
        "output_dir": str(out),
        "vocab_size": args.vocab_size,
        "num_workers": args.threads,
        "cache_dir": "",  # time every stage from scratch
        **keys,
    }
    if args.max_bytes_per_file:
        section["max_bytes_per_file"] = args.max_bytes_per_file
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as recipe:
        yaml.safe_dump({"tokenizer": section}, recipe)
    env = {**os.environ, "RAYON_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "hcx.cli", "tokenizer", "train", recipe.name], check=True, env=env)
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    info = json.loads((out / INFO_FILE).read_text())
    info["wall_seconds"] = time.perf_counter() - started
    info["cpu_seconds"] = (cpu_after.ru_utime + cpu_after.ru_stime) - (
        cpu_before.ru_utime + cpu_before.ru_stime
    )
    os.unlink(recipe.name)
    return info


def throughput(fn, texts: list[str], repeats: int) -> float:
    size = sum(len(t.encode()) for t in texts)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn(texts)
        best = min(best, time.perf_counter() - started)
    return size / best / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench/tokenizer"))
    parser.add_argument("--vocab-size", type=int, default=TokenizerConfig().vocab_size)
    parser.add_argument("--max-bytes-per-file", type=int, default=None, help="Train on a slice (quick runs).")
    parser.add_argument("--docs-per-language", type=int, default=100_000, help="Held-out documents measured.")
    parser.add_argument("--threads", type=int, default=2, help="Threads for training.")
    parser.add_argument("--repeats", type=int, default=3, help="Throughput: best of this many runs.")
    parser.add_argument("--reuse", action="store_true", help="Reuse tokenizers already trained in --out.")
    args = parser.parse_args()
    data_dir = find_data_dir()
    config = TokenizerConfig()
    dirs = {name: args.out / folder for name, folder, _ in VARIANTS}
    ours_dir = dirs[OURS]

    infos = {}
    for name, _, keys in VARIANTS:
        path = dirs[name]
        if args.reuse and (path / INFO_FILE).is_file():
            timings = path / TIMINGS_FILE
            measured = json.loads(timings.read_text()) if timings.is_file() else {"wall_seconds": None}
            infos[name] = {**json.loads((path / INFO_FILE).read_text()), **measured}
        else:
            console.print(f"[bold]training {name}[/bold] → {path}")
            infos[name] = train(path, keys, args)
            measured = {k: infos[name][k] for k in ("wall_seconds", "cpu_seconds")}
            (path / TIMINGS_FILE).write_text(json.dumps(measured) + "\n")

    files = {lang: data_dir / "pretrain" / f"{LANGUAGES[lang]}.jsonl.gz" for lang in LANGUAGES}
    documents = held_out_documents(files, args.docs_per_language, config.held_out_fraction)
    counters = [hcx_counter(name, dirs[name]) for name, _, _ in VARIANTS]
    counters += [load_reference(name, data_dir / "tokenizers") for name in REFERENCE_NAMES]
    table = compare(counters, documents)
    console.rule("1. Table 1: tokens per held-out document")
    print_table(table, console)
    ko_gain = table.ratio("gpt4-cl100k", "Korean")
    en_cost = 1 / table.ratio("gpt4-cl100k", "English")
    code_cost = 1 / table.ratio("gpt4-cl100k", "code")
    goals = [
        (f"Korean: cl100k needs {ko_gain:.2f}× our tokens", "≥ 2.2×", ko_gain >= 2.2),
        (f"English: we need {en_cost:.3f}× cl100k's tokens", "≤ 1.05×", en_cost <= 1.05),
        (f"code: we need {code_cost:.3f}× cl100k's tokens", "≤ 1.2×", code_cost <= 1.2),
    ]
    for name, _, _ in VARIANTS[1:]:
        console.print(
            f"Korean tokens, {name} / ours: {table.ratio(name, 'Korean'):.3f}; "
            f"cl100k / {name}: {table.ratio('gpt4-cl100k', 'Korean', name):.2f}×"
        )

    console.rule("2. Encode throughput, one thread (MB/s, best of repeats)")
    ours = load(ours_dir)
    hf = Tokenizer.from_file(str(ours_dir / "tokenizer.json"))
    hf.encode_special_tokens = True
    cl100k = load_reference("gpt4-cl100k", data_dir / "tokenizers")
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    from hcx.tokenizer.references import CL100K_PATTERN

    cl = tiktoken.Encoding(
        "cl100k",
        pat_str=CL100K_PATTERN,
        mergeable_ranks=load_tiktoken_bpe(str(data_dir / "tokenizers/gpt4-cl100k/cl100k_base.tiktoken")),
        special_tokens={},
    )
    del cl100k
    engines = {
        "hcx (tiktoken engine, our vocab)": (
            lambda ts: ours.encode_batch(ts, num_threads=1),
            lambda ts: [ours.encode(t) for t in ts],
        ),
        "tiktoken cl100k": (
            lambda ts: cl.encode_ordinary_batch(ts, num_threads=1),
            lambda ts: [cl.encode_ordinary(t) for t in ts],
        ),
        "HF tokenizers BPE (our tokenizer.json)": (
            lambda ts: hf.encode_batch(ts, add_special_tokens=False),
            lambda ts: [hf.encode(t, add_special_tokens=False) for t in ts],
        ),
    }
    mixed = [t for lang in LANGUAGES for t in documents[lang]]
    corpora = {**documents, "all four": mixed}
    speed = Table(title="MB/s (UTF-8 input), one thread")
    speed.add_column("engine")
    speed.add_column("mode")
    for name in corpora:
        speed.add_column(name, justify="right")
    results: dict[tuple[str, str], dict[str, float]] = {}
    for engine, (batch_fn, single_fn) in engines.items():
        for mode, fn in (("batch", batch_fn), ("single", single_fn)):
            results[engine, mode] = {c: throughput(fn, texts, args.repeats) for c, texts in corpora.items()}
            speed.add_row(engine, mode, *[f"{results[engine, mode][c]:.2f}" for c in corpora])
    console.print(speed)
    for mode in ("batch", "single"):
        ratio = (
            results["hcx (tiktoken engine, our vocab)", mode]["all four"]
            / results["tiktoken cl100k", mode]["all four"]
        )
        goals.append((f"throughput {mode}: ours / tiktoken cl100k = {ratio:.2f}×", "≥ 1.0×", ratio >= 1.0))
    mismatched = sum(
        a != b.ids for a, b in zip(ours.encode_batch(mixed), hf.encode_batch(mixed), strict=True)
    )
    console.print(
        f"id parity, fast engine vs tokenizer.json: {len(mixed) - mismatched}/{len(mixed)} documents equal"
    )

    console.rule("3. Training time (2 threads)")
    times = Table(title=f"Training the {args.vocab_size:,}-token vocabulary")
    for column in (
        "tokenizer",
        "documents",
        "distinct words",
        "count words s",
        "Kiwi s",
        "BPE s",
        "save s",
        "total s",
        "wall s",
        "CPU s",
    ):
        times.add_column(column, justify="right")
    for name, info in infos.items():
        stage = info.get("stage_seconds", {})
        wall = info.get("wall_seconds")
        times.add_row(
            name,
            f"{info['documents']:,}",
            f"{info['distinct_words']:,}",
            *[f"{stage.get(k, 0):.1f}" for k in ("count_words", "morphemes", "bpe", "build")],
            f"{info['seconds']:.1f}",
            "reused" if wall is None else f"{wall:.1f}",
            "reused" if wall is None else f"{info['cpu_seconds']:.1f}",
        )
    console.print(times)

    console.rule("Goals")
    for claim, goal, met in goals:
        console.print(f"{'MET   ' if met else 'MISSED'} {claim} (goal {goal})")


if __name__ == "__main__":
    main()
