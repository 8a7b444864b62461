"""SFT batching strategies side by side (SPEC §5.1 "efficient batching").

The same model takes full training steps (forward, assistant-only loss, backward, AdamW)
over the same shared SFT samples batched three ways:
(a) naive: a fixed number of samples in random order padded to the longest;
(b) grouped: similar lengths together under a fixed token budget;
(c) packed: rows of ``seq_len`` tokens with per-sample attention and positions.
Useful tokens are real (non-padding) tokens; useful tokens/s is what the strategies buy.

    .venv/bin/python benchmarks/sft_batching.py [--samples 1200] [--tokenizer DIR]

Without ``--tokenizer`` a small hcx tokenizer is trained on a slice of the shared text first.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from hcx.align.batching import make_batches
from hcx.align.conversations import SftExample, read_conversations
from hcx.align.sft import token_nll
from hcx.model import ModelConfig, Transformer
from hcx.paths import find_data_dir
from hcx.tokenizer import load, train_tokenizer


def samples(tokenizer_dir: Path, n: int, max_len: int) -> list[SftExample]:
    tok = load(tokenizer_dir)
    data = find_data_dir() / "sft"
    examples = read_conversations(data / "ko.jsonl.gz", tok, max_len, limit=n // 2)
    examples += read_conversations(data / "en.jsonl.gz", tok, max_len, limit=n - len(examples))
    random.Random(0).shuffle(examples)
    return examples


def run(model: Transformer, batches, packed: bool) -> tuple[float, int, int]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    computed = sum(b.inputs.numel() for b in batches)
    start = time.perf_counter()
    for batch in batches:
        nll, count = token_nll(model, batch, packed)
        optimizer.zero_grad(set_to_none=True)
        (nll / max(count, 1)).backward()
        optimizer.step()
    return time.perf_counter() - start, computed, len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", type=Path, default=None)
    parser.add_argument("--samples", type=int, default=1200)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = args.tokenizer
        if tokenizer_dir is None:
            data = find_data_dir() / "pretrain"
            tokenizer_dir = train_tokenizer(
                files=[data / f"{lang}.jsonl.gz" for lang in ("ko", "en", "code")],
                vocab_size=8192,
                output_dir=Path(tmp) / "tok",
                max_bytes_per_file=1_000_000,
            )
        examples = samples(tokenizer_dir, args.samples, args.max_len)
        useful = sum(len(e.inputs) for e in examples)
        vocab = load(tokenizer_dir).vocab_size
    cfg = ModelConfig(preset="tiny", vocab_size=vocab, max_seq_len=max(args.max_len, args.seq_len))
    pad = 1
    strategies = {
        "(a) naive padded": (make_batches(examples, "padded", pad, 0, 0, args.batch_size, seed=0), False),
        "(b) length-grouped": (make_batches(examples, "grouped", pad, args.max_tokens, 0, seed=0), False),
        "(c) packed": (make_batches(examples, "packed", pad, args.max_tokens, args.seq_len, seed=0), True),
    }
    print(
        f"{len(examples)} shared SFT samples (ko+en), {useful:,} useful tokens, tiny model, {args.threads} threads"
    )
    print(f"{'strategy':<22}{'batches':>8}{'computed':>11}{'padding':>9}{'useful tok/s':>14}{'vs (a)':>8}")
    baseline = None
    for name, (batches, packed) in strategies.items():
        torch.manual_seed(0)
        model = Transformer(cfg)
        model.init_weights(seed=0)
        seconds, computed, count = run(model, batches, packed)
        rate = useful / seconds
        baseline = baseline or rate
        print(
            f"{name:<22}{count:>8}{computed:>11,}{1 - useful / computed:>9.1%}{rate:>14,.0f}{rate / baseline:>7.2f}x"
        )
    print("goal: (b) and (c) >= 2x (a) in useful tokens/s")


if __name__ == "__main__":
    main()
