"""Bytes one rank holds while training, computed from the model's shapes and the parallel layout.

``hcx run --dry-run`` prints this for every training stage and warns when it cannot fit the
stage's device. The numbers are what a rank of :mod:`hcx.train.parallel` keeps, counted from
:class:`~hcx.model.config.ModelConfig` the way ``num_params`` counts weights; nothing is measured
or guessed. This module owns the arithmetic only: which networks a stage holds and on which
micro-batch it computes is the pipeline's business (:mod:`hcx.pipeline.memory`).

Notation: ``V`` vocabulary, ``d`` model dim, ``f`` FFN dim, ``h_q = n_heads·head_dim``,
``h_kv = n_kv_heads·head_dim``; a pipeline stage ``r`` of ``pp`` holds
``L_r = |[r·⌈L/pp⌉, min(L, (r+1)·⌈L/pp⌉))|`` blocks (as ``split_pipeline_stage`` cuts them),
the embedding when ``r = 0``, the final norm and the head when ``r = pp−1``. ``b`` is the
compute dtype's size (2 for bf16, 4 for fp32); a micro-batch is ``t = rows × seq_len`` tokens.

Weights on one rank (tensor parallel splits matrices, norms are replicated)::

    block = (d·(2·h_q + 2·h_kv) + 3·d·f) / tp + 2·d
    root  = [r = 0]·V·d/tp + [r = pp−1]·(d + head)     head = V·d/tp (LM) or d (scalar head)
    n     = (L_r·block + root) / dp                    (FSDP2 shards every weight over dp)

Trained networks (AdamW, FSDP2 mixed precision: weights stored in fp32, computed in ``b``)::

    params    = 4·n              fp32 weights (the master copy when computing in bf16)
    grads     = 4·n              fp32 gradients, reduce-scattered to the shard
    optimizer = 8·n              AdamW's two fp32 moments
    gathered  = b·(root + min(2, L_r)·block)   dp > 1: FSDP2's unsharded compute copies: the
                                               root (not resharded after forward) and two
                                               blocks (the one computing, the one prefetched)
              = 2·(L_r·block + root)           dp = 1, bf16: autocast's cached bf16 weights
              = 0                              dp = 1, fp32

Activations kept for backward, per token and block, with flash/memory-efficient attention (no
T×T scores; the replicated residual stream is not split by tp, as there is no sequence parallel)::

    a_block = b·(4·d + (2·h_q + 2·h_kv + 4·f)/tp)
        4·d: the two norms' inputs and outputs (the q/k/v and w1/w3 projections' input);
        2·h_q + 2·h_kv: rotated q, k, v and the attention output (also wo's input);
        4·f: w1·x, silu(w1·x), w3·x and their product (w2's input)
    activations = k·t·(L_r·a + [r = pp−1]·2·b·d) + [ckpt]·t·a_block
        a = a_block, or b·d with activation checkpointing (each block keeps its input and
        recomputes one block's a_block during backward); 2·b·d: the final norm's input and
        output; k = micro-batches in flight on stage r: 1 without pipeline parallel,
        min(pp − r, pp_microbatches) under 1F1B, pp_microbatches under GPipe
    logits = [r = pp−1]·4·rows·positions·V/tp      the fp32 logits the loss reads (LM head only;
                                                   positions = seq_len, or the responses in PPO)

The stage reported is the pipeline stage with the largest total. Forward-only networks (PPO's
reference and reward model) hold ``b·n`` bytes of weights and nothing else: their forwards
run apart from the learner's and free their activations as they go.

Not counted: the CUDA context, NCCL buffers and allocator fragmentation (hence
:data:`HEADROOM`), the bf16 copy of the logits and their gradient in backward, RMSNorm's
per-token statistics, the inference engine's KV cache during PPO rollouts, and pipeline
send/receive buffers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from hcx.model.config import ModelConfig

GIB = 1024**3
HEADROOM = 0.9
"""Share of a device's memory an estimate may use: the rest is the CUDA context, NCCL buffers and
allocator fragmentation, which the estimate does not count."""

DTYPE_BYTES = {"bfloat16": 2, "float32": 4}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per rank, by what holds them; ``pp_rank`` is the pipeline stage the figures are for."""

    params: int = 0
    gathered: int = 0
    grads: int = 0
    optimizer: int = 0
    activations: int = 0
    logits: int = 0
    pp_rank: int = 0

    @property
    def total(self) -> int:
        return self.params + self.gathered + self.grads + self.optimizer + self.activations + self.logits

    def __add__(self, other: MemoryEstimate) -> MemoryEstimate:
        """Two networks held by the same rank (PPO's four networks are summed this way)."""
        return MemoryEstimate(
            params=self.params + other.params,
            gathered=self.gathered + other.gathered,
            grads=self.grads + other.grads,
            optimizer=self.optimizer + other.optimizer,
            activations=self.activations + other.activations,
            logits=self.logits + other.logits,
            pp_rank=self.pp_rank,
        )

    def fits(self, device_gib: float) -> bool:
        return self.total <= HEADROOM * device_gib * GIB

    def describe(self) -> str:
        """``mem/rank≈X GiB (params a, gathered g, grads b, optim c, act d, logits e)``, in GiB."""
        parts = (
            ("params", self.params),
            ("gathered", self.gathered),
            ("grads", self.grads),
            ("optim", self.optimizer),
            ("act", self.activations),
            ("logits", self.logits),
        )
        terms = ", ".join(f"{name} {size / GIB:.1f}" for name, size in parts)
        return f"mem/rank≈{self.total / GIB:.1f} GiB ({terms})"


