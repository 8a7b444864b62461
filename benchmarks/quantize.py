"""Benchmark int8 weights for the engine (issue 19): speed, weight memory and held-out bits per byte.

One trained HF-format checkpoint (``--model``, default the tiny recipe's PPO export) four ways:
float32, bfloat16, and int8 weights (:mod:`hcx.infer.quantize`) with float32 and with bfloat16
activations. On CPU the bfloat16-activation int8 is the fast one: its decode steps run torch's
fused int8 kernel, while float32 activations dequantize the weights on every call.

- Speed: greedy generation by the engine of ``--max-new-tokens`` tokens for real chat
  prompts (Korean and English SFT user turns from the shared data), one request at a time
  (4 prompts) and ``--slots`` at once (``--prompts`` prompts, continuous batching); tokens/s
  are generated tokens over wall time, prompt prefill included (the same prompts for all
  four). Stop tokens are off so each request generates its whole budget. The variants run
  ``--repeats`` times, interleaved, and the fastest of each is kept (the box is shared).
- "greedy = f32": how many of the batched greedy completions are token for token those of
  float32.
- Weight memory: parameters and saved buffers (int8 weights plus one scale per row).
- Bits per byte (:mod:`hcx.train.bpb`) on held-out Korean (KorQuAD contexts, news) and
  English (XQuAD contexts, GAP Wikipedia snippets) from ``pretrain/*.jsonl.gz`` of the shared
  data: the first documents of each source, ``--held-out-bytes`` per language, whose ids are
  not in ``--corpus`` (the tiny recipe's pretraining corpus, ``runs/tiny/corpus``), so no
  training step saw them. (The recipe's tokenizer was trained on slices of the same files;
  that does not leak into the model's loss.)

    .venv/bin/python benchmarks/quantize.py                 # tiny PPO model, 1 thread, ~1 min
    .venv/bin/python benchmarks/quantize.py --model runs/tiny/sft/hf --threads 2
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.prompts import chat_prompt_ids, read_user_turns
from hcx.infer.quantize import quantize_weights, weight_bytes
from hcx.infer.sampling import SamplingParams
from hcx.model.load import load_model
from hcx.model.transformer import Transformer
from hcx.paths import find_data_dir
from hcx.tokenizer import Tokenizer
from hcx.train.bpb import text_bits_per_byte

console = Console(width=150)
HELD_OUT_SOURCES = {
    "ko": ("korquad_v1_dev_contexts", "korean_english_news_v1_ko"),
    "en": ("xquad_en_contexts", "gap_wikipedia_snippets"),
}


def corpus_ids(corpus: Path) -> set[str]:
    """Ids of the pretraining files' documents in a built corpus (its ids are ``source/original id``)."""
    ids: set[str] = set()
    for path in sorted(corpus.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            ids.update(json.loads(line)["id"].split("/", 1)[1] for line in f)
    return ids


def held_out_texts(path: Path, sources: tuple[str, ...], used: set[str], n_bytes: int) -> list[str]:
    """The first documents of each source not in ``used``, about ``n_bytes / len(sources)`` each."""
    budget = dict.fromkeys(sources, n_bytes // len(sources))
    texts: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            source = record["source"]
            if budget.get(source, 0) > 0 and record["id"] not in used:
                texts.append(record["text"])
                budget[source] -= len(record["text"].encode("utf-8"))
    return texts


def chat_prompts(tok: Tokenizer, data_dir: Path, count: int, max_tokens: int) -> list[list[int]]:
    korean = read_user_turns(data_dir / "sft" / "ko.jsonl.gz", limit=count // 2, every=347)
    english = read_user_turns(data_dir / "sft" / "en.jsonl.gz", limit=20 * count, every=7)
    english = [t for t in english if len(tok.encode(t)) < max_tokens][: count - len(korean)]
    return chat_prompt_ids(tok, korean + english)


def variants(model: Transformer) -> dict[str, Transformer]:
    return {
        "float32": copy.deepcopy(model).float(),
        "bfloat16": copy.deepcopy(model).to(torch.bfloat16),
        "int8, float32 act.": quantize_weights(copy.deepcopy(model).float(), "int8"),
        "int8, bfloat16 act.": quantize_weights(copy.deepcopy(model).float(), "int8").to(torch.bfloat16),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("runs/tiny/ppo/hf"), help="HF-format export")
    parser.add_argument("--corpus", type=Path, default=Path("runs/tiny/corpus"), help="its training corpus")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared 2-core box)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--slots", type=int, default=16, help="engine max_running for the batched run")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--held-out-bytes", type=int, default=60_000, help="per language")
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        raise SystemExit(
            f"{args.model}: no HF-format checkpoint (config.json) here; run `hcx run recipes/tiny.yaml` "
            "first (it exports runs/tiny/ppo/hf) or pass --model DIR"
        )
    torch.set_num_threads(args.threads)
    data_dir = find_data_dir(required=True)
    assert data_dir is not None

    loaded = load_model(args.model, torch.device("cpu"), torch.float32)
    tok = loaded.tokenizer()
    models = variants(loaded.model.eval())
    if args.corpus.is_dir():
        used = corpus_ids(args.corpus)
    else:
        used = set()
        console.print(f"[yellow]{args.corpus} not found: held-out documents are not checked against it[/]")
    held_out = {
        lang: held_out_texts(data_dir / "pretrain" / f"{lang}.jsonl.gz", sources, used, args.held_out_bytes)
        for lang, sources in HELD_OUT_SOURCES.items()
    }
    prompts = chat_prompts(tok, data_dir, args.prompts, loaded.model.cfg.max_seq_len - args.max_new_tokens)
    lengths = sorted(len(p) for p in prompts)
    console.print(
        f"{args.model}: {loaded.model.cfg.num_params() / 1e6:.1f}M parameters; {len(prompts)} prompts "
        f"({lengths[0]}-{lengths[-1]} tokens, median {lengths[len(lengths) // 2]}), {args.max_new_tokens} new "
        f"tokens each; held-out "
        + ", ".join(
            f"{lang} {len(t)} docs / {sum(len(x.encode()) for x in t)} bytes" for lang, t in held_out.items()
        )
        + f"; torch {torch.__version__}, {torch.get_num_threads()} thread(s) of {os.cpu_count()} CPUs, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )

    greedy = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens, stop_token_ids=[])
    engine_cfg = EngineConfig(block_size=16, num_blocks=1024, max_running=args.slots)
    alone = prompts[:: max(1, len(prompts) // 4)][:4]
    single, batched = "1 request", f"{args.slots} slots"
    runs = {
        single: lambda engine: [engine.generate([p], greedy)[0] for p in alone],
        batched: lambda engine: engine.generate(prompts, greedy),
    }
    generated = {single: len(alone) * args.max_new_tokens, batched: len(prompts) * args.max_new_tokens}
    seconds = {(name, run): float("inf") for name in models for run in runs}
    outputs: dict[str, list[list[int]]] = {}
    for _ in range(args.repeats):
        for name, model in models.items():
            for run_name, run in runs.items():
                engine = Engine(model, tok, engine_cfg)
                engine.generate(prompts[:2], greedy.model_copy(update={"max_new_tokens": 2}))
                started = time.perf_counter()
                completions = run(engine)
                seconds[name, run_name] = min(seconds[name, run_name], time.perf_counter() - started)
                if run_name == batched:
                    outputs[name] = [c.token_ids for c in completions]

    bpb = {
        (name, lang): text_bits_per_byte(model, tok.encode, texts, bos_id=tok.eot_id)
        for name, model in models.items()
        for lang, texts in held_out.items()
    }
    table = Table(title=f"{args.model}, CPU, {torch.get_num_threads()} thread(s), best of {args.repeats}")
    columns = ("weights, activations", "weight MiB", *(f"tok/s {r}" for r in runs), "greedy = f32")
    columns += (*(f"{lang} bpb" for lang in held_out), *(f"Δ {lang} vs f32" for lang in held_out))
    for column in columns:
        table.add_column(column, justify="right")
    for name, model in models.items():
        same = sum(a == b for a, b in zip(outputs[name], outputs["float32"], strict=True))
        table.add_row(
            name,
            f"{weight_bytes(model) / 2**20:.2f}",
            *(f"{generated[r] / seconds[name, r]:.0f}" for r in runs),
            f"{same}/{len(prompts)}",
            *(f"{bpb[name, lang]:.4f}" for lang in held_out),
            *(f"{100 * (bpb[name, lang] / bpb['float32', lang] - 1):+.3f} %" for lang in held_out),
        )
    console.print(table)


if __name__ == "__main__":
    main()
