"""One decode step of the tiny policy: the engine's, a dense-cache eager forward, and a compiled one.

PPO's generation (``ppo_vs_sft.py``) costs several times its teacher-forced floor because
decoding runs the model once per token. This measures what one such step costs three ways,
side by side in one process, for ``--rows`` sequences sampling ``--new-tokens`` tokens each
from the shared Korean chat prompts:

1. the engine (paged KV cache, continuous batching, sampling): the median wall time of its
   steps while every row decodes;
2. the bare model forward for one new token per row against a dense, preallocated KV cache
   (one masked SDPA per layer, the LM head at the new positions): no paging, scheduling or
   sampling, the least an eager decode step can do;
3. the same function through ``torch.compile`` (inductor; fixed shapes, compiled once), to
   see whether generated kernels beat eager PyTorch's per-operation cost on this machine.

All three run with the allocator as ``import hcx`` leaves it (:mod:`hcx.allocator`); run with
``HCX_MALLOC_TUNING=0`` to see glibc's defaults.

    .venv/bin/python benchmarks/decode_step.py [--model runs/tiny/sft/hf] [--dtype auto]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from machine import describe
from torch import Tensor

import hcx
from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.prompts import chat_prompt_ids, read_user_turns
from hcx.infer.sampling import SamplingParams
from hcx.model import Transformer
from hcx.model.attention import AttentionContext, sdpa
from hcx.model.load import load_model
from hcx.model.precision import compute_dtype
from hcx.paths import find_data_dir


class DenseCache(AttentionContext):
    """One new token per row at ``lengths`` (B,), written into dense (B, L, Hkv, D) caches."""

    def __init__(self, keys: Tensor, values: Tensor, lengths: Tensor):
        self.keys, self.values, self.lengths = keys, values, lengths
        self.positions = lengths[:, None]
        self.rows = torch.arange(len(lengths))
        self.mask = (torch.arange(keys.shape[2])[None, :] <= lengths[:, None])[:, None, None, :]

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        keys, values = self.keys[layer], self.values[layer]
        keys[self.rows, self.lengths] = k[:, 0]
        values[self.rows, self.lengths] = v[:, 0]
        return sdpa(q, keys, values, mask=self.mask)


def dense_step(model: Transformer, keys: Tensor, values: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    def step(tokens: Tensor, lengths: Tensor) -> Tensor:
        hidden = model(tokens, attention=DenseCache(keys, values, lengths), hidden=True)
        return model.output(hidden[:, -1]).float()

    return step


def ms_per_call(
    step: Callable[[Tensor, Tensor], Tensor], tokens: Tensor, lengths: Tensor, calls: int
) -> float:
    for _ in range(10):
        step(tokens, lengths)
    started = time.perf_counter()
    for _ in range(calls):
        step(tokens, lengths)
    return (time.perf_counter() - started) / calls * 1e3


def engine_decode_ms(engine: Engine, prompts: list[list[int]], new_tokens: int) -> tuple[float, int]:
    """Median wall ms of the engine's steps once every row decodes, and the number of steps."""
    for i, prompt in enumerate(prompts):
        params = SamplingParams(max_new_tokens=new_tokens, temperature=1.0, seed=i, stop_token_ids=[])
        engine.add(engine.make_request(prompt, params))
    times = []
    while engine.scheduler.has_unfinished():
        decoding = not engine.scheduler.waiting and all(r.num_pending == 1 for r in engine.scheduler.running)
        started = time.perf_counter()
        engine.step()
        if decoding:
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3, len(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("runs/tiny/sft/hf"))
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=200, help="timed calls of the dense steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    dtype = compute_dtype(args.dtype, device)
    loaded = load_model(args.model, device, dtype)
    model, tokenizer = loaded.pair()
    model.eval().requires_grad_(False)
    data = find_data_dir(required=True)
    assert data is not None
    turns = read_user_turns(data / "sft" / "ko.jsonl.gz", limit=args.rows, every=7)
    prompts = chat_prompt_ids(tokenizer, turns)

    engine = Engine(model, tokenizer, EngineConfig(max_running=args.rows, seed=0))
    engine_decode_ms(engine, prompts, 4)  # warm-up
    engine_ms, steps = engine_decode_ms(engine, prompts, args.new_tokens)

    cfg = model.cfg
    longest = max(map(len, prompts)) + args.new_tokens
    shape = (cfg.n_layers, args.rows, longest, cfg.n_kv_heads, cfg.head_dim)
    keys, values = torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)
    tokens = torch.tensor([p[-1] for p in prompts])[:, None]
    lengths = torch.tensor([len(p) + args.new_tokens // 2 for p in prompts])
    step = dense_step(model, keys, values)
    eager_ms = ms_per_call(step, tokens, lengths, args.calls)
    started = time.perf_counter()
    compiled = torch.compile(step, dynamic=False)
    compiled(tokens, lengths)
    compile_s = time.perf_counter() - started
    compiled_ms = ms_per_call(compiled, tokens, lengths, args.calls)
    eager_again_ms = ms_per_call(step, tokens, lengths, args.calls)

    print(describe(device))
    print(
        f"model {args.model} ({cfg.num_params() / 1e6:.1f}M params, {cfg.n_layers} layers, dim {cfg.dim}), "
        f"{dtype}; {args.rows} rows, {args.new_tokens} new tokens each; glibc thresholds fixed "
        f"(hcx.allocator): {hcx.ALLOCATOR_TUNED}"
    )
    print(f"{'decode step':<52}{'ms':>8}")
    print(f"{'engine (paged KV, scheduling, sampling), median':<52}{engine_ms:>8.2f}   ({steps} steps)")
    print(f"{'dense KV cache, eager forward + LM head':<52}{eager_ms:>8.2f}   (again: {eager_again_ms:.2f})")
    print(f"{'the same, torch.compile (inductor)':<52}{compiled_ms:>8.2f}   (compiled in {compile_s:.1f} s)")
    print(
        f"engine / dense eager: {engine_ms / eager_ms:.2f}x; compiled / eager: {compiled_ms / eager_ms:.2f}x"
    )


if __name__ == "__main__":
    main()
