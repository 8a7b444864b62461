"""Training-step throughput: hcx's decoder vs Hugging Face ``LlamaForCausalLM``, side by side.

Both models have the identical configuration and weights (ours exported through
``hcx.model.hf``), see the same batch of real Korean text, run in the same dtype on the same
number of threads, and take full steps: forward, next-token loss, backward, AdamW. Runs
alternate between the two so machine noise hits both alike; the median step time counts. By
default it compares in float32 and in bfloat16 (autocast over float32 weights, as the
trainer does), and states each model's FLOP/s as a share of the machine's matmul peak in
that dtype, measured first (:mod:`machine`).

``--packed`` runs only the packed-documents section instead: one row of 2k, 8k and 32k tokens
packed from real Korean and English documents (the loader's ``<|endoftext|>`` + document
stream), attended by :class:`hcx.model.DocumentCausal` without a mask (``segments``; ``flex``
forward only, as the CPU's FlexAttention has no backward) and with the dense (B, 1, T, T) mask
it replaces. Each configuration runs in a fresh process so its peak memory is its own: the
peak resident set during the timed steps (``VmHWM``, reset after the warm-up, which compiles
FlexAttention) above the resident set before the first step; on a GPU, the allocator's peak.

    .venv/bin/python benchmarks/pretrain_throughput.py            # ours compiled (the trainer's
    .venv/bin/python benchmarks/pretrain_throughput.py --no-compile  # pretrain.compile option)
    .venv/bin/python benchmarks/pretrain_throughput.py --packed --threads 1  # packed (~6 min, CPU)

(One thread on a shared CPU: OpenMP threads that wait for a busy core slow a model this small
down by an order of magnitude, and the paths compared do not depend on it.)
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from machine import describe, matmul_peak_gflops
from transformers import AutoModelForCausalLM

from hcx.model import DocumentCausal, ModelConfig, Transformer
from hcx.model.config import padded_vocab_size
from hcx.model.hf import export_hf
from hcx.paths import find_data_dir
from hcx.tokenizer import HcxTokenizer, train_tokenizer
from hcx.train.loader import document_positions
from hcx.train.parallel import Mesh, parallelize
from hcx.train.pretrain import lm_loss
from hcx.train.shards import load_tokenizer


def ensure_tokenizer(tokenizer_dir: Path) -> Path:
    """``tokenizer_dir`` if it holds a tokenizer, else a 4,096-token hcx tokenizer trained (~10 s, once
    per machine) on 300 KB slices of every shared pretraining language, as the tests train theirs."""
    if (tokenizer_dir / "tokenizer.json").exists():
        return tokenizer_dir
    out = Path(tempfile.gettempdir()) / "hcx-benchmark-tokenizer"
    if (out / "tokenizer.json").exists():
        return out
    print(f"no tokenizer in {tokenizer_dir}: training a 4,096-token one in {out}", file=sys.stderr)
    languages = ("ko", "en", "ja", "zh", "de", "fr", "code")
    return train_tokenizer(
        files=[find_data_dir() / "pretrain" / f"{lang}.jsonl.gz" for lang in languages],
        vocab_size=4096,
        output_dir=out,
        held_out_fraction=0.05,
        max_bytes_per_file=300_000,
    )


def korean_batch(tokenizer_dir: Path, batch: int, seq_len: int, vocab: int) -> torch.Tensor:
    tokenizer = load_tokenizer(ensure_tokenizer(tokenizer_dir))
    ids: list[int] = []
    with gzip.open(find_data_dir() / "pretrain" / "ko.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            ids.extend(tokenizer.encode(json.loads(line)["text"]))
            if len(ids) > batch * (seq_len + 1):
                break
    return (torch.tensor(ids[: batch * (seq_len + 1)]) % vocab).view(batch, seq_len + 1)


def hf_loss(model):
    return lambda inputs, targets: lm_loss(model(input_ids=inputs).logits, targets)


def hcx_loss(model, compile: bool, mode: str):
    """Our step as the trainer builds it: ``parallelize`` (blocks compiled) and the loss compiled."""
    model = parallelize(model, Mesh(mesh=None), compile=compile, compile_mode=mode)
    loss = torch.compile(lm_loss, mode=mode) if compile else lm_loss
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


def matmul_shapes(cfg: ModelConfig, tokens: int) -> Counter[tuple[int, int, int]]:
    """The (m, k, n) products of one training step's linear layers: each layer's forward, its input
    gradient and its weight gradient (attention's score and value products are not among them)."""
    hq, hkv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    per_layer = [(cfg.dim, hq), (cfg.dim, hkv), (cfg.dim, hkv), (hq, cfg.dim)]
    per_layer += [(cfg.dim, cfg.ffn_dim), (cfg.dim, cfg.ffn_dim), (cfg.ffn_dim, cfg.dim)]
    shapes: Counter[tuple[int, int, int]] = Counter()
    for (k, n), count in [*((p, cfg.n_layers) for p in per_layer), ((cfg.dim, cfg.vocab_size), 1)]:
        shapes[tokens, k, n] += count
        shapes[tokens, n, k] += count
        shapes[n, tokens, k] += count
    return shapes


def matmuls_alone(cfg: ModelConfig, tokens: int, dtype: torch.dtype, repeats: int = 5) -> tuple[float, int]:
    """Seconds and FLOPs of :func:`matmul_shapes` timed alone (best of ``repeats`` per shape)."""
    seconds, flops = 0.0, 0
    for (m, k, n), count in matmul_shapes(cfg, tokens).items():
        a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
        best = float("inf")
        for _ in range(repeats + 1):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        seconds += count * best
        flops += count * 2 * m * k * n
    return seconds, flops


# --- packed documents: DocumentCausal without a mask vs the dense mask ------------------------------

PACKED_LENGTHS = (2048, 8192, 32768)


def packed_stream(tokenizer: HcxTokenizer, tokens: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """The first ``tokens`` ids of the pretraining loader's stream over shared Korean and English text:
    documents in a seeded shuffled order, each prefixed by ``<|endoftext|>``; and each id's document."""
    texts: list[str] = []
    for language in ("ko", "en"):
        with gzip.open(find_data_dir() / "pretrain" / f"{language}.jsonl.gz", "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line, _ in zip(f, range(3000), strict=False)]
    random.Random(seed).shuffle(texts)
    ids: list[int] = []
    docs: list[int] = []
    for start in range(0, len(texts), 64):
        for doc in tokenizer.encode_batch(texts[start : start + 64]):
            docs += [docs[-1] + 1 if docs else 0] * (len(doc) + 1)
            ids += [tokenizer.eot_id, *doc]
        if len(ids) >= tokens:
            return ids[:tokens], docs[:tokens]
    raise ValueError(f"the shared Korean and English text has fewer than {tokens} tokens")


def packed_row(ids: list[int], docs: list[int], seq_len: int) -> dict[str, torch.Tensor]:
    """One loader row (batch 1) of ``seq_len`` inputs: targets, positions restarting per document."""
    doc_ids = torch.tensor(docs[:seq_len])[None]
    return {
        "inputs": torch.tensor(ids[:seq_len])[None],
        "targets": torch.tensor(ids[1 : seq_len + 1])[None],
        "positions": torch.from_numpy(document_positions(doc_ids.numpy())),
        "doc_ids": doc_ids,
    }


def dense_mask_bytes(seq_len: int, layers: int, train: bool) -> int:
    """Memory the dense mask path needs on top of the model: the (1, 1, T, T) boolean mask and the
    float copy of it SDPA makes per layer, kept for the backward by every layer when training."""
    return seq_len**2 * (1 + 4 * (layers if train else 1))


def resident_bytes(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, else getrusage's peak."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_resident() -> None:
    """Restart ``VmHWM`` from the current resident set (Linux ≥ 4.0), so compilation does not count."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def packed_step(spec: dict):
    """A model and a step closure for one row length; ``step(backend, pass_)`` runs one configuration."""
    torch.set_num_threads(spec["threads"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    row = {k: v.to(device) for k, v in torch.load(spec["data"])[str(spec["seq_len"])].items()}
    cfg = ModelConfig(preset="tiny", n_layers=2, vocab_size=spec["vocab"], max_seq_len=spec["seq_len"])
    model = Transformer(cfg).to(device)
    model.init_weights(seed=0)

    def step(backend: str, pass_: str) -> float:
        start = time.perf_counter()
        attention = DocumentCausal(row["doc_ids"], row["positions"], backend=backend)
        if pass_ == "train":
            lm_loss(model(row["inputs"], attention=attention), row["targets"]).backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                model(row["inputs"], attention=attention)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step, device


def packed_time_worker(spec: dict) -> dict[str, float]:
    """Median seconds per step of each configuration; steps alternate between configurations
    (after one warm-up each, where FlexAttention compiles) so machine noise hits all alike."""
    step, _ = packed_step(spec)
    configs = [tuple(c) for c in spec["configs"]]
    for config in configs:
        step(*config)
    times: dict[str, list[float]] = {" ".join(c): [] for c in configs}
    for _ in range(spec["rounds"]):
        for config in configs:
            times[" ".join(config)].append(step(*config))
    return {name: statistics.median(t) for name, t in times.items()}


def packed_memory_worker(spec: dict) -> dict[str, int]:
    """Peak memory of one step of one configuration above the loaded model and row, in a fresh
    process; FlexAttention first takes a step outside the measurement to compile."""
    step, device = packed_step(spec)
    if spec["backend"] == "flex":
        step(spec["backend"], spec["pass"])
    if device.type == "cuda":
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_resident()
        base = resident_bytes("VmRSS")
    step(spec["backend"], spec["pass"])
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else resident_bytes("VmHWM")
    return {"peak_bytes": peak - base}


def run_packed_worker(spec: dict, timeout: float) -> dict | str:
    """A worker in a fresh interpreter: its result, or why there is none."""
    command = [sys.executable, __file__, "--packed-worker", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    if done.returncode != 0:
        return f"failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def dense_skip_reason(
    seq_len: int,
    pass_: str,
    seconds: dict[tuple[str, str], tuple[int, float]],
    layers: int,
    args: argparse.Namespace,
) -> str | None:
    """Why the dense mask does not run at ``seq_len``: its memory over ``--packed-memory-gib``, or a
    step over ``--packed-max-step-s``, extrapolated from the last length measured: the segments'
    time linearly, the dense mask's extra time quadratically."""
    need = dense_mask_bytes(seq_len, layers, pass_ == "train")
    expected = 0.0
    if ("dense", pass_) in seconds and ("segments", pass_) in seconds:
        (measured_at, dense), (_, segments) = seconds["dense", pass_], seconds["segments", pass_]
        ratio = seq_len / measured_at
        expected = segments * ratio + max(0.0, dense - segments) * ratio**2
    if need > args.packed_memory_gib * 2**30 or expected > args.packed_max_step_s:
        return f"skipped: would need {need / 2**30:.1f} GiB for the mask and ~{expected:.0f} s a step"
    return None


def packed_section(args: argparse.Namespace) -> None:
    tokenizer = load_tokenizer(ensure_tokenizer(args.tokenizer))
    vocab = padded_vocab_size(tokenizer.vocab_size)
    ids, docs = packed_stream(tokenizer, max(args.packed_lengths) + 1)
    cuda = torch.cuda.is_available()
    configs = [("segments", "train"), ("dense", "train"), ("segments", "forward"), ("dense", "forward")]
    configs += [("flex", "train"), ("flex", "forward")] if cuda else [("flex", "forward")]
    cfg = ModelConfig(preset="tiny", n_layers=2, vocab_size=vocab)
    print(
        f"packed documents: 1 row of T tokens | tiny preset, {cfg.n_layers} layers, dim={cfg.dim} "
        f"heads={cfg.n_heads}/{cfg.n_kv_heads} vocab={vocab} float32 threads={args.threads} "
        f"{'cuda' if cuda else 'cpu'}"
    )
    print(
        "train = forward + loss + backward, forward = under torch.no_grad(), both building the attention "
        "context from doc_ids;\ntokens/s: median step, steps alternating between paths; peak memory: one "
        "step's peak above the loaded model and row, in a fresh process per path"
    )
    seconds: dict[tuple[str, str], tuple[int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.pt"
        rows = {str(n): packed_row(ids, docs, n) for n in args.packed_lengths}
        torch.save(rows, data)
        print(
            f"{'tokens':>7} {'docs':>5} {'longest':>7}  {'path':<9}{'pass':<8}{'tokens/s':>10}  peak memory"
        )
        for seq_len in sorted(args.packed_lengths):
            common = {"data": str(data), "seq_len": seq_len, "threads": args.threads, "vocab": vocab}
            skipped = {
                ("dense", pass_): reason
                for pass_ in ("train", "forward")
                if (reason := dense_skip_reason(seq_len, pass_, seconds, cfg.n_layers, args))
            }
            run = [c for c in configs if c not in skipped]
            timing = run_packed_worker(
                {**common, "mode": "time", "configs": run, "rounds": max(2, 16384 // seq_len)},
                args.packed_timeout,
            )
            lengths = torch.unique_consecutive(rows[str(seq_len)]["doc_ids"], return_counts=True)[1]
            shape = f"{seq_len:>7} {len(lengths):>5} {int(lengths.max()):>7}"
            for backend, pass_ in configs:
                if (backend, pass_) in skipped:
                    print(f"{shape}  {backend:<9}{pass_:<8}{'':>10}  {skipped[backend, pass_]}", flush=True)
                    continue
                if isinstance(timing, str):
                    print(f"{shape}  {backend:<9}{pass_:<8}{'':>10}  {timing}", flush=True)
                    continue
                seconds[backend, pass_] = (seq_len, timing[f"{backend} {pass_}"])
                memory = run_packed_worker(
                    {**common, "mode": "memory", "backend": backend, "pass": pass_}, args.packed_timeout
                )
                peak = memory if isinstance(memory, str) else f"{memory['peak_bytes'] / 2**20:,.0f} MiB"
                rate = seq_len / seconds[backend, pass_][1]
                print(f"{shape}  {backend:<9}{pass_:<8}{rate:>10,.0f}  {peak}", flush=True)


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
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "both"], default="both")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument(
        "--compile-mode",
        choices=["default", "max-autotune-no-cudagraphs"],
        default="max-autotune-no-cudagraphs",
        help="the trainer's compile_mode (max-autotune: Inductor's GEMMs where they beat oneDNN's)",
    )
    parser.add_argument("--packed", action="store_true", help="only the packed-documents section")
    parser.add_argument("--packed-lengths", type=int, nargs="+", default=list(PACKED_LENGTHS))
    parser.add_argument("--packed-steps", type=int, default=3)
    parser.add_argument("--packed-memory-gib", type=float, default=20.0, help="skip dense masks above this")
    parser.add_argument("--packed-max-step-s", type=float, default=30.0, help="skip slower dense masks")
    parser.add_argument("--packed-timeout", type=float, default=300.0, help="seconds per worker process")
    parser.add_argument("--packed-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.packed_worker:
        spec = json.loads(args.packed_worker)
        worker = packed_time_worker if spec["mode"] == "time" else packed_memory_worker
        print(json.dumps(worker(spec)))
        return
    if args.packed:
        packed_section(args)
        return
    device = torch.device("cpu")
    print(describe(device))
    dtypes = ["float32", "bfloat16"] if args.dtype == "both" else [args.dtype]
    peaks = {name: matmul_peak_gflops(getattr(torch, name), device) for name in ("float32", "bfloat16")}
    print(
        "measured matmul peak (2048³, best of 5): "
        + ", ".join(f"{name} {gflops:,.0f} GFLOP/s" for name, gflops in peaks.items())
    )
    for name in dtypes:
        compare(args, getattr(torch, name), peaks[name])


def compare(args: argparse.Namespace, dtype: torch.dtype, peak_gflops: float) -> None:
    """Both models' training steps in ``dtype``, alternating, and their rates as shares of the peak."""
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

    ours_loss = hcx_loss(ours, args.compile, args.compile_mode)
    steps = {
        "hcx": train_step_fn(ours_loss, torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True), dtype),
        "hf": train_step_fn(
            hf_loss(theirs), torch.optim.AdamW(theirs.parameters(), lr=1e-4, fused=True), dtype
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
    dtype_name = str(dtype).removeprefix("torch.")
    print(
        f"\nconfig: dim={args.dim} layers={args.layers} heads={args.heads}/{args.kv_heads} ffn={args.ffn} "
        f"vocab={args.vocab} | batch {args.batch}x{args.seq_len} {dtype_name} threads={args.threads} "
        f"| params {cfg.num_params() / 1e6:.2f}M, {cfg.flops_per_token(args.seq_len) / 1e6:.1f} MFLOP/token "
        f"| median of {args.steps} steps each, alternating"
    )
    print(f"first-step loss: hcx {first_loss['hcx']:.5f}  hf {first_loss['hf']:.5f}")
    for name in steps:
        gflops = rate[name] * cfg.flops_per_token(args.seq_len) / 1e9
        print(
            f"{name:>4}{f' (compiled, {args.compile_mode})' if name == 'hcx' and args.compile else ''}: "
            f"{rate[name]:,.0f} tokens/s  ({gflops:.1f} GFLOP/s, {gflops / peak_gflops:.0%} of the "
            f"{dtype_name} matmul peak)"
        )
    print(f"ratio hcx / hf ({dtype_name}): {rate['hcx'] / rate['hf']:.2f}x")
    alone, flops = matmuls_alone(cfg, tokens_per_step, dtype)
    step = statistics.median(times["hcx"])
    print(
        f"the step's {sum(matmul_shapes(cfg, tokens_per_step).values())} linear-layer products timed alone: "
        f"{alone * 1e3:.1f} ms ({flops / alone / 1e9:,.0f} GFLOP/s, {flops / alone / 1e9 / peak_gflops:.0%} "
        f"of the peak at these shapes) = {alone / step:.0%} of hcx's {step * 1e3:.1f} ms step"
    )


if __name__ == "__main__":
    main()
