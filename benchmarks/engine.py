"""Benchmark the inference engine (issue 6, SPEC §5.3): continuous vs static batching vs one at a time.

64 chat prompts of mixed lengths from the shared data (Korean SFT user turns, Korean
preference prompts, English SFT instructions up to ~600 tokens) with mixed
``max_new_tokens`` drawn from a log-normal (chat answers are heavy-tailed: most short, a
few long), generated three ways with the same model, the same engine and the same packed,
paged forward — only the scheduling differs:

1. one at a time: each request alone;
2. static batching: fixed batches of ``--slots`` requests; a batch runs until its longest
   request finishes, so the slots of shorter requests compute tokens nobody reads (their
   outputs are truncated to their own ``max_new_tokens``); prompts are packed, not padded,
   which favours static batching over a padded implementation;
3. continuous batching: all 64 submitted at once, at most ``--slots`` running; a request
   leaves when it finishes and the next one joins in the following step.

Tokens/s counts useful generated tokens (the sum of the requests' ``max_new_tokens``),
the same for the three. Other jobs share the machine, so static and continuous batching run
``--repeats`` times, interleaved, and the fastest of each is kept (one at a time runs once);
the process's CPU time is printed beside wall time (the run is single-threaded). Stop
tokens are off so each request's length is its budget (a random model's end-of-turn would
otherwise end some early by chance). The model is random: speed does not depend on the
weights.

    .venv/bin/python benchmarks/engine.py                 # tiny model, CPU, ~3 min
    .venv/bin/python benchmarks/engine.py --preset small --device cuda --slots 64
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.prompts import chat_prompt_ids, read_user_turns
from hcx.infer.sampling import SamplingParams
from hcx.model import ModelConfig, Transformer
from hcx.paths import find_data_dir
from hcx.tokenizer import HcxTokenizer, load, train_tokenizer

console = Console(width=130)


def benchmark_prompts(tok: HcxTokenizer, data_dir: Path, max_prompt_tokens: int) -> list[list[int]]:
    korean = read_user_turns(data_dir / "sft" / "ko.jsonl.gz", limit=32, every=347)
    with open(data_dir / "preference" / "ko.jsonl", encoding="utf-8") as f:
        preference = [p for line in f if isinstance(p := json.loads(line)["prompt"], str)][::29][:16]
    english = read_user_turns(data_dir / "sft" / "en.jsonl.gz", limit=400, every=7)
    english = [t for t in english if len(tok.encode(t)) < max_prompt_tokens][::20][:16]
    prompts = chat_prompt_ids(tok, korean + preference + english)
    random.Random(0).shuffle(prompts)
    return prompts


def budgets(count: int, median: float, sigma: float, low: int, high: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [min(high, max(low, round(rng.lognormvariate(0, sigma) * median))) for _ in range(count)]


def run_one_at_a_time(engine: Engine, prompts, params) -> None:
    for prompt, sp in zip(prompts, params, strict=True):
        out = engine.generate([prompt], sp)[0]
        assert len(out.token_ids) == sp.max_new_tokens


def run_static(engine: Engine, prompts, params, slots: int) -> None:
    for start in range(0, len(prompts), slots):
        batch, wanted = prompts[start : start + slots], params[start : start + slots]
        longest = max(sp.max_new_tokens for sp in wanted)
        outs = engine.generate(batch, [sp.model_copy(update={"max_new_tokens": longest}) for sp in wanted])
        for out, sp in zip(outs, wanted, strict=True):
            assert len(out.token_ids[: sp.max_new_tokens]) == sp.max_new_tokens


def run_continuous(engine: Engine, prompts, params) -> None:
    for out, sp in zip(engine.generate(prompts, params), params, strict=True):
        assert len(out.token_ids) == sp.max_new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tokenizer", type=Path, default=None, help="tokenizer dir (default: train a small one)"
    )
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--slots", type=int, default=16, help="static batch size = continuous max_running")
    parser.add_argument("--median-new-tokens", type=float, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared 2-core box)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="static and continuous runs, interleaved; best kept"
    )
    parser.add_argument("--skip-one-at-a-time", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = find_data_dir(required=True)
    assert data_dir is not None

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = args.tokenizer
        if tokenizer_dir is None:
            files = [data_dir / "pretrain" / f"{lang}.jsonl.gz" for lang in ("ko", "en")]
            console.print("training a 4096-token tokenizer on 300 KB of Korean and English ...")
            tokenizer_dir = train_tokenizer(
                files=files, vocab_size=4096, output_dir=Path(tmp) / "tok", max_bytes_per_file=300_000
            )
        tok = load(tokenizer_dir)

    cfg = ModelConfig(preset=args.preset, vocab_size=tok.vocab_size, max_seq_len=1024)
    model = Transformer(cfg)
    model.init_weights(seed=0)
    model = model.to(args.device).eval()
    max_prompt = cfg.max_seq_len - args.max_new_tokens
    prompts = benchmark_prompts(tok, data_dir, max_prompt)
    lengths = budgets(len(prompts), args.median_new_tokens, 1.0, 8, args.max_new_tokens, seed=0)
    params = [SamplingParams(temperature=0.0, max_new_tokens=n, stop_token_ids=[]) for n in lengths]
    useful = sum(lengths)
    prompt_lengths = sorted(len(p) for p in prompts)
    static_rows = sum(
        len(lengths[i : i + args.slots]) * max(lengths[i : i + args.slots])
        for i in range(0, len(lengths), args.slots)
    )
    console.print(
        f"{len(prompts)} prompts, prompt tokens min/median/max {prompt_lengths[0]}/"
        f"{prompt_lengths[len(prompts) // 2]}/{prompt_lengths[-1]}; max_new_tokens min/median/max "
        f"{min(lengths)}/{sorted(lengths)[len(lengths) // 2]}/{max(lengths)}, {useful} in all; "
        f"model {args.preset} ({cfg.num_params() / 1e6:.1f}M params) on {args.device}, {args.threads} thread(s)"
    )
    engine_cfg = EngineConfig(block_size=16, num_blocks=2048, max_running=args.slots, max_step_tokens=1024)

    def timed(name: str, run) -> dict:
        engine = Engine(model, tok, engine_cfg)
        engine.generate(prompts[:2], SamplingParams(temperature=0.0, max_new_tokens=4, stop_token_ids=[]))
        steps0, tokens0 = engine.num_steps, engine.num_computed_tokens
        started, cpu_started = time.perf_counter(), time.process_time()
        run(engine)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        steps, computed = engine.num_steps - steps0, engine.num_computed_tokens - tokens0
        console.print(f"  {name}: {seconds:.1f} s wall, {cpu:.1f} s CPU")
        return dict(name=name, seconds=seconds, cpu=cpu, steps=steps, computed=computed)

    modes = {
        "static batching": lambda e: run_static(e, prompts, params, args.slots),
        "continuous batching": lambda e: run_continuous(e, prompts, params),
    }
    runs: dict[str, list[dict]] = {name: [] for name in modes}
    if not args.skip_one_at_a_time:
        runs["one at a time"] = [timed("one at a time", lambda e: run_one_at_a_time(e, prompts, params))]
    for _ in range(args.repeats):
        for name, run in modes.items():
            runs[name].append(timed(name, run))

    best = {name: min(rs, key=lambda r: r["seconds"]) for name, rs in runs.items()}
    best_cpu = {name: min(r["cpu"] for r in rs) for name, rs in runs.items()}
    static = best["static batching"]
    table = Table(title=f"generation, {useful} useful tokens, {args.slots} slots, best of {args.repeats}")
    columns = (
        "mode",
        "wall s",
        "useful tokens/s",
        "vs static",
        "CPU s",
        "vs static (CPU)",
        "steps",
        "computed",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for name in ("one at a time", "static batching", "continuous batching"):
        if name not in best:
            continue
        r = best[name]
        table.add_row(
            name,
            f"{r['seconds']:.2f}",
            f"{useful / r['seconds']:.0f}",
            f"{static['seconds'] / r['seconds']:.2f}x",
            f"{best_cpu[name]:.2f}",
            f"{best_cpu['static batching'] / best_cpu[name]:.2f}x",
            str(r["steps"]),
            str(r["computed"]),
        )
    console.print(table)
    continuous = best["continuous batching"]
    console.print(
        f"continuous / static = {static['seconds'] / continuous['seconds']:.2f}x tokens/s wall, "
        f"{best_cpu['static batching'] / best_cpu['continuous batching']:.2f}x CPU time (goal >= 3x). "
        f"Static batching decodes {static_rows} slot-tokens for {useful} useful ({static_rows / useful:.2f}x) "
        f"in {static['steps']} steps; continuous needs {continuous['steps']}."
    )
    if "one at a time" in best:
        alone = best["one at a time"]
        console.print(
            f"continuous / one at a time = {alone['seconds'] / continuous['seconds']:.2f}x tokens/s wall"
        )


if __name__ == "__main__":
    main()
