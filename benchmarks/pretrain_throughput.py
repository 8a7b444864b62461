"""Training-step throughput: hcx's decoder vs Hugging Face ``LlamaForCausalLM``, side by side.

Both models have the identical configuration and weights (ours exported through
``hcx.model.hf``), see the same batch of real Korean text, run in the same dtype on the same
number of threads, and take full steps: forward, next-token loss, backward, AdamW. Runs
alternate between the two so machine noise hits both alike; the median step time counts.

    .venv/bin/python benchmarks/pretrain_throughput.py            # ours compiled (the trainer's
    .venv/bin/python benchmarks/pretrain_throughput.py --no-compile  # pretrain.compile option)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from hcx.model import ModelConfig, Transformer
from hcx.model.hf import export_hf
from hcx.paths import find_data_dir
from hcx.train.parallel import Mesh, parallelize
from hcx.train.shards import load_tokenizer
from hcx.train.trainer import lm_loss


def korean_batch(tokenizer_dir: Path, batch: int, seq_len: int, vocab: int) -> torch.Tensor:
    import gzip
    import json

    tokenizer = load_tokenizer(tokenizer_dir)
    ids: list[int] = []
    with gzip.open(find_data_dir() / "pretrain" / "ko.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            ids.extend(tokenizer.encode(json.loads(line)["text"]))
            if len(ids) > batch * (seq_len + 1):
                break
    return (torch.tensor(ids[: batch * (seq_len + 1)]) % vocab).view(batch, seq_len + 1)


def hf_loss(model):
    return lambda inputs, targets: lm_loss(model(input_ids=inputs).logits, targets)


def hcx_loss(model, compile: bool):
    """Our step as the trainer builds it: ``parallelize`` (blocks compiled) and the loss compiled."""
    model = parallelize(model, Mesh(mesh=None), compile=compile)
    loss = torch.compile(lm_loss) if compile else lm_loss
    return lambda inputs, targets: loss(model(inputs), targets)


def train_step_fn(loss_fn, optimizer, dtype: torch.dtype):
    def step(tokens: torch.Tensor) -> float:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_fn(tokens[:, :-1], tokens[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", type=Path, default=Path("runs/tiny/tokenizer"))
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--ffn", type=int, default=688)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    cfg = ModelConfig(
        preset="tiny",
        vocab_size=args.vocab,
        dim=args.dim,
        n_layers=args.layers,
        n_heads=args.heads,
        n_kv_heads=args.kv_heads,
        ffn_dim=args.ffn,
        max_seq_len=args.seq_len,
    )
    ours = Transformer(cfg)
    ours.init_weights(seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        export_hf(ours, tmp)
        theirs = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, attn_implementation="sdpa")
    theirs.train()
    tokens = korean_batch(args.tokenizer, args.batch, args.seq_len, args.vocab)

    ours_loss = hcx_loss(ours, args.compile)
    steps = {
        "hcx": train_step_fn(ours_loss, torch.optim.AdamW(ours.parameters(), lr=1e-4, foreach=True), dtype),
        "hf": train_step_fn(
            hf_loss(theirs), torch.optim.AdamW(theirs.parameters(), lr=1e-4, foreach=True), dtype
        ),
    }
    first_loss = {name: step(tokens) for name, step in steps.items()}  # warm-up (and compilation)
    for step in steps.values():
        step(tokens)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            start = time.perf_counter()
            step(tokens)
            times[name].append(time.perf_counter() - start)

    tokens_per_step = args.batch * args.seq_len
    rate = {name: tokens_per_step / statistics.median(t) for name, t in times.items()}
    print(
        f"config: dim={args.dim} layers={args.layers} heads={args.heads}/{args.kv_heads} ffn={args.ffn} "
        f"vocab={args.vocab} | batch {args.batch}x{args.seq_len} {args.dtype} threads={args.threads} "
        f"| params {cfg.num_params() / 1e6:.2f}M, {cfg.flops_per_token(args.seq_len) / 1e6:.1f} MFLOP/token"
    )
    print(f"first-step loss: hcx {first_loss['hcx']:.5f}  hf {first_loss['hf']:.5f}")
    for name in steps:
        tflops = rate[name] * cfg.flops_per_token(args.seq_len) / 1e12
        print(
            f"{name:>4}{' (compiled)' if name == 'hcx' and args.compile else ''}: "
            f"{rate[name]:,.0f} tokens/s  ({tflops * 1e3:.1f} GFLOP/s)"
        )
    print(f"ratio hcx / hf: {rate['hcx'] / rate['hf']:.2f}x")


if __name__ == "__main__":
    main()
