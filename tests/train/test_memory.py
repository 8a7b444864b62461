"""The per-rank memory estimate against hand-computed bytes, and meta-device builds of the big configs."""

from __future__ import annotations

import json
import subprocess
import sys

from hcx.model.config import ModelConfig
from hcx.train.memory import GIB, MemoryEstimate, estimate_memory, stage_layers

# tiny: d=128, 4 layers, 4 heads of 32 (h_q=128), 2 kv heads (h_kv=64), f=352; V=1024.
TINY = ModelConfig(preset="tiny", vocab_size=1024)


def test_estimate_matches_the_hand_computed_bytes_of_a_tiny_layout() -> None:
    """2 rows × 64 tokens on dp=2 × tp=2, bf16, no activation checkpointing."""
    d, f, vocab, layers, tp, dp, b = 128, 352, 1024, 4, 2, 2, 2
    h_q, h_kv = 4 * 32, 2 * 32
    # One block on one tp rank: q,k,v,o projections d·(2h_q+2h_kv) = 49,152 and SwiGLU 3·d·f = 135,168
    # split over tp=2, plus the two replicated RMSNorm weights 2·d.
    block = (d * (2 * h_q + 2 * h_kv) + 3 * d * f) // tp + 2 * d
    assert block == 92_416
    # pp=1: embedding V·d/tp, final norm d, output head V·d/tp.
    root = vocab * d // tp + d + vocab * d // tp
    assert root == 131_200
    shard = (layers * block + root) // dp  # FSDP2 splits every weight over dp
    assert shard == 250_432
    params = 4 * shard  # fp32 master weights
    grads = 4 * shard  # fp32 gradients
    optimizer = 8 * shard  # AdamW exp_avg + exp_avg_sq, fp32
    # FSDP2's bf16 unsharded copies: the root (kept after forward) and two blocks (computing, prefetched).
    gathered = b * (root + 2 * block)
    tokens = 2 * 64
    # Saved for backward per token and block: 4·d (two norms' inputs and outputs), q,k,v and the
    # attention output (2h_q + 2h_kv)/tp, and w1 x, silu(w1 x), w3 x, their product 4·f/tp; bf16.
    per_block = b * (4 * d + (2 * h_q + 2 * h_kv + 4 * f) // tp)
    assert per_block == 2_816
    activations = tokens * (layers * per_block + 2 * b * d)  # + the final norm's input and output
    logits = 4 * tokens * vocab // tp  # fp32 logits the loss reads, vocab split over tp
    assert (params, gathered, grads, optimizer, activations, logits) == (
        1_001_728,
        632_064,
        1_001_728,
        2_003_456,
        1_507_328,
        262_144,
    )

    got = estimate_memory(TINY, rows=2, seq_len=64, dp=dp, tp=tp, dtype="bfloat16")
    assert got == MemoryEstimate(params, gathered, grads, optimizer, activations, logits)
    assert got.total == 6_408_448


def test_pipeline_stages_report_the_fullest_with_activation_checkpointing() -> None:
    """pp=2 under 1F1B with 4 micro-batches of 3 × 32 tokens, fp32, dp=tp=1: the head's stage is fuller."""
    d, f, vocab, b, tokens = 128, 352, 1024, 4, 3 * 32
    block = d * (2 * 128 + 2 * 64) + 3 * d * f + 2 * d
    per_block = b * (4 * d + 2 * 128 + 2 * 64 + 4 * f)  # one block recomputed during backward
    # Stage 0: blocks 0-1 and the embedding; min(pp - 0, 4) = 2 micro-batches in flight, each
    # keeping only its blocks' inputs (b·d per token and block).
    first = 16 * (2 * block + vocab * d) + 2 * tokens * (2 * b * d) + tokens * per_block
    # Stage 1: blocks 2-3, final norm and head; 1 micro-batch in flight, the final norm's input and
    # output, and the fp32 logits.
    last = 16 * (2 * block + d + vocab * d) + tokens * (2 * b * d + 2 * b * d) + tokens * per_block
    last += 4 * tokens * vocab
    assert (first, last) == (9_084_928, 9_480_192)
    got = estimate_memory(
        TINY, rows=3, seq_len=32, pp=2, pp_microbatches=4, dtype="float32", activation_checkpointing=True
    )
    assert (got.pp_rank, got.total) == (1, last)
    assert got.gathered == 0  # fp32 on one data-parallel rank: the weights are used as they are


def test_the_dry_run_line_is_in_gib() -> None:
    line = MemoryEstimate(params=GIB, activations=2 * GIB + GIB // 2).describe()
    assert line == "mem/rank≈3.5 GiB (params 1.0, gathered 0.0, grads 0.0, optim 0.0, act 2.5, logits 0.0)"


def test_weights_sum_to_the_exact_parameter_count() -> None:
    for preset in ("tiny", "hcx-s", "hcx-l"):
        model = ModelConfig(preset=preset, vocab_size=100_032)
        whole = estimate_memory(model, 1, 1, dtype="float32", trains=False)
        assert whole.params == 4 * model.num_params()
        assert whole.total == whole.params  # forward-only: weights alone
    assert [stage_layers(80, r, 8) for r in range(8)] == [10] * 8
    assert [stage_layers(5, r, 2) for r in range(2)] == [3, 2]


def test_scalar_head_networks_have_no_logits_and_no_vocab_projection() -> None:
    lm = estimate_memory(TINY, 2, 64, dtype="float32")
    scalar = estimate_memory(TINY, 2, 64, dtype="float32", lm_head=False)
    assert scalar.logits == 0 and lm.logits == 4 * 2 * 64 * 1024
    assert lm.params - scalar.params == 4 * (1024 * 128 - 128)  # V·d output layer vs a d → 1 head


def test_a_70b_policy_trained_on_one_rank_cannot_fit_an_80gb_gpu() -> None:
    model = ModelConfig(preset="hcx-l", vocab_size=100_032)
    policy = estimate_memory(model, 5, 384, logit_positions=128)
    assert policy.total > 16 * model.num_params() and not policy.fits(79.6)
    assert policy.total / GIB > 1000


BUILD_ON_META = """
import json, torch
from hcx.model.config import ModelConfig
from hcx.model.transformer import Transformer

counts = {}
for preset in ("hcx-l", "hcx-s"):
    cfg = ModelConfig(preset=preset, vocab_size=100_000)
    with torch.device("meta"):
        model = Transformer(cfg)
    assert all(p.is_meta for p in model.parameters()), preset
    assert all(b.is_meta for b in model.buffers()), preset
    counts[preset] = sum(p.numel() for p in model.parameters())
# VmHWM is this process image's peak RSS; ru_maxrss would carry the forking parent's peak over exec.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"params": counts, "maxrss_kib": peak}))
"""


def test_hcx_l_and_hcx_s_build_on_the_meta_device_without_parameter_memory() -> None:
    """A fresh interpreter builds both (78 billion parameters, 312 GB in fp32) and stays under 1 GiB."""
    done = subprocess.run(
        [sys.executable, "-c", BUILD_ON_META], capture_output=True, text=True, timeout=300, check=True
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["params"] == {
        "hcx-l": ModelConfig(preset="hcx-l", vocab_size=100_000).num_params(),
        "hcx-s": ModelConfig(preset="hcx-s", vocab_size=100_000).num_params(),
    }
    assert report["maxrss_kib"] * 1024 < GIB, report