def stage_layers(n_layers: int, pp_rank: int, pp: int) -> int:
    """Blocks pipeline stage ``pp_rank`` keeps (``hcx.train.parallel.split_pipeline_stage``'s cut)."""
    per_stage = math.ceil(n_layers / pp)
    return max(0, min(n_layers, (pp_rank + 1) * per_stage) - pp_rank * per_stage)


def _weights(model: ModelConfig, pp_rank: int, pp: int, tp: int, lm_head: bool) -> tuple[int, int, int]:
    """(layers, weights of one block, weights outside the blocks) on one rank before dp sharding."""
    if model.vocab_size is None:
        raise ValueError("vocab_size is not set yet (it comes from the tokenizer)")
    d, f, vocab = model.dim, model.ffn_dim, model.vocab_size
    h_q, h_kv = model.n_heads * model.head_dim, model.n_kv_heads * model.head_dim
    block = math.ceil((d * (2 * h_q + 2 * h_kv) + 3 * d * f) / tp) + 2 * d
    first, last = pp_rank == 0, pp_rank == pp - 1
    embedding = math.ceil(vocab * d / tp)
    head = (0 if model.tie_embeddings and first else embedding) if lm_head else d
    root = (embedding if first else 0) + (d + head if last else 0)
    return stage_layers(model.n_layers, pp_rank, pp), block, root


def micro_batches_in_flight(pp_rank: int, pp: int, pp_microbatches: int, schedule: str) -> int:
    """Micro-batches whose activations pipeline stage ``pp_rank`` holds at once.

    1F1B runs ``pp − r`` forwards before its first backward (torch's ``Schedule1F1B`` warm-up);
    GPipe runs every forward before any backward.
    """
    if pp == 1:
        return 1
    return min(pp - pp_rank, pp_microbatches) if schedule == "1f1b" else pp_microbatches


def _compute_copies(b: int, dp: int, layers: int, block: int, root: int) -> int:
    """Weights in the compute dtype next to the fp32 master copy, at the peak of a step."""
    if dp > 1:
        return b * (root + min(2, layers) * block)
    return 2 * (layers * block + root) if b == 2 else 0


def estimate_memory(
    model: ModelConfig,
    rows: int,
    seq_len: int,
    *,
    dp: int = 1,
    tp: int = 1,
    pp: int = 1,
    pp_microbatches: int = 1,
    pp_schedule: Literal["gpipe", "1f1b"] = "1f1b",
    dtype: Literal["bfloat16", "float32"] = "bfloat16",
    activation_checkpointing: bool = False,
    trains: bool = True,
    lm_head: bool = True,
    logit_positions: int | None = None,
) -> MemoryEstimate:
    """Bytes one rank holds for ``model`` on a (pp, dp, tp) mesh (formulas in the module docstring).

    ``rows × seq_len`` is this rank's micro-batch (one forward/backward; gradient accumulation
    and pipeline micro-batches already split off). ``trains=False`` is a forward-only network;
    ``lm_head=False`` a reward/value network whose head maps ``d`` to one scalar (no logits).
    ``logit_positions`` is how many positions per row reach the LM head (default ``seq_len``).
    Returns the pipeline stage with the largest total.
    """
    b = DTYPE_BYTES[dtype]
    d, f = model.dim, model.ffn_dim
    h_q, h_kv = model.n_heads * model.head_dim, model.n_kv_heads * model.head_dim
    tokens = rows * seq_len
    per_block = b * (4 * d + math.ceil((2 * h_q + 2 * h_kv + 4 * f) / tp))
    kept = b * d if activation_checkpointing else per_block
    positions = seq_len if logit_positions is None else logit_positions
    worst = MemoryEstimate()
    for r in range(pp):
        layers, block, root = _weights(model, r, pp, tp, lm_head)
        last = r == pp - 1
        local = layers * block + root
        shard = math.ceil(local / dp)
        if not trains:
            estimate = MemoryEstimate(params=b * shard, pp_rank=r)
        else:
            in_flight = micro_batches_in_flight(r, pp, pp_microbatches, pp_schedule)
            activations = in_flight * tokens * (layers * kept + (2 * b * d if last else 0))
            if activation_checkpointing and layers:
                activations += tokens * per_block
            logits = 4 * rows * positions * math.ceil(model.vocab_size / tp) if last and lm_head else 0
            estimate = MemoryEstimate(
                params=4 * shard,
                gathered=_compute_copies(b, dp, layers, block, root),
                grads=4 * shard,
                optimizer=8 * shard,
                activations=activations,
                logits=logits,
                pp_rank=r,
            )
        if r == 0 or estimate.total > worst.total:
            worst = estimate
    return worst
